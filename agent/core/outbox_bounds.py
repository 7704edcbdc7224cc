"""The outbox's eviction book: what its bounds evicted, the episode, the report upstream.

Split from the store (``outbox_store.py``) by job: the store owns the connection and the
records; this base class owns what the bounds (``max_bytes``, ``max_age_s``) do to them:
making room by evicting (the order is ``outbox_eviction.py``'s), the age limit, the counts
per stream and reason (kept in the file's ``evictions`` table, so they survive restarts),
the episode logged once when it starts and once when it ends, and the report of new counts
appended to the stream ``outbox`` at most every ``report_interval_s``.
"""

from __future__ import annotations

import math
import sqlite3
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Final, TypeVar

import structlog

from smartpole.agent.core.outbox_eviction import (
    AGE,
    LOW_WATER,
    REFUSED,
    SIZE,
    Counts,
    evict_expired,
    evict_for_space,
    used_bytes,
)
from smartpole.agent.core.outbox_file import COUNT_EVICTIONS, rollback
from smartpole.agent.core.outbox_types import OutboxError, Priority, encode

log = structlog.get_logger("smartpole.outbox")
_T = TypeVar("_T")

REPORT_STREAM: Final = "outbox"  # eviction counts go upstream in this stream
REPORT_INTERVAL_S: Final = 60.0
AGE_CHECK_INTERVAL_S: Final = 1.0

_EVICTIONS = "SELECT stream, reason, total, reported FROM evictions ORDER BY stream, reason"
_MARK_REPORTED = "UPDATE evictions SET reported = ? WHERE stream = ? AND reason = ?"

After = Callable[[sqlite3.Connection], None]


