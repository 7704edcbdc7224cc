"""What :class:`~smartpole.drivers.mcu.client.McuClient` returns: typed, in physical units.

The wire carries integers (0.01°, µA, 0.01 °C, mV, bit masks); these classes carry what a
caller means (degrees, mA, °C, V, sets of channels) and keep the raw numbers where they
are identities (CRCs, boot ids, event ids, MCU uptime).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from smartpole.drivers.mcu.codes import RELAY_COUNT, EventKind, LevelSource, Photocell, StatusFlag
from smartpole.drivers.mcu.stats import LinkStats

Args = Mapping[str, int | bytes]


def _int(args: Args, name: str) -> int:
    value = args[name]
    assert isinstance(value, int), f"{name} is not an integer"
    return value


def channels_of(mask: int) -> frozenset[int]:
    """The channels (1..8) whose bit is set in a relay mask (bit 0 = channel 1)."""
    return frozenset(bit + 1 for bit in range(RELAY_COUNT) if mask >> bit & 1)


@dataclass(frozen=True)
class McuIdentity:
    """Who the client is talking to, as found by the last connect."""

    build: str
    version: int
    boot_id: int
    resumed: bool  # the MCU already held our configuration: no output was touched
    config_crc: int
    window: int


@dataclass(frozen=True)
class McuStatus:
    """``status`` (answer to ``heartbeat`` and ``clear_trip``)."""

    configured: bool
    fallback: bool
    clock_valid: bool
    tripped: bool
    config_crc: int
    boot_id: int
    uptime_ms: int
    last_event: int
    level: int  # %
    relays: int  # bit 0 = channel 1

    @property
    def relays_on(self) -> frozenset[int]:
        return channels_of(self.relays)

    @classmethod
    def from_args(cls, args: Args) -> McuStatus:
        flags = StatusFlag(_int(args, "flags") & 0x0F)
        return cls(
            configured=StatusFlag.CONFIGURED in flags,
            fallback=StatusFlag.FALLBACK in flags,
            clock_valid=StatusFlag.CLOCK_VALID in flags,
            tripped=StatusFlag.TRIPPED in flags,
            config_crc=_int(args, "config_crc"),
            boot_id=_int(args, "boot_id"),
            uptime_ms=_int(args, "uptime_ms"),
            last_event=_int(args, "last_event"),
            level=_int(args, "level"),
            relays=_int(args, "relays"),
        )


@dataclass(frozen=True)
class RelayState:
    """``relay_state``: every relay output, and whether a leakage trip holds relays off."""

    relays: int
    tripped: bool

    @property
    def relays_on(self) -> frozenset[int]:
        return channels_of(self.relays)

    def is_on(self, channel: int) -> bool:
        return channel in self.relays_on

    @classmethod
    def from_args(cls, args: Args) -> RelayState:
        return cls(relays=_int(args, "relays"), tripped=bool(_int(args, "tripped")))


@dataclass(frozen=True)
class LevelState:
    """``level_state``: the lamp level now (%) and who decided it."""

    level: int
    source: LevelSource

    @classmethod
    def from_args(cls, args: Args) -> LevelState:
        return cls(level=_int(args, "level"), source=LevelSource(_int(args, "source")))


@dataclass(frozen=True)
class McuInputs:
    """``inputs`` in physical units."""

    door_open: bool
    water: bool
    photocell: Photocell
    tilt_x_deg: float
    tilt_y_deg: float
    leakage_ma: float
    temperature_c: float
    supply_v: float
    uptime_ms: int

    @property
    def photocell_dark(self) -> bool | None:
        """True dark, False light, None when no photocell is fitted."""
        if self.photocell is Photocell.NOT_FITTED:
            return None
        return self.photocell is Photocell.DARK

    @classmethod
    def from_args(cls, args: Args) -> McuInputs:
        return cls(
            door_open=bool(_int(args, "door")),
            water=bool(_int(args, "water")),
            photocell=Photocell(_int(args, "photocell")),
            tilt_x_deg=_int(args, "tilt_x") / 100,
            tilt_y_deg=_int(args, "tilt_y") / 100,
            leakage_ma=_int(args, "leakage_ua") / 1000,
            temperature_c=_int(args, "temp_cdeg") / 100,
            supply_v=_int(args, "supply_mv") / 1000,
            uptime_ms=_int(args, "uptime_ms"),
        )


@dataclass(frozen=True)
class McuEvent:
    """One event of the MCU's ring, with the MCU's own timestamps: ``uptime_ms`` since its
    boot and ``unix_time`` by its clock (None while the MCU's clock was not set)."""

    boot_id: int
    id: int
    kind: EventKind | int  # an int for a kind this host does not know
    value: int
    uptime_ms: int
    unix_time: int | None
    pushed: bool  # arrived as a push (tag 0) rather than through get_event

    @classmethod
    def from_args(cls, boot_id: int, args: Args, *, pushed: bool) -> McuEvent:
        raw_kind = _int(args, "kind")
        kind: EventKind | int
        try:
            kind = EventKind(raw_kind)
        except ValueError:
            kind = raw_kind
        unix_time = _int(args, "unix_time")
        return cls(
            boot_id=boot_id,
            id=_int(args, "id"),
            kind=kind,
            value=_int(args, "value"),
            uptime_ms=_int(args, "uptime_ms"),
            unix_time=unix_time or None,
            pushed=pushed,
        )


@dataclass(frozen=True)
class McuStats:
    """The MCU's own counters (``get_stats``)."""

    rx_frames: int
    rx_errors: int
    naks: int
    bad_messages: int
    events_lost: int

    @classmethod
    def from_args(cls, args: Args) -> McuStats:
        return cls(**{name: _int(args, name) for name in cls.__dataclass_fields__})


@dataclass
class McuClientStats:
    """The client's counters over its life, with a snapshot of the link's
    (:attr:`McuClient.stats` hands out snapshots)."""

    link: LinkStats = field(default_factory=LinkStats)
    connects: int = 0  # connect sequences that completed
    resumes: int = 0  # of which the MCU already held our configuration
    reconfigures: int = 0  # of which config_reset + config + finalize_config were sent
    connect_failures: int = 0  # connect attempts that failed, whatever the reason
    version_refusals: int = 0  # dictionaries refused for an unknown protocol version
    dictionary_refusals: int = 0  # dictionaries refused for missing / changed formats
    resets_detected: int = 0  # boot_id changes and sequence resyncs while connected
    reconnects: int = 0  # successful connects after the first (its owner's, after a reset)
    requests: int = 0  # request methods called
    re_requests: int = 0  # requests sent again (with a new tag) after no answer in time
    command_errors: int = 0  # requests the MCU answered with ``error``
    mcu_errors: int = 0  # ``error`` messages with tag 0 (unknown / malformed / config)
    events_delivered: int = 0
    events_duplicate: int = 0  # events seen twice (push and get_event) and dropped
    events_lost: int = 0  # event ids the MCU's ring dropped before the host saw them
