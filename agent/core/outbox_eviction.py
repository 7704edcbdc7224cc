"""Bounds of the outbox: which records go when it is full or too old, and salvaging a bad file.

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

import contextlib
import json
import re
import shutil
import sqlite3
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

THINNED: Final = "thinned"  # LOW records dropped to thin out old telemetry (size bound)
SIZE: Final = "size"  # records dropped oldest first (size bound or full disk)
AGE: Final = "age"  # records older than max_age_s
REFUSED: Final = "refused"  # an append that found no room, not even after evicting
CORRUPT: Final = "corrupt"  # records lost with a corrupt file (not salvageable)
REASONS: Final = (THINNED, SIZE, AGE, REFUSED, CORRUPT)

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


# -- salvaging a corrupt file ----------------------------------------------------------------


@dataclass
class Salvage:
    """What could be read from an unusable outbox file."""

    epoch: str | None = None
    streams: dict[str, tuple[int, int]] = field(default_factory=dict)  # last, acked seq
    streams_complete: bool = False  # the whole streams table was read
    records: list[tuple[str, int, int, float, str]] = field(default_factory=list)
    evictions: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)
    lost: dict[str, int] = field(default_factory=dict)  # records not recovered, per stream

    def usable_epoch(self) -> str | None:
        """The old epoch, if sequence numbers can safely continue in it.

        Only when the sequence counters were read whole: otherwise a number the platform
        has already seen (acknowledged, so no longer in the file) could be handed out again.
        """
        return self.epoch if self.streams_complete else None


def salvage(path: Path, stream_ok: re.Pattern[str]) -> Salvage:
    """Read what is readable from ``path`` (and its WAL) without changing them.

    Works on a scratch copy: opening a WAL database can rewrite it, and the quarantined file
    stays as it was for whoever investigates. Never raises; an unreadable file gives an
    empty ``Salvage``.
    """
    found = Salvage()
    scratch = path.with_name(path.name + ".salvage")
    scratch_wal = scratch.with_name(scratch.name + "-wal")
    try:
        if not path.exists():
            return found
        shutil.copyfile(path, scratch)
        wal = path.with_name(path.name + "-wal")
        if wal.exists():
            shutil.copyfile(wal, scratch_wal)
        db = sqlite3.connect(scratch, isolation_level=None)
        try:
            _read(db, found, stream_ok)
        finally:
            db.close()
    except (OSError, sqlite3.Error):
        pass
    finally:
        for leftover in (scratch, scratch_wal, scratch.with_name(scratch.name + "-shm")):
            with contextlib.suppress(OSError):
                leftover.unlink(missing_ok=True)
    return found


def _read(db: sqlite3.Connection, found: Salvage, stream_ok: re.Pattern[str]) -> None:
    with contextlib.suppress(sqlite3.Error):
        row = db.execute("SELECT value FROM meta WHERE key = 'epoch'").fetchone()
        if row is not None and isinstance(row[0], str) and row[0]:
            found.epoch = row[0]
    with contextlib.suppress(sqlite3.Error):
        for stream, last, acked in db.execute("SELECT stream, last_seq, acked_seq FROM streams"):
            if _is_stream(stream, stream_ok) and isinstance(last, int) and isinstance(acked, int):
                found.streams[stream] = (last, acked)
        found.streams_complete = True
    with contextlib.suppress(sqlite3.Error):
        for stream, reason, total, reported in db.execute(
            "SELECT stream, reason, total, reported FROM evictions"
        ):
            if _is_stream(stream, stream_ok) and reason in REASONS:
                found.evictions[stream, reason] = (int(total), int(reported))
    found.records = _read_records(db, stream_ok)
    counted: dict[str, int] | None = None
    with contextlib.suppress(sqlite3.Error):
        # The (stream, seq) index often survives damage to the table's pages.
        counted = dict(db.execute("SELECT stream, count(*) FROM records GROUP BY stream"))
    recovered = Counter(r[0] for r in found.records)
    if counted is None:  # upper bound: everything not acknowledged
        counted = {s: max(0, last - acked) for s, (last, acked) in found.streams.items()}
    for stream, count in counted.items():
        if isinstance(stream, str) and count > recovered[stream]:
            found.lost[stream] = int(count) - recovered[stream]


def _read_records(
    db: sqlite3.Connection, stream_ok: re.Pattern[str]
) -> list[tuple[str, int, int, float, str]]:
    """Walk the records table by rowid, skipping over pages that cannot be read."""
    out: list[tuple[str, int, int, float, str]] = []
    seen: set[tuple[str, int]] = set()
    after = 0
    skip = 1
    failures = 0
    consecutive = 0
    query = (
        "SELECT rowid, stream, seq, priority, created_at, payload FROM records "
        "WHERE rowid > ? ORDER BY rowid"
    )
    while failures < 1000 and after < 2**62:
        try:
            for rowid, stream, seq, priority, created_at, payload in db.execute(query, (after,)):
                after = rowid
                skip, consecutive = 1, 0
                if _valid(stream, seq, priority, created_at, payload, stream_ok) and (
                    (stream, seq) not in seen
                ):
                    seen.add((stream, seq))
                    out.append((stream, seq, priority, float(created_at), payload))
        except sqlite3.Error:
            # Step over the damaged page one rowid at a time (a page holds tens of
            # records), then ever faster if the damage is wider (an interior page).
            failures += 1
            consecutive += 1
            after += skip
            if consecutive > 64:
                skip *= 2
            continue
        break
    out.sort(key=lambda r: (r[0], r[1]))
    return out


def _is_stream(stream: object, stream_ok: re.Pattern[str]) -> bool:
    return isinstance(stream, str) and bool(stream_ok.match(stream))


def _valid(
    stream: object,
    seq: object,
    priority: object,
    created_at: object,
    payload: object,
    stream_ok: re.Pattern[str],
) -> bool:
    if not (_is_stream(stream, stream_ok) and isinstance(seq, int) and seq > 0):
        return False
    if not isinstance(priority, int) or not isinstance(created_at, int | float):
        return False
    if not isinstance(payload, str):
        return False
    try:
        return isinstance(json.loads(payload), dict)
    except ValueError:
        return False
