"""The ``lighting.monitor`` section: what a healthy lamp draws, and how sure to be before a
derived lamp fault is raised (``control/lamp_monitor.py`` judges the lamps)."""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from smartpole.agent.config.alarms import Severity

MonitorKind = Literal[
    "power_out_of_range", "low_power_factor", "day_burning", "cycling", "lamp_not_lighting"
]
PositiveWatts = Annotated[float, Field(gt=0, le=10_000)]


class LampMonitorSettings(BaseModel):
    """The lamp monitor's part of the pole config (``lighting.monitor``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)

    rated_power_w: PositiveWatts = Field(
        100.0, description="lamp power at 100 %, for every lamp without its own entry"
    )
    lamp_rated_power_w: dict[str, PositiveWatts] = Field(
        default_factory=dict, description="lamp name -> its rated power, where it differs"
    )
    tolerance: float = Field(
        0.2, gt=0, lt=1, description="relative band around rated × level/100 that is in range"
    )
    idle_power_w: float = Field(
        3.0, ge=0, le=100, description="at or below this the lamp is dark (controller standby)"
    )
    min_power_factor: float = Field(0.85, gt=0, le=1)
    power_factor_min_level: int = Field(
        50, ge=1, le=100, description="PF is judged only at this level (%) or above"
    )
    settle_s: float = Field(
        60.0, ge=0, le=3600, description="a level must hold this long before it is judged"
    )
    max_switches: int = Field(
        4, ge=1, le=1000, description="on/off changes allowed within cycling_window_s"
    )
    cycling_window_s: float = Field(1800.0, gt=0, le=86_400)
    min_supply_voltage_v: float | None = Field(
        None,
        ge=0,
        le=500,
        description="below this the supply counts as lost (besides the supply_loss bit)",
    )
    confirm_s: float = Field(
        60.0, ge=0, le=86_400, description="debounce of the alarms alarm_definitions() makes"
    )
    severities: dict[MonitorKind, Severity] = Field(
        default_factory=dict, description="kind -> severity, where the default does not fit"
    )
    max_gap_s: float = Field(
        120.0, gt=0, le=86_400, description="longer intervals between readings are not counted"
    )
    max_power_ratio: float = Field(
        2.0, ge=1, le=100, description="counter steps above this × rated power are glitches"
    )
    counter_resolution_kwh: float = Field(
        0.01, ge=0, le=10, description="the energy counter's step (quantisation allowance)"
    )
    persist_s: float = Field(300.0, gt=0, le=86_400, description="longest time between writes")

    @model_validator(mode="after")
    def _idle_below_lamps(self) -> Self:
        ratings = [self.rated_power_w, *self.lamp_rated_power_w.values()]
        if self.idle_power_w >= min(ratings) * (1 - self.tolerance):
            raise ValueError(
                "idle_power_w must be below every lamp's lowest in-range power at 100 %"
            )
        return self

    def rated_w(self, lamp: str) -> float:
        return self.lamp_rated_power_w.get(lamp, self.rated_power_w)

    def problems(self, lamps: list[str]) -> list[str]:
        """Lamp names in ``lamp_rated_power_w`` that are not lamps of this pole."""
        return [
            f"lamp_rated_power_w names {name!r}, which is not a lamp of this pole"
            for name in self.lamp_rated_power_w
            if name not in lamps
        ]
