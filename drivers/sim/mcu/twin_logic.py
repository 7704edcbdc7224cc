"""The MCU twin's pole logic: outputs, leases, trip latch, heartbeat watch, events.

This is PROTOCOL.md section 6 (and the state effects of sections 4 and 5) without any
framing or message encoding: ``McuTwin`` in ``twin`` decodes a command, checks its
arguments and calls in here; the tick runs here. Events are handed to ``on_event`` as they
happen, so the protocol side can push them in the order they occurred.
"""

from __future__ import annotations

from collections.abc import Callable

from smartpole.drivers.mcu.codes import LEVEL_CHANNEL, RELAY_COUNT, EventKind, LevelSource
from smartpole.drivers.mcu.msgproto import I32_MAX, I32_MIN
from smartpole.drivers.sim.mcu.twin_state import (
    U32_MASK,
    Clock,
    Event,
    EventRing,
    Inputs,
    McuConfig,
    fallback_policy,
)

_ALL_RELAYS = (1 << RELAY_COUNT) - 1


class PoleLogic:
    """What the MCU firmware keeps between frames, and what it does on its own.

    ``now_ms`` is set by the caller before each entry point (the MCU's millisecond clock
    since boot). Lease deadlines are absolute; a deadline of ``None`` holds until the
    heartbeat lapses.
    """

    def __init__(self, on_event: Callable[[Event], None]) -> None:
        self._on_event = on_event
        self.now_ms = 0
        self.inputs = Inputs()
        self.active = McuConfig()
        self.staged = McuConfig()
        self.configured = False
        self.crc = 0
        self.clock = Clock()
        self.fallback = False
        self.last_heartbeat_ms = 0
        # The heartbeat watch as a test sees it: the longest gap between two heartbeats
        # of a configured MCU, and how often it fell back (a fallback may end before anyone
        # looks at the outputs).
        self.max_heartbeat_gap_ms = 0
        self.fallbacks = 0
        self.relays = self.active.default_relays
        self.relay_leases: dict[int, int | None] = {}  # channel index -> deadline
        self.level, self.source = self.policy()
        self.level_leased = False
        self.level_deadline: int | None = None
        self.tripped = False
        self.trip_cut = 0
        self._door = self.inputs.door
        self._water = self.inputs.water
        self._tilt_armed = True
        self.ring = EventRing()

    # --- shared ----------------------------------------------------------------------------

    @property
    def uptime_ms(self) -> int:
        return self.now_ms & U32_MASK

    def event(self, kind: EventKind, value: int) -> None:
        """Record an event in the ring and hand it on for the push."""
        value = max(I32_MIN, min(I32_MAX, value))
        unix_time = self.clock.unix_now(self.now_ms)
        self._on_event(self.ring.add(kind, value, self.uptime_ms, unix_time))

    def policy(self) -> tuple[int, LevelSource]:
        """The level the MCU chooses on its own now."""
        return fallback_policy(self.active, self.clock, self.inputs.photocell, self.now_ms)

    def _set_relay_bit(self, index: int, on: bool) -> None:
        self.relays = (self.relays & ~(1 << index)) | ((1 << index) if on else 0)

    # --- effects of commands ---------------------------------------------------------------

    def config_reset(self) -> None:
        """Drop the configuration; outputs, leases, latch and fallback stay as they are."""
        self.configured = False
        self.active = McuConfig()
        self.staged = McuConfig()
        self.crc = 0

    def finalize(self) -> None:
        """Make the staged configuration active and start the heartbeat watch."""
        if not self.configured:
            self.configured = True
            self.active = self.staged.copy()
            self.last_heartbeat_ms = self.now_ms

    def heartbeat(self, unix_time: int, utc_offset_min: int) -> None:
        """The host is alive: set the clock, restart the watch, end a fallback."""
        self.clock.set(unix_time, utc_offset_min, self.now_ms)
        if self.configured:
            gap = self.now_ms - self.last_heartbeat_ms
            self.max_heartbeat_gap_ms = max(self.max_heartbeat_gap_ms, gap)
        self.last_heartbeat_ms = self.now_ms
        if self.fallback:
            self.fallback = False
            self.event(EventKind.FALLBACK_LEFT, 0)

    def set_relay(self, index: int, on: bool) -> None:
        """A host setpoint with its lease; a relay cut by a trip stays off."""
        if self.trip_cut & (1 << index):
            return
        self._set_relay_bit(index, on)
        duration = self.active.relays[index].max_duration_ms
        self.relay_leases[index] = self.now_ms + duration if duration else None

    def set_level(self, level: int) -> None:
        """A host level with its lease."""
        self.level, self.source = level, LevelSource.HOST
        self.level_leased = True
        lease = self.active.lease_ms
        self.level_deadline = self.now_ms + lease if lease else None

    def clear_trip(self) -> bool:
        """Unlatch the trip if the leakage is below the trip level; False if it is not."""
        if not self.tripped:
            return True
        trip_ua = self.active.trip_ua
        if trip_ua and self.inputs.leakage_ua >= trip_ua:
            return False
        defaults = self.active.default_relays
        self.relays = (self.relays & ~self.trip_cut) | (defaults & self.trip_cut)
        self.tripped, self.trip_cut = False, 0
        self.event(EventKind.TRIP_CLEARED, 0)
        return True

    # --- the tick --------------------------------------------------------------------------

    def tick(self) -> None:
        """Section 6's four steps in order, then the level follows the policy if not held."""
        self._tick_inputs()
        self._tick_leakage()
        self._tick_heartbeat()
        self._tick_leases()
        if not self.level_leased:
            self.level, self.source = self.policy()
        self.inputs.accel_peak_mg = 0

    def _tick_inputs(self) -> None:
        i, config = self.inputs, self.active
        door, water = int(i.door != 0), int(i.water != 0)
        if door != self._door:
            self._door = door
            self.event(EventKind.DOOR_OPEN if door else EventKind.DOOR_CLOSED, 0)
        if water != self._water:
            self._water = water
            self.event(EventKind.WATER_DETECTED if water else EventKind.WATER_CLEARED, 0)
        tilt = max(abs(i.tilt_x), abs(i.tilt_y))
        if config.tilt_cdeg:
            if self._tilt_armed and tilt >= config.tilt_cdeg:
                self._tilt_armed = False
                self.event(EventKind.TILT, tilt)
            elif not self._tilt_armed and 2 * tilt < config.tilt_cdeg:
                self._tilt_armed = True
        if config.impact_mg and i.accel_peak_mg >= config.impact_mg:
            self.event(EventKind.IMPACT, i.accel_peak_mg)

    def _tick_leakage(self) -> None:
        trip_ua = self.active.trip_ua
        if self.tripped or not trip_ua or self.inputs.leakage_ua < trip_ua:
            return
        self.tripped = True
        self.trip_cut = self.active.trip_mask & _ALL_RELAYS
        self.relays &= ~self.trip_cut
        for index in range(RELAY_COUNT):
            if self.trip_cut & (1 << index):
                self.relay_leases.pop(index, None)
        self.event(EventKind.LEAKAGE_TRIP, self.inputs.leakage_ua)

    def _tick_heartbeat(self) -> None:
        heartbeat_ms = self.active.heartbeat_ms
        if not self.configured or self.fallback or not heartbeat_ms:
            return
        if self.now_ms - self.last_heartbeat_ms < heartbeat_ms:
            return
        self.fallback = True
        self.fallbacks += 1
        self.relay_leases.clear()
        self.relays = self.active.default_relays & ~self.trip_cut
        self.level_leased, self.level_deadline = False, None
        self.level, self.source = self.policy()
        self.event(EventKind.FALLBACK_ENTERED, 0)

    def _tick_leases(self) -> None:
        for index in sorted(self.relay_leases):
            deadline = self.relay_leases[index]
            if deadline is not None and self.now_ms >= deadline:
                del self.relay_leases[index]
                self._set_relay_bit(index, self.active.relays[index].default_on)
                self.event(EventKind.LEASE_EXPIRED, index + 1)
        deadline = self.level_deadline
        if self.level_leased and deadline is not None and self.now_ms >= deadline:
            self.level_leased, self.level_deadline = False, None
            self.level, self.source = self.policy()
            self.event(EventKind.LEASE_EXPIRED, LEVEL_CHANNEL)
