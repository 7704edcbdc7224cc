"""Judging a lamp from what its controller measures against what it was commanded.

The fault rules live apart from the energy accounting and the settings model: this module
knows the condition kinds and how each is judged, and nothing about files. ``LampMonitor``
feeds it readings and owns one ``LampState`` per lamp.

Conditions (judged on each good ``active_power`` reading, ``low_power_factor`` on each good
``power_factor`` reading):

* ``power_out_of_range``: power outside ``rated × level/100 × (1 ± tolerance)``; a lamp
  commanded to 0 % must stay at or below ``idle_power_w``;
* ``lamp_not_lighting``: commanded on, drawing no more than ``idle_power_w``;
* ``day_burning``: commanded to 0 %, drawing more than ``idle_power_w``;
* ``low_power_factor``: burning at ``power_factor_min_level`` % or more, PF below
  ``min_power_factor`` (drivers' PF falls legitimately when dimmed deep);
* ``cycling``: the lamp went on or off more than ``max_switches`` times within
  ``cycling_window_s`` while its command stayed the same (a failing lamp that restarts).

A condition is judged only once the commanded level has been the same for ``settle_s`` (a
lamp needs time to follow a command) and only where its premise holds: the power factor of
a dark lamp, or lamp failure while it is commanded off, cannot be told. When a condition
cannot be judged it is reported with quality ``uncertain``: the alarm keeps its state (a
dead lamp stays reported through the day) and a debounce in progress starts over. A lost
supply (the controller's ``supply_loss`` bit, or ``supply_voltage`` below
``min_supply_voltage_v`` when set) is not blamed on the lamp.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from smartpole.agent.config.alarms import Severity
from smartpole.agent.config.lamp_monitor import LampMonitorSettings, MonitorKind

POWER_OUT_OF_RANGE: Final = "power_out_of_range"
LOW_POWER_FACTOR: Final = "low_power_factor"
DAY_BURNING: Final = "day_burning"
CYCLING: Final = "cycling"
LAMP_NOT_LIGHTING: Final = "lamp_not_lighting"
KINDS: tuple[MonitorKind, ...] = (
    POWER_OUT_OF_RANGE,
    LOW_POWER_FACTOR,
    DAY_BURNING,
    CYCLING,
    LAMP_NOT_LIGHTING,
)

SOURCE_SUFFIX = ".monitor"

GOOD = "good"
UNCERTAIN = "uncertain"

DEFAULT_SEVERITY: dict[MonitorKind, Severity] = {
    LAMP_NOT_LIGHTING: "major",
    POWER_OUT_OF_RANGE: "minor",
    DAY_BURNING: "minor",
    CYCLING: "minor",
    LOW_POWER_FACTOR: "warning",
}
DESCRIPTION: dict[MonitorKind, str] = {
    LAMP_NOT_LIGHTING: "commanded on but the meter sees no power (lamp failure)",
    POWER_OUT_OF_RANGE: "active power outside the band expected for the commanded level",
    DAY_BURNING: "drawing power although commanded off",
    CYCLING: "the lamp keeps going on and off while its command stays the same",
    LOW_POWER_FACTOR: "power factor below the minimum while burning",
}

Emit = Callable[[str, str, bool, str, float], object]
"""``emit(source, kind, value, quality, at)``: ``AlarmManager.observe`` fits."""


@dataclass
class LampState:
    """What the monitor knows of one lamp right now (not persisted)."""

    level_known: bool = False
    level: int | None = None  # the commanded level, None: nothing pushed yet
    level_since: float = 0.0  # when this level was first seen
    power_w: float | None = None  # the last good power reading, None after a bad one
    power_at: float = 0.0
    lit: bool | None = None  # above idle at the last good power reading
    switches: deque[float] = field(default_factory=deque)  # times the lamp went on or off
    voltage_low: bool = False
    supply_loss: bool = False

    @property
    def supply_lost(self) -> bool:
        return self.voltage_low or self.supply_loss

    def settled(self, at: float, settle_s: float) -> bool:
        return self.level is not None and at - self.level_since >= settle_s


class FaultJudge:
    """Turns one lamp's readings into condition reports through ``emit``."""

    def __init__(
        self,
        expected: Callable[[str], int | None],
        settings: LampMonitorSettings,
        emit: Emit | None = None,
    ) -> None:
        self.settings = settings
        self.emit = emit
        self._expected = expected

    def follow_command(self, lamp: str, state: LampState, at: float) -> None:
        level = self._expected(lamp)
        if level is not None:
            level = max(0, min(100, int(level)))
        if not state.level_known or level != state.level:
            state.level_known, state.level, state.level_since = True, level, at
            state.switches.clear()  # a commanded change is not cycling
        elif at < state.level_since:
            state.level_since = at  # the clock stepped back: settle again
            state.switches.clear()

    def on_supply_voltage(self, state: LampState, value: object, quality: str) -> None:
        voltage = valid(value, quality)
        limit = self.settings.min_supply_voltage_v
        if voltage is not None:
            state.voltage_low = limit is not None and voltage < limit

    def on_power(self, lamp: str, state: LampState, power: float, at: float) -> None:
        """Judge a good power reading (``state.power_w`` already holds it)."""
        idle = self.settings.idle_power_w
        lit = power > idle
        settled = state.settled(at, self.settings.settle_s)
        if state.switches and state.switches[-1] > at:
            state.switches.clear()
        if state.lit is not None and lit != state.lit and settled and not state.supply_lost:
            state.switches.append(at)
        state.lit = lit
        horizon = at - self.settings.cycling_window_s
        while state.switches and state.switches[0] <= horizon:
            state.switches.popleft()

        out_of_range: bool | None = None
        not_lighting: bool | None = None
        day_burning: bool | None = None
        cycling: bool | None = None
        if settled and state.level is not None:
            cycling = len(state.switches) > self.settings.max_switches
            if state.level == 0:
                out_of_range = day_burning = lit
            elif not state.supply_lost:
                expected_w = self.settings.rated_w(lamp) * state.level / 100
                tolerance = self.settings.tolerance
                low, high = expected_w * (1 - tolerance), expected_w * (1 + tolerance)
                out_of_range = not low <= power <= high
                if expected_w > 2 * idle:  # too deep a dim level tells nothing about lighting
                    not_lighting = not lit
        source = lamp + SOURCE_SUFFIX
        self.report(source, POWER_OUT_OF_RANGE, out_of_range, at)
        self.report(source, LAMP_NOT_LIGHTING, not_lighting, at)
        self.report(source, DAY_BURNING, day_burning, at)
        self.report(source, CYCLING, cycling, at)

    def on_power_factor(
        self, lamp: str, state: LampState, value: object, quality: str, at: float
    ) -> None:
        factor = valid(value, quality)
        if factor is None:
            return
        burning = (
            state.power_w is not None
            and 0 <= at - state.power_at <= self.settings.max_gap_s
            and state.power_w > self.settings.idle_power_w
        )
        low: bool | None = None
        if (
            burning
            and state.level is not None
            and state.level >= self.settings.power_factor_min_level
            and state.settled(at, self.settings.settle_s)
            and not state.supply_lost
        ):
            low = factor < self.settings.min_power_factor
        self.report(lamp + SOURCE_SUFFIX, LOW_POWER_FACTOR, low, at)

    def report(self, source: str, kind: str, value: bool | None, at: float) -> None:
        if self.emit is None:
            return
        if value is None:
            self.emit(source, kind, False, UNCERTAIN, at)
        else:
            self.emit(source, kind, value, GOOD, at)


def valid(value: object, quality: str) -> float | None:
    """A good, finite, non-negative number, or None."""
    if quality != GOOD or isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    if not math.isfinite(number) or number < 0:
        return None
    return number