class EvictionBook:
    """The eviction side of ``OutboxStore``, which provides the file (see below)."""

    # Provided by the store.
    path: Path
    max_bytes: int | None
    max_age_s: float | None
    report_interval_s: float | None
    _clock: Callable[[], float]
    _db: sqlite3.Connection | None
    _unsynced: bool

    def __init__(self) -> None:
        self._evictions: dict[str, dict[str, int]] = {}  # totals, as in the evictions table
        self._evicting = False  # an eviction episode is under way
        self._episode: Counts = Counter()
        self._unreported = False
        self._last_report: float | None = None
        self._next_age_check = -math.inf

    # The store's primitives.
    @property
    def db_budget(self) -> int | None:
        raise NotImplementedError

    def _conn(self) -> sqlite3.Connection:
        raise NotImplementedError

    def _write(self, what: str, body: Callable[[sqlite3.Connection], _T]) -> _T | None:
        raise NotImplementedError

    def _store(
        self,
        rows: list[tuple[str, str, int]],
        after: After | None = None,
        created: list[float] | None = None,
    ) -> list[int]:
        raise NotImplementedError

    def _load_evictions(self, db: sqlite3.Connection) -> None:
        """The totals kept in a file just opened; whether some are not reported yet."""
        self._evictions = {}
        unreported = False
        for stream, reason, total, reported in db.execute(_EVICTIONS).fetchall():
            self._evictions.setdefault(stream, {})[reason] = int(total)
            unreported = unreported or total > reported
        self._unreported = unreported

    def _make_room(self, max_priority: int, size: int, passes: int) -> bool:
        """Evict enough for ``size`` bytes and down to the low-water mark; False: nothing to."""
        db = self._conn()
        used = used_bytes(db)
        budget = self.db_budget
        assert budget is not None  # only the bound evicts for room; see _store_evicting
        need = max(size, used - int(budget * LOW_WATER))
        try:
            db.execute("BEGIN IMMEDIATE")
            counts = evict_for_space(db, need, max_priority, thin=passes == 0)
            record_counts(db, counts)
            db.execute("COMMIT")
        except BaseException:
            rollback(db)
            raise
        self._note(counts, SIZE)
        return bool(counts)

    def _count_refused(self, rows: list[tuple[str, str, int]]) -> None:
        counts: Counts = Counter((stream, REFUSED) for stream, _, _ in rows)
        db = self._conn()
        try:
            db.execute("BEGIN IMMEDIATE")
            record_counts(db, counts)
            db.execute("COMMIT")
        except sqlite3.Error:
            rollback(db)  # the disk is full indeed; the count lives on in memory
        self._note(counts, REFUSED)

    def _note(self, counts: Counts, reason: str) -> None:
        """Evictions committed: count them, start an episode (logged once)."""
        if not counts:
            return
        for (stream, why), n in counts.items():
            per = self._evictions.setdefault(stream, {})
            per[why] = per.get(why, 0) + n
        self._episode.update(counts)
        self._unreported = True
        if not self._evicting:
            self._evicting = True
            log.warning(
                "outbox_eviction_started",
                file=str(self.path),
                reason=reason,
                evicted=nested(counts),
                max_bytes=self.max_bytes,
                max_age_s=self.max_age_s,
            )

    def _end_episode_if_room(self) -> None:
        """After a drain: the episode ends once the outbox is below its low-water mark."""
        if not self._evicting:
            return
        budget = self.db_budget
        if budget is not None:
            try:
                if used_bytes(self._conn()) > budget * LOW_WATER:
                    return
            except (sqlite3.Error, OutboxError):
                return
        log.info(
            "outbox_eviction_stopped",
            file=str(self.path),
            evicted=nested(self._episode),
            total=sum(self._episode.values()),
        )
        self._evicting = False
        self._episode = Counter()

    def count_lost(self, lost: Mapping[str, int], reason: str) -> None:
        """Record records lost outside the file (``buffer``: dropped from memory while the
        file was unusable) with the evictions, so they are reported and counted alike."""
        counts: Counts = Counter({(s, reason): n for s, n in lost.items() if n > 0})
        if not counts:
            return
        self._write(f"count lost records in {self.path}", lambda db: record_counts(db, counts))
        self._note(counts, reason)

    def evict_expired(self) -> int:
        """Evict the records older than ``max_age_s`` now, LOW first; return how many.

        ``append`` and ``pending`` call it on their own (at most about once a second), so
        the uplink need not; it is public for a daemon that wants it on a timer.
        """
        if self.max_age_s is None:
            return 0
        cutoff = self._clock() - self.max_age_s

        def evict(db: sqlite3.Connection) -> Counts:
            counts = evict_expired(db, cutoff)
            record_counts(db, counts)
            return counts

        counts = self._write(f"evict from {self.path}", evict)
        if counts is None:
            return 0
        if counts:
            self._unsynced = True
        self._note(counts, AGE)
        return sum(counts.values())

    def _maintain(self) -> None:
        """The age bound, checked at most every ``AGE_CHECK_INTERVAL_S``; never raises."""
        if self.max_age_s is None or self._db is None:
            return
        now = self._clock()
        if now < self._next_age_check:
            return
        self._next_age_check = now + min(AGE_CHECK_INTERVAL_S, self.max_age_s / 10)
        try:
            self.evict_expired()
        except OutboxError as exc:
            log.warning("outbox_expiry_failed", file=str(self.path), error=str(exc))

    def _maybe_report(self) -> None:
        """Append the eviction counts not reported yet to ``outbox``, throttled; never raises."""
        if not self._unreported or self.report_interval_s is None or self._db is None:
            return
        now = self._clock()
        if self._last_report is not None and now - self._last_report < self.report_interval_s:
            return
        self._last_report = now
        try:
            rows = self._conn().execute(_EVICTIONS).fetchall()
            delta: dict[str, dict[str, int]] = {}
            totals: dict[str, dict[str, int]] = {}
            marks: list[tuple[int, str, str]] = []
            for stream, reason, total, reported in rows:
                totals.setdefault(stream, {})[reason] = total
                if total > reported:
                    delta.setdefault(stream, {})[reason] = total - reported
                    marks.append((total, stream, reason))
            self._unreported = False
            if not delta:
                return
            payload = {"kind": "evictions", "evicted": delta, "totals": totals}

            def mark(db: sqlite3.Connection) -> None:
                db.executemany(_MARK_REPORTED, marks)

            self._store([(REPORT_STREAM, encode(REPORT_STREAM, payload), Priority.HIGH)], mark)
        except (OutboxError, sqlite3.Error) as exc:
            self._unreported = True
            log.warning("outbox_report_failed", file=str(self.path), error=str(exc))

    def evictions(self) -> dict[str, dict[str, int]]:
        """Records evicted (or refused) per stream and reason since the file was created.

        Reasons: ``thinned``, ``size``, ``age``, ``refused``, ``corrupt`` (see
        ``agent/outbox_eviction.py``). Kept in the file, so the counts survive restarts.
        """
        return {stream: dict(per) for stream, per in sorted(self._evictions.items())}

    @property
    def evicting(self) -> bool:
        """An eviction episode is under way (a bound was reached and not yet drained)."""
        return self._evicting


def record_counts(db: sqlite3.Connection, counts: Counts) -> None:
    db.executemany(COUNT_EVICTIONS, [(s, r, n) for (s, r), n in counts.items()])


def nested(counts: Counts) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for (stream, reason), n in sorted(counts.items()):
        out.setdefault(stream, {})[reason] = n
    return out
