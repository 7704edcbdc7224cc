"""Lamp faults seen from the meter, and each lamp's energy and burning hours.

The lamp controller reports its own fault bits; this module judges the lamp from what the
controller *measures* against what the lighting controller last *commanded*, the way TALQ's
LampMonitorFunction and ElectricalMeterFunction describe it. It listens to the point table
(``on_reading`` has a point-table listener's signature) and reports each derived condition
as a true/false reading of the source ``"<lamp>.monitor"`` through ``emit``, which has the
signature of ``AlarmManager.observe``; ``alarm_definitions`` gives the matching alarm kinds.

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
cannot be judged the monitor reports it with quality ``uncertain``: the alarm keeps its state
(a dead lamp stays reported through the day) and a debounce in progress starts over. A lost
supply (the controller's ``supply_loss`` bit, or ``supply_voltage`` below
``min_supply_voltage_v`` when set) is not blamed on the lamp. Input readings that are not
``good``, or whose value is not a finite, non-negative number, never raise or clear anything
and report nothing; a bad power reading only ends the interval being counted (below).

Accounting, per lamp: energy from the controller's ``energy`` counter (a step down is a reset
or rollover and is skipped; a step up larger than the lamp could have drawn since the
previous reading is a glitch or a swapped controller and is skipped too; either way the
counter is taken as the new base), or, for a lamp that has never reported a counter,
``active_power`` held from one reading to the next; burning hours are the time from a
reading above ``idle_power_w`` to the next one. An interval longer than ``max_gap_s`` or
broken by a bad reading is not counted. Totals and counter bases are written atomically to
``store_path`` at most every ``persist_s`` and on ``close``, and restored on start, so a
restart loses no counter energy at all (the next counter step covers the downtime).

Times: condition timing and integration use the readings' ``at`` (wall clock, like the
alarm manager); a clock that steps backwards restarts timers instead of stretching them.
``clock`` (wall clock) stamps ``since`` and paces the writes.
"""

from __future__ import annotations

import json
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Final, Literal, Self

import structlog
from pydantic import BaseModel, ConfigDict, Field, model_validator

from smartpole.agent.control.alarm_types import AlarmDefinition, Severity
from smartpole.agent.jsonfile import JsonFile

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
    "alarm_definitions",
]

log = structlog.get_logger("smartpole.lamp_monitor")

MonitorKind = Literal[
    "power_out_of_range", "low_power_factor", "day_burning", "cycling", "lamp_not_lighting"
]
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
STORE_FILE = "lamp_accounts.json"
FORMAT_VERSION = 1

GOOD = "good"
UNCERTAIN = "uncertain"

# The lamp controller's points (configs/profiles/lamp-controller.yaml).
ACTIVE_POWER = "active_power"
POWER_FACTOR = "power_factor"
ENERGY = "energy"
SUPPLY_VOLTAGE = "supply_voltage"
SUPPLY_LOSS = "supply_loss"

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

_KWH_PER_WS = 1.0 / 3_600_000.0
_EPSILON_KWH = 1e-9

Emit = Callable[[str, str, bool, str, float], object]
"""``emit(source, kind, value, quality, at)``: ``AlarmManager.observe`` fits."""

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


@dataclass
class _Account:
    """What persists: a lamp's totals and the base of its energy counter."""

    since: float
    energy_kwh: float = 0.0
    burning_hours: float = 0.0
    has_counter: bool = False  # once seen, energy comes only from the counter
    counter_kwh: float | None = None
    counter_at: float | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "since": self.since,
            "energy_kwh": self.energy_kwh,
            "burning_hours": self.burning_hours,
            "has_counter": self.has_counter,
            "counter_kwh": self.counter_kwh,
            "counter_at": self.counter_at,
        }

    @classmethod
    def from_json(cls, item: object) -> _Account:
        if not isinstance(item, dict):
            raise TypeError("an account is an object")
        counter, counter_at = item.get("counter_kwh"), item.get("counter_at")
        if (counter is None) != (counter_at is None):
            raise ValueError("counter_kwh and counter_at go together")
        has_counter = item.get("has_counter", False)
        if not isinstance(has_counter, bool):
            raise TypeError("has_counter is true or false")
        return cls(
            since=_number(item["since"]),
            energy_kwh=_amount(item["energy_kwh"]),
            burning_hours=_amount(item["burning_hours"]),
            has_counter=has_counter,
            counter_kwh=None if counter is None else _amount(counter),
            counter_at=None if counter_at is None else _number(counter_at),
        )


