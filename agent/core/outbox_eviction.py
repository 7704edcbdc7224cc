"""Bounds of the outbox: which records go when it is full or too old.

The functions here run on the outbox's connection inside a transaction the caller opened;
they never commit. ``agent/core/outbox.py`` owns the connection, the counters and the logging.

Eviction order when room is needed (``evict_for_space``), each step only as far as needed:

1. *thinned*: every other record of the oldest half of the LOW records (telemetry), oldest
   first. Repeated episodes thin the oldest data again, so a long outage leaves old
   telemetry sparse rather than a hole in the recent past.
2. *size*: the remaining records oldest first, LOW before NORMAL before HIGH, and never a
   record of a higher priority than the one being stored: telemetry never pushes out an
   alarm, an alarm may push out an older alarm once nothing else is left.

Records older than ``max_age_s`` go regardless of room (``evict_expired``), LOW first, then
NORMAL, then HIGH. A sequence number is never handed out again after its record is evicted:
the platform sees the gap, and the counts reported in the ``outbox`` stream explain it.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from typing import Final

THINNED: Final = "thinned"  # LOW records dropped to thin out old telemetry (size bound)
SIZE: Final = "size"  # records dropped oldest first (size bound or full disk)
AGE: Final = "age"  # records older than max_age_s
REFUSED: Final = "refused"  # an append that found no room, not even after evicting
CORRUPT: Final = "corrupt"  # records lost with a corrupt file (not salvageable)
BUFFER: Final = "buffer"  # dropped from the memory buffer while the file was unusable
REASONS: Final = (THINNED, SIZE, AGE, REFUSED, CORRUPT, BUFFER)

LOW_PRIORITY: Final = 0  # Priority.LOW; thinning applies to this and below
ROW_OVERHEAD: Final = 48  # bytes per record beyond its payload: row header, two index entries
LOW_WATER: Final = 0.9  # once full, evict down to this fraction of max_bytes

_THIN_CANDIDATES = (
    "SELECT rowid, stream, length(payload) FROM records WHERE priority <= ? "
    "ORDER BY priority, created_at, rowid LIMIT ?"
)
_COUNT_LOW = "SELECT count(*) FROM records WHERE priority <= ?"
_OLDEST_UP_TO = (
    "SELECT rowid, stream, length(payload) FROM records WHERE priority <= ? "
    "ORDER BY priority, created_at, rowid LIMIT ?"
)
_DELETE_ROWID = "DELETE FROM records WHERE rowid = ?"
_NEXT_PRIORITY = "SELECT min(priority) FROM records WHERE priority > ?"
_EXPIRED = "DELETE FROM records WHERE priority = ? AND created_at < ? RETURNING stream"
_MIN_PRIORITY_SENTINEL: Final = -(2**63)

Counts = Counter[tuple[str, str]]  # (stream, reason) -> records


def used_bytes(db: sqlite3.Connection) -> int:
    """Bytes of the database that hold data (pages in use, free pages not counted)."""
    pages = int(db.execute("PRAGMA page_count").fetchone()[0])
    free = int(db.execute("PRAGMA freelist_count").fetchone()[0])
    size = int(db.execute("PRAGMA page_size").fetchone()[0])
    return (pages - free) * size


def evict_for_space(
    db: sqlite3.Connection, need: int, max_priority: int, *, thin: bool = True
) -> Counts:
    """Delete records worth about ``need`` bytes, in the module's order; return the counts.

    Only records with a priority up to ``max_priority`` are candidates. An empty result
    means nothing may be evicted for this record. ``thin=False`` skips thinning: the
    caller's second pass for the same record, when thinning left pages half full rather
    than free (SQLite merges leaf pages only below a third full), so the oldest go next.
    """
    counts: Counts = Counter()
    freed = 0
    low = min(LOW_PRIORITY, max_priority)
    if thin and max_priority >= LOW_PRIORITY:
        # Thinning: every other record of the oldest half of LOW, oldest first.
        half = int(db.execute(_COUNT_LOW, (low,)).fetchone()[0]) // 2
        victims: list[int] = []
        if half >= 1:
            rows = db.execute(_THIN_CANDIDATES, (low, half)).fetchall()
            for rowid, stream, length in rows[::2]:
                if freed >= need:
                    break
                victims.append(rowid)
                freed += int(length) + ROW_OVERHEAD
                counts[stream, THINNED] += 1
        db.executemany(_DELETE_ROWID, [(v,) for v in victims])
    batch = 64
    while freed < need:
        rows = db.execute(_OLDEST_UP_TO, (max_priority, batch)).fetchall()
        if not rows:
            break
        victims = []
        for rowid, stream, length in rows:
            if freed >= need:
                break
            victims.append(rowid)
            freed += int(length) + ROW_OVERHEAD
            counts[stream, SIZE] += 1
        db.executemany(_DELETE_ROWID, [(v,) for v in victims])
        batch = min(batch * 2, 4096)
    return counts


def evict_expired(db: sqlite3.Connection, cutoff: float) -> Counts:
    """Delete records created before ``cutoff``, lowest priority first; return the counts."""
    counts: Counts = Counter()
    priority = _MIN_PRIORITY_SENTINEL
    while True:
        row = db.execute(_NEXT_PRIORITY, (priority,)).fetchone()
        if row is None or row[0] is None:
            return counts
        priority = int(row[0])
        for (stream,) in db.execute(_EXPIRED, (priority, cutoff)).fetchall():
            counts[stream, AGE] += 1
