"""Each lamp's energy and burning hours, kept across restarts.

Split from ``lamp_monitor`` so that the accounting and its state file live apart from the
fault rules: this module knows how readings become kWh and hours and how they are stored,
and nothing about alarms. ``LampMonitor`` feeds it validated readings.

Energy comes from the controller's ``energy`` counter (a step down is a reset or rollover
and is skipped; a step up larger than the lamp could have drawn since the previous reading
is a glitch or a swapped controller and is skipped too; either way the counter is taken as
the new base), or, for a lamp that has never reported a counter, ``active_power`` held from
one reading to the next; burning hours are the time from a reading above ``idle_power_w`` to
the next one. An interval longer than ``max_gap_s`` or broken by a bad reading is not
counted. Totals and counter bases are written atomically to ``store_path`` at most every
``persist_s`` and on ``flush``, and restored on start, so a restart loses no counter energy
at all (the next counter step covers the downtime). Accounts of lamps no longer configured
are kept in the file for the day the lamp comes back.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from smartpole.agent.core.jsonfile import JsonFile
from smartpole.agent.core.state_schema import Schema, prepare

if TYPE_CHECKING:
    from smartpole.agent.config.lamp_monitor import LampMonitorSettings

log = structlog.get_logger("smartpole.lamp_monitor")

STORE_FILE = "lamp_accounts.json"
FORMAT_VERSION = 1
SCHEMA = Schema("lamp_accounts", FORMAT_VERSION)

_KWH_PER_WS = 1.0 / 3_600_000.0
_EPSILON_KWH = 1e-9


@dataclass
class Account:
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
    def from_json(cls, item: object) -> Account:
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


class LampAccounts:
    """The accounts of a pole's lamps and the file they persist in."""

    def __init__(
        self,
        lamps: list[str],
        settings: LampMonitorSettings,
        store_path: Path,
        clock: Callable[[], float],
    ) -> None:
        self.settings = settings
        self.store_path = store_path
        self._clock = clock
        self._retired: dict[str, object] = {}  # accounts of lamps no longer configured
        self._accounts = self._load(lamps)
        now = clock()
        fresh = [lamp for lamp in lamps if lamp not in self._accounts]
        for lamp in fresh:
            self._accounts[lamp] = Account(since=now)
        self._dirty = bool(fresh)  # so ``since`` is kept from the first write on
        self._saved_at = now
        self._file = JsonFile(store_path, "lamp_accounts")

    def integrate(self, lamp: str, previous_w: float, elapsed_s: float) -> None:
        """Count ``previous_w`` held for ``elapsed_s`` (the interval between two readings)."""
        if not 0 < elapsed_s <= self.settings.max_gap_s:
            return
        account = self._accounts[lamp]
        if not account.has_counter:
            account.energy_kwh += previous_w * elapsed_s * _KWH_PER_WS
            self._dirty = True
        if previous_w > self.settings.idle_power_w:
            account.burning_hours += elapsed_s / 3600.0
            self._dirty = True
        self._maybe_persist()

    def on_energy(self, lamp: str, reading: float, at: float) -> None:
        """A good reading of the lamp's energy counter (kWh)."""
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

    def totals(self) -> dict[str, dict[str, float]]:
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

    def _load(self, lamps: list[str]) -> dict[str, Account]:
        prepare(self.store_path, SCHEMA)
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
        accounts: dict[str, Account] = {}
        for lamp, item in saved["lamps"].items():
            if lamp not in lamps:
                self._retired[str(lamp)] = item  # kept for the day the lamp comes back
                continue
            try:
                accounts[lamp] = Account.from_json(item)
            except (KeyError, TypeError, ValueError) as exc:
                log.warning("lamp_account_skipped", lamp=lamp, error=str(exc))
        return accounts


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