@dataclass
class _Lamp:
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
        self._expected = expected
        self._emit = emit
        self._clock = clock
        self._state = {lamp: _Lamp() for lamp in self.lamps}
        self._retired: dict[str, object] = {}  # accounts of lamps no longer configured
        self._accounts = self._load()
        now = clock()
        fresh = [lamp for lamp in self.lamps if lamp not in self._accounts]
        for lamp in fresh:
            self._accounts[lamp] = _Account(since=now)
        self._dirty = bool(fresh)  # so ``since`` is kept from the first write on
        self._saved_at = now
        self._file = JsonFile(store_path, "lamp_accounts")
        for problem in settings.problems(self.lamps):
            log.warning("lamp_monitor_config", problem=problem)

    def set_emit(self, emit: Emit) -> None:
        """Where conditions go, when that exists only after the monitor (the alarm manager)."""
        self._emit = emit

    # ----- readings in -----

    def on_reading(self, device: str, point: str, value: object, quality: str, at: float) -> None:
        state = self._state.get(device)
        if state is None:
            return
        self._follow_command(device, state, at)
        if point == ACTIVE_POWER:
            self._on_power(device, state, value, quality, at)
        elif point == POWER_FACTOR:
            self._on_power_factor(device, state, value, quality, at)
        elif point == ENERGY:
            self._on_energy(device, value, quality, at)
        elif point == SUPPLY_VOLTAGE:
            voltage = _valid(value, quality)
            limit = self.settings.min_supply_voltage_v
            if voltage is not None:
                state.voltage_low = limit is not None and voltage < limit
        elif point == SUPPLY_LOSS and quality == GOOD and isinstance(value, bool | int):
            state.supply_loss = bool(value)

    def _follow_command(self, lamp: str, state: _Lamp, at: float) -> None:
        level = self._expected(lamp)
        if level is not None:
            level = max(0, min(100, int(level)))
        if not state.level_known or level != state.level:
            state.level_known, state.level, state.level_since = True, level, at
            state.switches.clear()  # a commanded change is not cycling
        elif at < state.level_since:
            state.level_since = at  # the clock stepped back: settle again
            state.switches.clear()

    def _on_power(self, lamp: str, state: _Lamp, value: object, quality: str, at: float) -> None:
        power = _valid(value, quality)
        if power is None:
            state.power_w = None  # an interval we did not see is not counted
            return
        self._integrate(lamp, state, power, at)
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
        self._report(source, POWER_OUT_OF_RANGE, out_of_range, at)
        self._report(source, LAMP_NOT_LIGHTING, not_lighting, at)
        self._report(source, DAY_BURNING, day_burning, at)
        self._report(source, CYCLING, cycling, at)

    def _on_power_factor(
        self, lamp: str, state: _Lamp, value: object, quality: str, at: float
    ) -> None:
        factor = _valid(value, quality)
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
        self._report(lamp + SOURCE_SUFFIX, LOW_POWER_FACTOR, low, at)

    def _report(self, source: str, kind: str, value: bool | None, at: float) -> None:
        if self._emit is None:
            return
        if value is None:
            self._emit(source, kind, False, UNCERTAIN, at)
        else:
            self._emit(source, kind, value, GOOD, at)

    # ----- accounting -----

    def _integrate(self, lamp: str, state: _Lamp, power: float, at: float) -> None:
        previous, since = state.power_w, state.power_at
        state.power_w, state.power_at = power, at
        if previous is None:
            return
        elapsed = at - since
        if not 0 < elapsed <= self.settings.max_gap_s:
            return
        account = self._accounts[lamp]
        if not account.has_counter:
            account.energy_kwh += previous * elapsed * _KWH_PER_WS
            self._dirty = True
        if previous > self.settings.idle_power_w:
            account.burning_hours += elapsed / 3600.0
            self._dirty = True
        self._maybe_persist()

    def _on_energy(self, lamp: str, value: object, quality: str, at: float) -> None:
        reading = _valid(value, quality)
        if reading is None:
            return
        account = self._accounts[lamp]
        account.has_counter = True
        base, base_at = account.counter_kwh, account.counter_at
        account.counter_kwh, account.counter_at = reading, at
        self._dirty = True
        if base is not None and base_at is not None:
            step = reading - base
            if step < 0:
                log.info("lamp_energy_counter_reset", lamp=lamp, before=base, now=reading)
            elif step > 0:
                hours = max(0.0, at - base_at) / 3600.0
                rated_kw = self.settings.rated_w(lamp) / 1000.0
                most = rated_kw * self.settings.max_power_ratio * hours
                most += self.settings.counter_resolution_kwh + _EPSILON_KWH
                if step <= most:
                    account.energy_kwh += step
                else:
                    log.warning(
                        "lamp_energy_step_ignored",
                        lamp=lamp,
                        step_kwh=step,
                        most_kwh=round(most, 6),
                        hours=round(hours, 3),
                    )
        self._maybe_persist()

    def accounts(self) -> dict[str, dict[str, float]]:
        """Per lamp: energy (kWh) and burning hours accumulated since ``since`` (epoch s)."""
        return {
            lamp: {
                "energy_kwh": account.energy_kwh,
                "burning_hours": account.burning_hours,
                "since": account.since,
            }
            for lamp, account in self._accounts.items()
        }

    # ----- persistence -----

    def _maybe_persist(self) -> None:
        now = self._clock()
        if now < self._saved_at:
            self._saved_at = now  # the clock stepped back: wait a whole period again
        elif self._dirty and now - self._saved_at >= self.settings.persist_s:
            self.flush()

    def flush(self) -> bool:
        """Write the accounts now if anything changed; False when the write failed."""
        self._saved_at = self._clock()
        if not self._dirty:
            return True
        lamps: dict[str, object] = dict(self._retired)
        lamps.update({lamp: account.to_json() for lamp, account in self._accounts.items()})
        data = {"version": FORMAT_VERSION, "lamps": lamps}
        if not self._file.write(data):
            return False
        self._dirty = False
        return True

    @property
    def write_failures(self) -> int:
        return self._file.write_failures

    def close(self) -> None:
        self.flush()

    def _load(self) -> dict[str, _Account]:
        try:
            saved: Any = json.loads(self.store_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.warning("lamp_accounts_unreadable", file=str(self.store_path), error=str(exc))
            return {}
        if (
            not isinstance(saved, dict)
            or saved.get("version") != FORMAT_VERSION
            or not isinstance(saved.get("lamps"), dict)
        ):
            log.warning("lamp_accounts_ignored", file=str(self.store_path), reason="format")
            return {}
        accounts: dict[str, _Account] = {}
        for lamp, item in saved["lamps"].items():
            if lamp not in self._state:
                self._retired[str(lamp)] = item  # kept for the day the lamp comes back
                continue
            try:
                accounts[lamp] = _Account.from_json(item)
            except (KeyError, TypeError, ValueError) as exc:
                log.warning("lamp_account_skipped", lamp=lamp, error=str(exc))
        return accounts


def _valid(value: object, quality: str) -> float | None:
    """A good, finite, non-negative number, or None."""
    if quality != GOOD or isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    if not math.isfinite(number) or number < 0:
        return None
    return number


def _number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"expected a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"expected a finite number, got {value!r}")
    return number


def _amount(value: object) -> float:
    number = _number(value)
    if number < 0:
        raise ValueError(f"expected an amount of 0 or more, got {value!r}")
    return number
