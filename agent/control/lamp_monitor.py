"""Lamp faults seen from the meter, and each lamp's energy and burning hours.

The lamp controller reports its own fault bits; this module judges the lamp from what the
controller *measures* against what the lighting controller last *commanded*, the way TALQ's
LampMonitorFunction and ElectricalMeterFunction describe it. It listens to the point table
(``on_reading`` has a point-table listener's signature) and reports each derived condition
as a true/false reading of the source ``"<lamp>.monitor"`` through ``emit``, which has the
signature of ``AlarmManager.observe``; ``alarm_definitions`` gives the matching alarm kinds.

This module holds the alarm definitions and the ``LampMonitor`` facade that routes readings
(its settings are the config's ``lighting.monitor``, in ``config/lamp_monitor.py``); the
work is split by job:

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

import structlog

from smartpole.agent.config.alarms import AlarmDefinition
from smartpole.agent.config.lamp_monitor import LampMonitorSettings
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
    "alarm_definitions",
]

log = structlog.get_logger("smartpole.lamp_monitor")

# The lamp controller's points (configs/profiles/lamp-controller.yaml).
ACTIVE_POWER = "active_power"
POWER_FACTOR = "power_factor"
ENERGY = "energy"
SUPPLY_VOLTAGE = "supply_voltage"
SUPPLY_LOSS = "supply_loss"


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
