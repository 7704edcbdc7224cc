"""Counters that only grow (energy, burning hours) never go backwards upstream unannounced.

A profile flags such a point ``monotonic: true``. For each one the pole remembers the highest
value it has published, across restarts (``counters.json`` in the state directory). A value
about to be published that is lower than that is no glitch to hide: the meter was reset or
replaced, and the platform must rebase its consumption there. So it goes up as it was read,
and an event goes to the stream ``events`` first (``source: counter``, ``kind:
counter_reset``, with ``previous``, the highest value published before, and ``value``); the
remembered value then follows the new meter.

The file is written at most every ``SAVE_EVERY_S`` while values grow, at once after a reset,
and at a clean stop. After a crash it may hold a slightly older (lower) value than the last
one published; a reset that lands between the two is then missed, which needs a meter
replaced within seconds of a crash and a new meter reading higher than the old one did.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Final

import structlog

from smartpole.agent.core.jsonfile import JsonFile, read_versioned
from smartpole.agent.core.outbox import Outbox, OutboxError, Priority
from smartpole.agent.core.quarantine import Damage
from smartpole.agent.core.state_schema import Schema
from smartpole.drivers.schema import Value

log = structlog.get_logger("smartpole.uplink.counters")

FILE_NAME: Final = "counters.json"
FORMAT_VERSION: Final = 1
SCHEMA: Final = Schema("counters", FORMAT_VERSION)
SAVE_EVERY_S: Final = 10.0
STREAM: Final = "events"
RESET_KIND: Final = "counter_reset"

Key = tuple[str, str]


def counter_points(profiles: Iterable[tuple[str, object]]) -> list[Key]:
    """``(device, point)`` of every point a device's profile flags ``monotonic``, from
    ``(device, profile)`` pairs (profiles without such points contribute nothing)."""
    found: list[Key] = []
    for device, profile in profiles:
        points = getattr(profile, "points", None)
        if not isinstance(points, dict):
            continue
        found.extend((device, name) for name, spec in points.items() if _flagged(spec))
    return found


def _flagged(spec: object) -> bool:
    return getattr(spec, "monotonic", False) is True


def reset_payload(
    device: str, point: str, previous: float, value: float, at: float
) -> dict[str, object]:
    """The event of a counter found lower than it was (``schemas/uplink/event.schema.json``)."""
    return {
        "source": "counter",
        "kind": RESET_KIND,
        "device": device,
        "point": point,
        "previous": previous,
        "value": value,
        "at": round(at, 3),
    }


class CounterWatch:
    """The highest value published per counter point; the telemetry reporter asks it about
    every counter value it is about to publish (``check``)."""

    def __init__(
        self,
        points: Iterable[Key],
        outbox: Outbox,
        state_dir: Path | None = None,
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.points = frozenset(points)
        self._outbox = outbox
        self._monotonic = monotonic
        self._high: dict[Key, float] = {}
        self._file = None if state_dir is None else JsonFile(state_dir / FILE_NAME, "counters")
        self._dirty = False
        self._saved_at = -math.inf
        self.resets = 0
        self.damage: Damage | None = None
        if self._file is not None:
            self._load(self._file.path)

    def high(self, device: str, point: str) -> float | None:
        """The highest value published for the point (since its last reset), if any."""
        return self._high.get((device, point))

    def check(self, device: str, point: str, value: Value | None, at: float) -> None:
        """``value`` of a counter point is about to be published: remember it, or report
        the reset it shows. Not a number (None, a bool): nothing to compare."""
        if not isinstance(value, int | float) or isinstance(value, bool):
            return
        number = float(value)
        if not math.isfinite(number):
            return
        key = (device, point)
        high = self._high.get(key)
        if high is not None and number == high:
            return
        self._high[key] = number
        self._dirty = True
        if high is None or number > high:
            return
        self.resets += 1
        log.warning("counter_reset", device=device, point=point, previous=high, value=number)
        # A failed append is counted and logged once by the outbox; the reset is in the log.
        with contextlib.suppress(OutboxError):
            self._outbox.append(
                STREAM, reset_payload(device, point, high, number, at), priority=Priority.HIGH
            )
        self.save()

    def save_if_due(self) -> None:
        if self._dirty and self._monotonic() - self._saved_at >= SAVE_EVERY_S:
            self.save()

    def save(self) -> bool:
        """Write the remembered values now (a failure is logged once and counted by the
        file, and retried at the next save)."""
        if self._file is None or not self._dirty:
            return True
        entries = [
            {"device": device, "point": point, "high": high}
            for (device, point), high in sorted(self._high.items())
        ]
        if not self._file.write({"version": FORMAT_VERSION, "counters": entries}):
            return False
        self._dirty = False
        self._saved_at = self._monotonic()
        return True

    def status(self) -> dict[str, object]:
        return {
            "points": len(self.points),
            "resets": self.resets,
            "write_failures": self._file.write_failures if self._file is not None else 0,
        }

    def _load(self, path: Path) -> None:
        data, self.damage = read_versioned(path, SCHEMA)
        entries = data.get("counters") if data is not None else None
        if not isinstance(entries, list):
            return
        for entry in entries:
            if not isinstance(entry, dict):
                continue
            device, point, high = entry.get("device"), entry.get("point"), entry.get("high")
            if (
                isinstance(device, str)
                and isinstance(point, str)
                and isinstance(high, int | float)
                and not isinstance(high, bool)
                and math.isfinite(high)
                and (device, point) in self.points
            ):
                self._high[(device, point)] = float(high)
