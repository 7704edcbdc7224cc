"""The configuration the host gives the MCU (PROTOCOL.md sections 4 and 7).

The MCU applies it on its own when the host is dead, so it is validated here against the
spec's limits before anything is sent: a value the MCU would refuse with ``bad_argument``
is a clear :class:`McuConfigError` at construction instead of a ``crc_mismatch`` later.

``messages()`` is the canonical order of the ``config_*`` messages (relays by channel,
fallback, schedule steps by minute, leakage, alarms); the CRC the MCU computes, and the one
``crc()`` predicts, is over exactly these messages encoded in this order, so two equal
configurations always have the same CRC whatever order their parts were listed in.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass

from smartpole.drivers.errors import CodecError
from smartpole.drivers.mcu.codes import (
    HEARTBEAT_MS_RANGE,
    LEASE_MS_RANGE,
    MAX_DURATION_MS_RANGE,
    MAX_LEVEL,
    MINUTES_PER_DAY,
    RELAY_COUNT,
    SCHEDULE_STEPS,
)
from smartpole.drivers.mcu.errors import McuConfigError
from smartpole.drivers.mcu.msgproto import U32_MAX, Dictionary

ConfigMessage = tuple[str, dict[str, int]]


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise McuConfigError(message)


def _check_range(name: str, value: int, low: int, high: int) -> None:
    _check(
        isinstance(value, int) and not isinstance(value, bool) and low <= value <= high,
        f"{name} must be an integer in {low}..{high}, got {value!r}",
    )


@dataclass(frozen=True)
class RelayConfig:
    """One relay channel: its state when the host is silent, and its lease (0: until the
    heartbeat lapses)."""

    channel: int
    default_on: bool = True
    max_duration_ms: int = 0

    def __post_init__(self) -> None:
        _check_range("relay channel", self.channel, 1, RELAY_COUNT)
        _check_range(
            f"relay {self.channel} max_duration_ms", self.max_duration_ms, *MAX_DURATION_MS_RANGE
        )


@dataclass(frozen=True)
class ScheduleStep:
    """From ``minute`` of the local day on, the fallback level is ``level`` (%)."""

    minute: int
    level: int

    def __post_init__(self) -> None:
        _check_range("schedule minute", self.minute, 0, MINUTES_PER_DAY - 1)
        _check_range("schedule level", self.level, 0, MAX_LEVEL)


@dataclass(frozen=True)
class McuConfig:
    """Everything ``config_*`` sets. Defaults are the MCU's boot defaults (section 7)
    where it has one, and sensible agent values for the heartbeat and level lease."""

    relays: Sequence[RelayConfig] = ()
    heartbeat_ms: int = 10_000
    fallback_level: int = 100
    lease_ms: int = 300_000
    schedule: Sequence[ScheduleStep] = ()
    leakage_trip_ua: int = 30_000
    leakage_relay_mask: int = 0xFF
    tilt_cdeg: int = 500
    impact_mg: int = 0

    def __post_init__(self) -> None:
        for relay in self.relays:
            _check(isinstance(relay, RelayConfig), f"relays must be RelayConfig, got {relay!r}")
        for step in self.schedule:
            _check(isinstance(step, ScheduleStep), f"schedule must be ScheduleStep, got {step!r}")
        # Lists given by callers become sorted tuples, so equal configurations compare
        # (and hash, and CRC) equal whatever order their parts were listed in.
        relays = tuple(sorted(self.relays, key=lambda r: r.channel))
        schedule = tuple(sorted(self.schedule, key=lambda s: s.minute))
        object.__setattr__(self, "relays", relays)
        object.__setattr__(self, "schedule", schedule)
        channels = [relay.channel for relay in relays]
        duplicated = sorted({c for c in channels if channels.count(c) > 1})
        _check(not duplicated, f"relay channel(s) {duplicated} configured twice")
        _check_range("heartbeat_ms", self.heartbeat_ms, *HEARTBEAT_MS_RANGE)
        _check_range("fallback_level", self.fallback_level, 0, MAX_LEVEL)
        _check_range("lease_ms", self.lease_ms, *LEASE_MS_RANGE)
        _check(
            len(schedule) <= SCHEDULE_STEPS,
            f"at most {SCHEDULE_STEPS} schedule steps, got {len(schedule)}",
        )
        minutes = [step.minute for step in schedule]
        _check(len(set(minutes)) == len(minutes), f"two schedule steps at one minute: {minutes}")
        _check_range("leakage_trip_ua", self.leakage_trip_ua, 0, U32_MAX)
        _check_range("leakage_relay_mask", self.leakage_relay_mask, 0, 0xFF)
        _check_range("tilt_cdeg", self.tilt_cdeg, 0, U32_MAX)
        _check_range("impact_mg", self.impact_mg, 0, U32_MAX)

    def messages(self) -> list[ConfigMessage]:
        """The ``config_*`` messages, in the order they are sent and CRC'd."""
        out: list[ConfigMessage] = [
            (
                "config_relay",
                {
                    "channel": relay.channel,
                    "default_on": int(relay.default_on),
                    "max_duration_ms": relay.max_duration_ms,
                },
            )
            for relay in self.relays
        ]
        out.append(
            (
                "config_fallback",
                {
                    "heartbeat_ms": self.heartbeat_ms,
                    "level": self.fallback_level,
                    "lease_ms": self.lease_ms,
                },
            )
        )
        out += [
            ("config_schedule", {"index": index, "minute": step.minute, "level": step.level})
            for index, step in enumerate(self.schedule)
        ]
        out.append(
            (
                "config_leakage",
                {"trip_ua": self.leakage_trip_ua, "relay_mask": self.leakage_relay_mask},
            )
        )
        out.append(("config_alarms", {"tilt_cdeg": self.tilt_cdeg, "impact_mg": self.impact_mg}))
        return out

    def encoded(self, dictionary: Dictionary) -> list[bytes]:
        """Each message of :meth:`messages` encoded with ``dictionary``'s ids."""
        try:
            return [dictionary.encode(name, **args) for name, args in self.messages()]
        except CodecError as exc:
            raise McuConfigError(f"cannot encode the configuration: {exc}") from exc

    def crc(self, dictionary: Dictionary) -> int:
        """CRC-32 (zlib) of the encoded messages, concatenated in order: what the MCU
        reports in ``config_state.crc`` once it holds this configuration."""
        return zlib.crc32(b"".join(self.encoded(dictionary)))
