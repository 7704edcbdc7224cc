"""Lamp faults seen from the meter, and each lamp's energy and burning hours.

The lamp controller reports its own fault bits; this module judges the lamp from what the
controller *measures* against what the lighting controller last *commanded*, the way TALQ's
LampMonitorFunction and ElectricalMeterFunction describe it. It listens to the point table
(``on_reading`` has a point-table listener's signature) and reports each derived condition
as a true/false reading of the source ``"<lamp>.monitor"`` through ``emit``, which has the
signature of ``AlarmManager.observe``; ``alarm_definitions`` gives the matching alarm kinds.

This module holds the settings model (``lighting.monitor``), the alarm definitions and the
``LampMonitor`` facade that routes readings; the work is split by job:

* ``lamp_faults``: the condition kinds and how each is judged (``FaultJudge``);
* ``lamp_accounts``: energy and burning hours and their state file (``LampAccounts``).

Input readings that are not ``good``, or whose value is not a finite, non-negative number,
never raise or clear anything and report nothing; a bad power reading only ends the
interval being counted.

Times: condition timing and integration use the readings' ``at`` (wall clock, like the
alarm manager); a clock that steps backwards restarts timers instead of stretching them.
``clock`` (wall clock) stamps ``since`` and paces the writes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Self

import structlog
from pydantic import BaseModel, ConfigDict, Field, model_validator

from smartpole.agent.control.alarm_types import AlarmDefinition, Severity
from smartpole.agent.control.lamp_accounts import STORE_FILE, LampAccounts
from smartpole.agent.control.lamp_faults import (
    CYCLING,
    DAY_BURNING,
    DEFAULT_SEVERITY,
    DESCRIPTION,
    GOOD,
    KINDS,
    LAMP_NOT_LIGHTING,
    LOW_POWER_FACTOR,
    POWER_OUT_OF_RANGE,
    SOURCE_SUFFIX,
    Emit,
    FaultJudge,
    LampState,
    MonitorKind,
    valid,
)

__all__ = [
    "CYCLING",
    "DAY_BURNING",
    "KINDS",
    "LAMP_NOT_LIGHTING",
    "LOW_POWER_FACTOR",
    "POWER_OUT_OF_RANGE",
    "SOURCE_SUFFIX",
    "STORE_FILE",
    "Emit",
    "LampMonitor",
    "LampMonitorSettings",
    "MonitorKind",
    "alarm_definitions",
]

log = structlog.get_logger("smartpole.lamp_monitor")

# The lamp controller's points (configs/profiles/lamp-controller.yaml).
ACTIVE_POWER = "active_power"
POWER_FACTOR = "power_factor"
ENERGY = "energy"
SUPPLY_VOLTAGE = "supply_voltage"
SUPPLY_LOSS = "supply_loss"

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


def alarm_definitions(settings: LampMonitorSettings) -> list[AlarmDefinition]:
    """One digital alarm per monitor kind, raised while the monitor reports ``True``."""
    return [
        AlarmDefinition(
            kind=kind,
            severity=settings.severities.get(kind, DEFAULT_SEVERITY[kind]),
            raise_when=True,
            debounce_s=settings.confirm_s,
            description=DESCRIPTION[kind],
        )
        for kind in KINDS
    ]


class LampMonitor:
    """Derived lamp conditions for the alarm manager, and per-lamp accounting.

    Owned by the control process' event loop; ``on_reading`` is a point-table listener.
    """

    def __init__(
        self,
        lamps: list[str],
        expected: Callable[[str], int | None],
        settings: LampMonitorSettings,
        store_path: Path,
        clock: Callable[[], float],
        *,
        emit: Emit | None = None,
    ) -> None:
        self.lamps = list(dict.fromkeys(lamps))
        self.settings = settings
        self.store_path = store_path
        self._state = {lamp: LampState() for lamp in self.lamps}
        self._judge = FaultJudge(expected, settings, emit)
        self._books = LampAccounts(self.lamps, settings, store_path, clock)
        for problem in settings.problems(self.lamps):
            log.warning("lamp_monitor_config", problem=problem)

    def set_emit(self, emit: Emit) -> None:
        """Where conditions go, when that exists only after the monitor (the alarm manager)."""
        self._judge.emit = emit

    def on_reading(self, device: str, point: str, value: object, quality: str, at: float) -> None:
        state = self._state.get(device)
        if state is None:
            return
        self._judge.follow_command(device, state, at)
        if point == ACTIVE_POWER:
            self._on_power(device, state, value, quality, at)
        elif point == POWER_FACTOR:
            self._judge.on_power_factor(device, state, value, quality, at)
        elif point == ENERGY:
            reading = valid(value, quality)
            if reading is not None:
                self._books.on_energy(device, reading, at)
        elif point == SUPPLY_VOLTAGE:
            self._judge.on_supply_voltage(state, value, quality)
        elif point == SUPPLY_LOSS and quality == GOOD and isinstance(value, bool | int):
            state.supply_loss = bool(value)

    def _on_power(
        self, lamp: str, state: LampState, value: object, quality: str, at: float
    ) -> None:
        power = valid(value, quality)
        if power is None:
            state.power_w = None  # an interval we did not see is not counted
            return
        previous, since = state.power_w, state.power_at
        state.power_w, state.power_at = power, at
        if previous is not None:
            self._books.integrate(lamp, previous, at - since)
        self._judge.on_power(lamp, state, power, at)

    def accounts(self) -> dict[str, dict[str, float]]:
        """Per lamp: energy (kWh) and burning hours accumulated since ``since`` (epoch s)."""
        return self._books.totals()

    def flush(self) -> bool:
        """Write the accounts now if anything changed; False when the write failed."""
        return self._books.flush()

    @property
    def write_failures(self) -> int:
        return self._books.write_failures

    def close(self) -> None:
        self.flush()
