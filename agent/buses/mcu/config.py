"""The ``pole-mcu`` entry of ``buses:``: the cabinet MCU's watchdog, fallback and safety
limits, and the configuration the MCU is given from them.

These settings become the MCU's configuration (firmware-bridge/PROTOCOL.md section 4). The
MCU keeps applying them when the agent is dead, so they are the pole's last line of safety:
a fallback level and schedule for the light, a default for each relay, and a leakage trip
that cuts relays in hardware time. The agent checks the MCU holds exactly this
configuration (by its CRC) every time it connects.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from smartpole.agent.config.buses import Addressing, Baudrate, PointKinds, SerialBusConfig
from smartpole.drivers.mcu.config import McuConfig, RelayConfig, ScheduleStep
from smartpole.drivers.mcu.profile import point_kinds

RelayName = Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_]*$", max_length=32)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class McuRelay(_Strict):
    """One relay channel of the MCU, named as a point of the MCU device (``mcu.camera``)."""

    channel: int = Field(ge=1, le=8)
    default_on: bool = Field(
        True, description="state when the agent is silent (its lease ended or it died)"
    )
    lease_s: float = Field(
        0.0,
        ge=0,
        le=86400,
        description="the agent's setting holds this long unless renewed; 0: until the agent dies",
    )


class McuScheduleStep(_Strict):
    at: str = Field(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$", description="local time HH:MM")
    level: int = Field(ge=0, le=100)

    @property
    def minute(self) -> int:
        hours, minutes = self.at.split(":")
        return int(hours) * 60 + int(minutes)


class McuSettings(_Strict):
    """The MCU-specific keys of a ``pole-mcu`` bus."""

    heartbeat_s: float = Field(1.0, ge=0.05, le=60, description="how often the agent says alive")
    fallback_after_s: float = Field(
        10.0, ge=0.1, le=600, description="the MCU takes over after this long without heartbeat"
    )
    fallback_level: int = Field(
        100, ge=0, le=100, description="light level when no schedule or photocell applies"
    )
    level_lease_s: float = Field(
        300.0, ge=0.1, le=86400, description="how long a dimming level set by the agent holds"
    )
    schedule: list[McuScheduleStep] = Field(
        default_factory=list,
        max_length=8,
        description="the MCU's own light schedule when the agent is dead (needs its clock)",
    )
    relays: dict[RelayName, McuRelay] = Field(default_factory=dict, max_length=8)
    leakage_trip_ma: float = Field(
        30.0, ge=0, le=1000, description="the MCU cuts leakage_cuts at this current; 0: off"
    )
    leakage_cuts: list[RelayName] = Field(
        default_factory=list, description="relays the MCU opens itself on a leakage trip"
    )
    tilt_limit_deg: float = Field(5.0, ge=0, le=90, description="tilt event threshold; 0: off")
    impact_limit_g: float = Field(0.0, ge=0, le=16, description="impact event threshold; 0: off")

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.fallback_after_s < 2 * self.heartbeat_s:
            raise ValueError(
                f"fallback_after_s ({self.fallback_after_s}) must be at least twice "
                f"heartbeat_s ({self.heartbeat_s}), or one late heartbeat trips the fallback"
            )
        channels: dict[int, str] = {}
        for name, relay in self.relays.items():
            other = channels.setdefault(relay.channel, name)
            if other != name:
                raise ValueError(f"relays {other} and {name} both use channel {relay.channel}")
        unknown = [name for name in self.leakage_cuts if name not in self.relays]
        if unknown:
            raise ValueError(f"leakage_cuts names relays not in relays: {', '.join(unknown)}")
        minutes = [step.minute for step in self.schedule]
        if len(set(minutes)) != len(minutes):
            raise ValueError("two schedule steps at the same time")
        return self


class PoleMcuBus(SerialBusConfig, McuSettings):
    """The UART to the cabinet MCU (firmware-bridge/PROTOCOL.md); one MCU per bus."""

    addressing: ClassVar = Addressing(None, "the MCU")
    profile_protocol: ClassVar = "pole-mcu"

    type: Literal["pole-mcu"]
    baudrate: Baudrate = 115200
    timeout_s: float = Field(
        1.0, gt=0, le=10, description="deadline of one request, its resends included"
    )

    def describe(self) -> str:
        return f"pole MCU bridge {self.settings()}"

    def device_points(self) -> PointKinds:
        return point_kinds(self.relays)


def mcu_config(bus: PoleMcuBus) -> McuConfig:
    """The configuration the MCU must hold for this bus; its CRC is checked at connect."""
    mask = 0
    for name in bus.leakage_cuts:
        mask |= 1 << (bus.relays[name].channel - 1)
    return McuConfig(
        relays=[
            RelayConfig(
                channel=relay.channel,
                default_on=relay.default_on,
                max_duration_ms=round(relay.lease_s * 1000),
            )
            for relay in sorted(bus.relays.values(), key=lambda r: r.channel)
        ],
        heartbeat_ms=round(bus.fallback_after_s * 1000),
        fallback_level=bus.fallback_level,
        lease_ms=round(bus.level_lease_s * 1000),
        schedule=[ScheduleStep(minute=step.minute, level=step.level) for step in bus.schedule],
        leakage_trip_ua=round(bus.leakage_trip_ma * 1000),
        leakage_relay_mask=mask,
        tilt_cdeg=round(bus.tilt_limit_deg * 100),
        impact_mg=round(bus.impact_limit_g * 1000),
    )
