"""A damaged store file, kept aside and accounted for: what was lost, where the file went.

Every store in the state directory (the outbox, the last point values, the alarm store)
can be found damaged after a power cut or a worn flash page. Replacing it silently hides a
loss nobody can then explain, so each store that gives up on a file does the same three
things: moves the file aside under a timestamped name (kept for whoever investigates, never
deleted by the agent), logs once what was lost, and hands a ``Damage`` report to the
composition root, which sends it upstream through the outbox (stream ``outbox``, kind
``store_damaged``). A count that cannot be known is ``None`` and said "unknown", never 0;
an estimate says so (``exact=False``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import structlog

log = structlog.get_logger("smartpole.state")

DAMAGE_KIND = "store_damaged"


@dataclass(frozen=True)
class Damage:
    """One damaged store file: what it held that is gone, and where the file is now."""

    store: str  # "outbox", "points", "alarms", "audit"
    file: str
    moved_to: str | None  # None: it could not be moved (then it was left where it was)
    reason: str
    lost: int | None  # records/entries lost; None: unknown
    exact: bool  # the count is exact (False: an estimate, or unknown)
    recovered: int = 0  # records/entries that could be read and were kept
    at: float = 0.0

    def to_json(self) -> dict[str, object]:
        return {
            "kind": DAMAGE_KIND,
            "store": self.store,
            "file": self.file,
            "moved_to": self.moved_to,
            "reason": self.reason,
            "lost": "unknown" if self.lost is None else self.lost,
            "exact": self.exact,
            "recovered": self.recovered,
            "at": self.at,
        }

    def log(self, **detail: object) -> None:
        """The one log line of this damage: an error, with the count or "unknown"."""
        log.error(
            f"{self.store}_store_damaged",
            file=self.file,
            moved_to=self.moved_to,
            reason=self.reason,
            lost="unknown" if self.lost is None else self.lost,
            exact=self.exact,
            recovered=self.recovered,
            **detail,
        )


def aside_name(path: Path, now: float, label: str = "corrupt") -> Path:
    """A free name next to ``path``: ``<name>.<label>-<UTC stamp>[.<n>]``."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    target = path.with_name(f"{path.name}.{label}-{stamp}")
    counter = 1
    while target.exists():
        counter += 1
        target = path.with_name(f"{path.name}.{label}-{stamp}.{counter}")
    return target


def move_aside(path: Path, now: float | None = None) -> Path | None:
    """Rename a damaged file out of the way; None when it could not be (the caller says so)."""
    target = aside_name(path, time.time() if now is None else now)
    try:
        path.replace(target)
    except OSError as exc:
        log.warning("store_move_aside_failed", file=str(path), error=str(exc))
        return None
    return target


def quarantine(
    store: str,
    path: Path,
    reason: str,
    *,
    lost: int | None,
    exact: bool,
    recovered: int = 0,
    now: float | None = None,
) -> Damage:
    """Move ``path`` aside, log the loss once, and return the report for upstream."""
    at = time.time() if now is None else now
    moved = move_aside(path, at)
    damage = Damage(
        store=store,
        file=str(path),
        moved_to=None if moved is None else str(moved),
        reason=reason,
        lost=lost,
        exact=exact and lost is not None,
        recovered=recovered,
        at=at,
    )
    damage.log()
    return damage
