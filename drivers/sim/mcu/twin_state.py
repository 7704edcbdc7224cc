"""The MCU twin's state pieces: inputs, outputs, configuration, clock, event ring, policy.

Split from ``twin`` so the protocol handling there reads as the spec's sections 2-6, and
the plain data and pure rules here (section 6 'fallback policy', section 7 defaults) can be
tested and reused on their own. Integers only, as on the MCU: no floats anywhere, so the
C implementation can match every value exactly.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from smartpole.drivers.mcu.codes import (
    BOOT_FALLBACK_LEVEL,
    BOOT_IMPACT_MG,
    BOOT_TILT_CDEG,
    BOOT_TRIP_MASK,
    BOOT_TRIP_UA,
    EVENT_RING,
    MINUTES_PER_DAY,
    RELAY_COUNT,
    LevelSource,
    Photocell,
)

U32_MASK = 0xFFFFFFFF


@dataclass
class Inputs:
    """What the MCU's sensors read now; the emulator or a test sets these freely.

    ``accel_peak_mg`` is the acceleration peak since the last tick: each tick consumes it
    (resets it to 0), as the MCU's accelerometer peak-hold register would be. Values must
    fit their wire types in ``inputs`` (``%c`` for door/water/photocell, ``%i`` for the
    tilts and the temperature, ``%u`` otherwise), as the MCU's registers would.
    """

    door: int = 0
    water: int = 0
    photocell: int = Photocell.NOT_FITTED
    tilt_x: int = 0
    tilt_y: int = 0
    leakage_ua: int = 0
    temp_cdeg: int = 0
    supply_mv: int = 0
    accel_peak_mg: int = 0


@dataclass(frozen=True)
class Outputs:
    """A snapshot of what the MCU drives and its safety state."""

    level: int
    relays: int
    source: LevelSource
    fallback: bool
    tripped: bool
    configured: bool
    config_crc: int


@dataclass(frozen=True)
class Stats:
    """The counters ``get_stats`` reports."""

    rx_frames: int
    rx_errors: int
    naks: int
    bad_messages: int
    events_lost: int


@dataclass
class RelayConfig:
    """One relay's ``config_relay``: its default state and lease length (0 = no limit)."""

    default_on: bool = True
    max_duration_ms: int = 0


@dataclass
class McuConfig:
    """A whole configuration; ``McuConfig()`` is the boot defaults of section 7.

    ``heartbeat_ms`` and ``lease_ms`` of 0 mean no heartbeat watch and a level lease that
    holds until the heartbeat lapses: what an unconfigured MCU (or one configured without
    ``config_fallback``) does.
    """

    relays: list[RelayConfig] = field(
        default_factory=lambda: [RelayConfig() for _ in range(RELAY_COUNT)]
    )
    heartbeat_ms: int = 0
    fallback_level: int = BOOT_FALLBACK_LEVEL
    lease_ms: int = 0
    schedule: dict[int, tuple[int, int]] = field(default_factory=dict)
    trip_ua: int = BOOT_TRIP_UA
    trip_mask: int = BOOT_TRIP_MASK
    tilt_cdeg: int = BOOT_TILT_CDEG
    impact_mg: int = BOOT_IMPACT_MG

    def copy(self) -> McuConfig:
        """An independent copy (the staged configuration becomes the active one)."""
        return McuConfig(
            relays=[RelayConfig(r.default_on, r.max_duration_ms) for r in self.relays],
            heartbeat_ms=self.heartbeat_ms,
            fallback_level=self.fallback_level,
            lease_ms=self.lease_ms,
            schedule=dict(self.schedule),
            trip_ua=self.trip_ua,
            trip_mask=self.trip_mask,
            tilt_cdeg=self.tilt_cdeg,
            impact_mg=self.impact_mg,
        )

    @property
    def default_relays(self) -> int:
        """The relay mask of every relay at its ``default_on``."""
        return sum(1 << i for i, relay in enumerate(self.relays) if relay.default_on)


def schedule_level(schedule: dict[int, tuple[int, int]], minute: int) -> int | None:
    """The level of the last step at or before ``minute``, wrapping round midnight.

    Steps are ordered by minute, then by index (a later index wins a tie); ``None`` when
    there is no step at all.
    """
    if not schedule:
        return None
    steps = sorted((step_minute, index, level) for index, (step_minute, level) in schedule.items())
    current = steps[-1]  # before the first step of the day: yesterday's last step
    for step in steps:
        if step[0] <= minute:
            current = step
    return current[2]


@dataclass
class Clock:
    """The wall clock the host sets with ``heartbeat`` (unix seconds at a millisecond)."""

    valid: bool = False
    unix_at_set: int = 0
    set_at_ms: int = 0
    utc_offset_min: int = 0

    def set(self, unix_time: int, utc_offset_min: int, now_ms: int) -> None:
        """Take a heartbeat's time; ``unix_time`` 0 means the host does not know it."""
        self.valid = unix_time != 0
        self.unix_at_set = unix_time
        self.set_at_ms = now_ms
        self.utc_offset_min = utc_offset_min

    def unix_now(self, now_ms: int) -> int:
        """Unix seconds now, or 0 while the clock is not valid."""
        if not self.valid:
            return 0
        return (self.unix_at_set + (now_ms - self.set_at_ms) // 1000) & U32_MASK

    def local_minute(self, now_ms: int) -> int:
        """The local minute of the day (0..1439)."""
        local = self.unix_now(now_ms) + self.utc_offset_min * 60
        return (local // 60) % MINUTES_PER_DAY


def fallback_policy(
    config: McuConfig, clock: Clock, photocell: int, now_ms: int
) -> tuple[int, LevelSource]:
    """Section 6's fallback level: schedule, else photocell if fitted, else fallback level."""
    if clock.valid:
        level = schedule_level(config.schedule, clock.local_minute(now_ms))
        if level is not None:
            return level, LevelSource.SCHEDULE
    if photocell == Photocell.DARK:
        return config.fallback_level, LevelSource.PHOTOCELL
    if photocell == Photocell.LIGHT:
        return 0, LevelSource.PHOTOCELL
    return config.fallback_level, LevelSource.FALLBACK_LEVEL


@dataclass(frozen=True)
class Event:
    """One entry of the event ring."""

    id: int
    kind: int
    value: int
    uptime_ms: int
    unix_time: int


class EventRing:
    """The last ``capacity`` events; ids count from 1 at boot, the oldest is overwritten."""

    def __init__(self, capacity: int = EVENT_RING) -> None:
        self._events: deque[Event] = deque()
        self.capacity = capacity
        self.last_id = 0
        self.lost = 0

    def add(self, kind: int, value: int, uptime_ms: int, unix_time: int) -> Event:
        """Record an event, dropping (and counting) the oldest when the ring is full."""
        self.last_id = (self.last_id + 1) & U32_MASK
        event = Event(self.last_id, kind, value, uptime_ms, unix_time)
        if len(self._events) == self.capacity:
            self._events.popleft()
            self.lost += 1
        self._events.append(event)
        return event

    def after(self, after_id: int) -> Event | None:
        """The oldest held event with an id greater than ``after_id``."""
        for event in self._events:
            if event.id > after_id:
                return event
        return None

    def __len__(self) -> int:
        return len(self._events)
