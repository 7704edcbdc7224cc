"""The outbox's file store: everything that must reach the platform is written here first.

Callers hold ``Outbox`` (``outbox.py``), which uses this store while the file works and
rides out the times it does not; this module is the file's side.

Alarm transitions, audit records and (later) telemetry are appended to a SQLite database in
the state directory *before* anything else happens with them. The uplink drains it when
connected, in order, at-least-once, and deletes records only when the platform acknowledges
them (``ack``). Each stream has its own sequence number, strictly increasing and never
reused, so the platform can drop the duplicates that at-least-once delivery produces: the
de-duplication key is ``(epoch, stream, seq)``. The epoch is a random token chosen when the
database file is created; it changes only when the file is replaced (first start, or a
corrupt file moved aside), which is the one case where sequence numbers start again at 1.

Why synchronous ``sqlite3`` in the control process' event loop: the rates are a few appends
per second, each one small transaction on one connection (tens to hundreds of microseconds
without an fsync), far below what would delay the bus tasks. The SQL statements are module
constants, so the ``sqlite3`` module's statement cache prepares each one once.

Why ``synchronous=NORMAL`` with WAL: a commit then costs no fsync; the database can never be
corrupted by a crash or a power cut, but a power cut may roll back the last few commits.
Losing them is only harmless if nothing of them left the box, otherwise their sequence
numbers would be reused for different records and the platform would drop those as
duplicates. So ``pending()`` first makes every committed record durable (a WAL checkpoint,
which fsyncs the WAL): one fsync per batch handed to the uplink instead of one per append,
and eMMC/SD wear stays low. Callers for whom a record must survive a power cut the moment it
is written (alarm transitions) call ``flush()`` after appending.

Bounds (``max_bytes``, ``max_age_s``) evict instead of refusing: telemetry is thinned, then
dropped, then traffic, alarms and command results last (``agent/outbox_eviction.py``). Each
eviction is counted per stream and reason in the file, logged once per episode, and reported
upstream in the stream ``outbox``; an evicted record's sequence number stays a visible gap.
``max_bytes`` covers the database and its write-ahead log together (``outbox_file.bound``),
and the WAL is checkpointed and truncated when it outgrows its share or the disk runs short.
An unusable file (corrupt, zero-length, truncated, foreign) is moved aside, what is readable
of it is copied into a fresh one (``outbox_file.py``, ``outbox_salvage.py``), and the loss
is logged and kept in ``damage`` for upstream.
"""

from __future__ import annotations

import contextlib
import math
import os
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Final, TypeVar

import structlog

from smartpole.agent.core.outbox_bounds import (
    REPORT_INTERVAL_S,
    After,
    EvictionBook,
)
from smartpole.agent.core.outbox_eviction import (
    CORRUPT,
    ROW_OVERHEAD,
)
from smartpole.agent.core.outbox_file import (
    INSERT,
    SQLITE_FULL,
    UnusableFileError,
    bound,
    code,
    connect,
    connect_current,
    disk_bytes,
    empty_file_reason,
    is_corrupt,
    move_aside,
    restore,
    rollback,
)
from smartpole.agent.core.outbox_salvage import (
    MANIFEST_INTERVAL_S,
    Loss,
    ManifestFile,
    Salvage,
    count_loss,
    salvage,
)
from smartpole.agent.core.outbox_types import (
    STREAM_PATTERN,
    OutboxError,
    OutboxRecord,
    OutboxRefusedError,
    OutboxStorageError,
    StreamStats,
    check_priority,
    check_stream,
    encode,
)
from smartpole.agent.core.quarantine import Damage
from smartpole.drivers.lifecycle import Closing

log = structlog.get_logger("smartpole.outbox")
_T = TypeVar("_T")

FILE_NAME = "outbox.sqlite3"

MAX_EVICTION_PASSES: Final = 32
# The write-ahead log's share of ``max_bytes``: the database gets the rest. SQLite checkpoints
# the WAL when it reaches half of it and truncates it back to it after a checkpoint.
WAL_SHARE: Final = 0.25
MIN_WAL_BYTES: Final = 16 * 1024
DISK_MARGIN_BYTES: Final = 64 * 1024  # less free than a record and this: the disk is full
PRESSURE_FACTOR: Final = 4  # less free than this many times the WAL: truncate the WAL now
PRESSURE_CHECK_COMMITS: Final = 8

_NEXT_SEQ = (
    "INSERT INTO streams (stream, last_seq) VALUES (?, 1) "
    "ON CONFLICT (stream) DO UPDATE SET last_seq = last_seq + 1 RETURNING last_seq"
)
_PENDING_ALL = (
    "SELECT stream, seq, priority, created_at, payload FROM records ORDER BY stream, seq LIMIT ?"
)
_PENDING_ONE = (
    "SELECT stream, seq, priority, created_at, payload FROM records "
    "WHERE stream = ? ORDER BY seq LIMIT ?"
)
_DELETE = "DELETE FROM records WHERE stream = ? AND seq <= ?"
_MARK_ACKED = "UPDATE streams SET acked_seq = max(acked_seq, min(?, last_seq)) WHERE stream = ?"
_STATS = (
    "SELECT s.stream, s.last_seq, s.acked_seq, count(r.seq), min(r.created_at) "
    "FROM streams AS s LEFT JOIN records AS r ON r.stream = s.stream "
    "GROUP BY s.stream ORDER BY s.stream"
)


class OutboxStore(EvictionBook, Closing):
    """One connection to ``<state_dir>/outbox.sqlite3``; owned by the event loop's thread.

    ``max_bytes`` bounds the file so a long outage cannot fill the disk that the state and
    audit files share, ``max_age_s`` bounds how old a waiting record may get. Reaching a
    bound evicts records (``agent/outbox_eviction.py`` has the order) instead of refusing
    the append; an append that finds no room even then (a record bigger than the bound,
    telemetry when only alarms are left) raises ``OutboxRefusedError``. A disk that is full
    for other reasons evicts nothing (deleting rows would not shrink the file): that, like
    any failure to open, write or sync the file, is ``OutboxStorageError``. Evictions are
    counted per stream and reason (``evictions()``, ``stats()``), logged once per episode,
    and reported upstream as a record in the stream ``outbox`` at most every
    ``report_interval_s`` (``None``: not reported).
    """

    def __init__(
        self,
        state_dir: Path,
        *,
        max_bytes: int | None = None,
        max_age_s: float | None = None,
        clock: Callable[[], float] = time.time,
        report_interval_s: float | None = REPORT_INTERVAL_S,
    ) -> None:
        if max_bytes is not None and max_bytes < 1:
            raise ValueError("max_bytes must be positive")
        if max_age_s is not None and not max_age_s > 0:
            raise ValueError("max_age_s must be positive")
        self.path = state_dir / FILE_NAME
        self._wal_file = self.path.with_name(FILE_NAME + "-wal")
        self._dir = str(state_dir)
        self._unchecked_commits = 0
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self.report_interval_s = report_interval_s
        self.append_failures = 0
        self.recoveries = 0  # corrupt files moved aside since start
        self.salvaged = 0  # records copied from corrupt files into fresh ones since start
        self._clock = clock
        self._failing = False
        self._unsynced = False
        EvictionBook.__init__(self)
        self._db: sqlite3.Connection | None = None
        self.epoch = ""
        self.damage: list[Damage] = []  # files found damaged and replaced, for upstream
        self._manifest = ManifestFile(state_dir)
        self._manifest_due = -math.inf
        self.wal_bytes = 0 if max_bytes is None else max(MIN_WAL_BYTES, int(max_bytes * WAL_SHARE))
        self._db = self._open()
        self._write_manifest(clean=False)

    # -- lifecycle -------------------------------------------------------------------------

    def close(self) -> None:
        """Close the file; the manifest then says exactly what it holds (``clean``)."""
        if self._db is not None:
            self._write_manifest(clean=True)
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            self._db = None

    def _write_manifest(self, *, clean: bool) -> None:
        """What the file holds now, kept beside it to count a loss if it is ever damaged."""
        if self._db is None:
            return
        try:
            streams = {
                str(stream): (int(last), int(acked), int(count))
                for stream, last, acked, count, _ in self._db.execute(_STATS).fetchall()
            }
        except sqlite3.Error:
            return
        self._manifest.write(self.epoch, streams, clean=clean)
        self._manifest_due = time.monotonic() + MANIFEST_INTERVAL_S

    def _open(self, unusable: str | None = None) -> sqlite3.Connection:
        """Open the file, or move an unusable one aside, salvage it, start a fresh one."""
        db: sqlite3.Connection | None = None
        if unusable is None:
            unusable = empty_file_reason(self.path)
        if unusable is None:
            try:
                db, self.epoch, newer = connect_current(self.path, self._clock())
                self.damage.extend(newer)  # a rollback: the newer release's file set aside
            except (sqlite3.DatabaseError, UnusableFileError) as exc:
                if isinstance(exc, sqlite3.DatabaseError) and not is_corrupt(exc):
                    raise OutboxStorageError(f"cannot open {self.path}: {exc}") from exc
                unusable = str(exc)
        if db is None:
            manifest = self._manifest.read()
            moved = self._move_aside(unusable or "unusable")
            found = salvage(moved, STREAM_PATTERN)
            try:
                db, self.epoch = connect(self.path)
            except (sqlite3.DatabaseError, UnusableFileError) as exc:
                raise OutboxStorageError(f"cannot create {self.path}: {exc}") from exc
            self._restore(db, found, count_loss(found, manifest), moved, unusable or "unusable")
        try:
            if self.max_bytes is not None:
                bound(db, self.max_bytes, self.wal_bytes)
            self._load_evictions(db)
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                db.close()
            raise OutboxStorageError(f"cannot open {self.path}: {exc}") from exc
        return db

    @property
    def db_budget(self) -> int | None:
        """Bytes the database file itself may use (``max_bytes`` less the WAL's share)."""
        return None if self.max_bytes is None else self.max_bytes - self.wal_bytes

    def disk_bytes(self) -> int:
        """Bytes the database and its WAL take on disk now (the ``-shm`` index not counted)."""
        return disk_bytes(self.path)

    def relieve(self) -> None:
        """Under pressure (full disk, over budget): fold the WAL into the file and truncate it."""
        if self._db is None:
            return
        try:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        except sqlite3.Error as exc:
            log.debug("outbox_checkpoint_failed", file=str(self.path), error=str(exc))
            return
        self._unsynced = False

    def _restore(
        self, db: sqlite3.Connection, found: Salvage, loss: Loss, moved: Path, reason: str
    ) -> None:
        """Copy what was salvaged into the fresh file; log and keep the damage report."""
        try:
            kept = restore(db, found, loss)
        except sqlite3.Error as exc:
            log.error("outbox_salvage_failed", file=str(self.path), error=str(exc))
            found.records = []
            kept = None
        else:
            if kept is not None:
                self.epoch = kept
            self.salvaged += len(found.records)
            self._unsynced = True
        damage = Damage(
            store="outbox",
            file=str(self.path),
            moved_to=str(moved),
            reason=reason,
            lost=loss.total,
            exact=loss.exact,
            recovered=len(found.records),
            at=self._clock(),
        )
        damage.log(lost_per_stream=loss.per_stream, epoch_kept=kept is not None)
        self.damage.append(damage)
        lost = Counter({(s, CORRUPT): n for s, n in loss.per_stream.items()})
        if lost:
            self._note(lost, CORRUPT)

    def _move_aside(self, reason: str) -> Path:
        target = move_aside(self.path, self._clock())
        self.recoveries += 1
        log.error(
            "outbox_corrupt_moved_aside", file=str(self.path), moved_to=str(target), error=reason
        )
        return target

    def _recover(self, exc: sqlite3.DatabaseError) -> None:
        """The file went bad while open (torn flash page): move it aside, salvage, restart."""
        self.close()
        self._unsynced = False
        self._db = self._open(unusable=str(exc))

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise OutboxError("the outbox is closed")
        return self._db

    # -- the API ---------------------------------------------------------------------------

    def append(self, stream: str, payload: Mapping[str, object], *, priority: int) -> int:
        """Store one record and return its sequence number in ``stream``.

        Raises ``OutboxError`` when the record could not be stored (disk full, I/O error,
        no room within ``max_bytes`` even after evicting, payload not representable as
        JSON); the caller counts it and carries on. A bad ``stream`` or ``priority`` is a
        programming error (``ValueError``).
        """
        return self.append_many([(stream, payload, priority)])[0]

    def append_many(self, records: Iterable[tuple[str, Mapping[str, object], int]]) -> list[int]:
        """Store ``(stream, payload, priority)`` records in one transaction, one commit.

        All or nothing: returns their sequence numbers in order, or raises ``OutboxError``
        (as ``append``) having stored none of them. When room must be made, records up to
        the highest priority in the batch may be evicted.
        """
        items = list(records)
        for stream, _, priority in items:
            check_stream(stream)
            check_priority(priority)
        if not items:
            return []
        try:
            rows = [(s, encode(s, p), priority) for s, p, priority in items]
        except OutboxError:
            self.append_failures += len(items)
            raise
        return self.append_encoded(rows)

    def append_encoded(
        self, rows: list[tuple[str, str, int]], created: list[float] | None = None
    ) -> list[int]:
        """``append_many`` for payloads already checked and encoded (``outbox_types.encode``);
        ``created`` keeps the times they were made when they waited in memory first.

        ``OutboxStorageError`` (the file or the disk failed) is counted here and left to the
        caller to log; ``Outbox`` keeps such records in memory and logs the episode once.
        """
        if not rows:
            return []
        self._maintain()
        try:
            seqs = self._store(rows, created=created)
        except OutboxStorageError:
            self.append_failures += len(rows)
            raise
        except OutboxError as exc:
            self.append_failures += len(rows)
            if not self._failing:
                log.error(
                    "outbox_append_failed",
                    file=str(self.path),
                    stream=rows[0][0],
                    error=str(exc),
                )
                self._failing = True
            raise
        if self._failing:
            log.info("outbox_append_recovered", file=str(self.path), failures=self.append_failures)
            self._failing = False
        self._maybe_report()
        return seqs

    def _store(
        self,
        rows: list[tuple[str, str, int]],
        after: After | None = None,
        created: list[float] | None = None,
    ) -> list[int]:
        what = ", ".join(sorted({stream for stream, _, _ in rows}))
        try:
            return self._store_evicting(rows, after, created)
        except sqlite3.DatabaseError as exc:
            if not is_corrupt(exc):
                raise OutboxStorageError(f"cannot append to {what}: {exc}") from exc
            self._recover(exc)
        try:
            return self._store_evicting(rows, after, created)
        except sqlite3.Error as exc:
            raise OutboxStorageError(f"cannot append to {what}: {exc}") from exc

    def _store_evicting(
        self, rows: list[tuple[str, str, int]], after: After | None, created: list[float] | None
    ) -> list[int]:
        """Insert; when the file reaches its bound, evict and try again.

        A full *disk* evicts nothing: deleting rows would not shrink the file, and the
        records already stored are worth more than the new one. That is a storage failure
        (``OutboxStorageError``), which ``Outbox`` rides out in memory.
        """
        top = max(priority for _, _, priority in rows)
        size = sum(len(text) + ROW_OVERHEAD for _, text, _ in rows)
        passes = 0
        while True:
            try:
                seqs = self._insert(rows, after, created)
            except sqlite3.OperationalError as exc:
                if code(exc) != SQLITE_FULL:
                    raise
                if self.max_bytes is None or self._disk_full(size):
                    self.relieve()
                    raise
                if passes >= MAX_EVICTION_PASSES or not self._make_room(top, size, passes):
                    self._count_refused(rows)
                    raise OutboxRefusedError(
                        f"cannot append to {rows[0][0]}: the outbox is full "
                        f"(max_bytes {self.max_bytes}) and nothing may be evicted for it"
                    ) from exc
                passes += 1
            else:
                # Evicting wrote a large transaction to the WAL: look at it now.
                self._relieve_if_pressed(force=passes > 0)
                return seqs

    def _disk_full(self, size: int) -> bool:
        """Whether the file system, not the outbox's bound, is out of room."""
        return self._free_bytes() < size + DISK_MARGIN_BYTES

    def _insert(
        self,
        rows: list[tuple[str, str, int]],
        after: After | None,
        created: list[float] | None = None,
    ) -> list[int]:
        db = self._conn()
        now = self._clock()
        seqs: list[int] = []
        try:
            db.execute("BEGIN IMMEDIATE")
            for i, (stream, text, priority) in enumerate(rows):
                seq = int(db.execute(_NEXT_SEQ, (stream,)).fetchone()[0])
                at = now if created is None else created[i]
                db.execute(INSERT, (stream, seq, priority, at, text))
                seqs.append(seq)
            if after is not None:
                after(db)
            db.execute("COMMIT")
        except BaseException:
            rollback(db)
            raise
        self._unsynced = True
        return seqs

    def _relieve_if_pressed(self, *, force: bool = False) -> None:
        """Checkpoint and truncate the WAL now when it outgrew its share of the budget, or
        when the disk is running out: WAL frames are whole pages, so each small commit costs
        several kilobytes there until a checkpoint folds them into the file.

        Looked at every ``PRESSURE_CHECK_COMMITS`` commits (two system calls each time, a
        fifth of an append's cost when done every time), and after every eviction.
        """
        self._unchecked_commits += 1
        if not force and self._unchecked_commits < PRESSURE_CHECK_COMMITS:
            return
        self._unchecked_commits = 0
        try:
            wal = self._wal_file.stat().st_size
        except OSError:
            return
        over_budget = self.max_bytes is not None and wal > self.wal_bytes
        if over_budget or (wal > MIN_WAL_BYTES and self._free_bytes() < wal * PRESSURE_FACTOR):
            self.relieve()

    def _free_bytes(self) -> int:
        try:
            st = os.statvfs(self._dir)
        except OSError:
            return 0
        return st.f_bavail * st.f_frsize

    def flush(self) -> None:
        """Make every record appended so far survive a power cut (one fsync, when needed)."""
        if not self._unsynced:
            return
        try:
            self._conn().execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error as exc:
            raise OutboxStorageError(f"cannot sync {self.path}: {exc}") from exc
        self._unsynced = False
        if self.max_bytes is not None and self.disk_bytes() > self.max_bytes:
            self.relieve()  # a big transaction grew the WAL past its share
        if time.monotonic() >= self._manifest_due:
            self._write_manifest(clean=False)

    def pending(self, stream: str | None = None, limit: int = 100) -> list[OutboxRecord]:
        """Unacknowledged records, oldest first, ordered by stream then sequence number.

        Everything returned is on stable storage first (``flush``), so a sequence number the
        platform has seen can never be handed out again after a power cut. Records past
        ``max_age_s`` are evicted first, and a due eviction report is appended.
        """
        if limit < 1:
            raise ValueError("limit must be at least 1")
        if stream is not None:
            check_stream(stream)
        self._maintain()
        self._maybe_report()
        self.flush()
        try:
            if stream is None:
                rows = self._conn().execute(_PENDING_ALL, (limit,)).fetchall()
            else:
                rows = self._conn().execute(_PENDING_ONE, (stream, limit)).fetchall()
        except sqlite3.DatabaseError as exc:
            if not is_corrupt(exc):
                raise OutboxStorageError(f"cannot read {self.path}: {exc}") from exc
            self._recover(exc)
            return []
        except sqlite3.Error as exc:
            raise OutboxStorageError(f"cannot read {self.path}: {exc}") from exc
        return [
            OutboxRecord(
                stream=row[0],
                seq=row[1],
                priority=row[2],
                created_at=row[3],
                payload_json=row[4],
                epoch=self.epoch,
            )
            for row in rows
        ]

    def ack(self, stream: str, up_to_seq: int) -> int:
        """Delete the records of ``stream`` up to and including ``up_to_seq``; return how many.

        Sequence numbers are kept per stream apart from the records, so they never go back
        even when every record has been acknowledged.
        """
        check_stream(stream)

        def delete(db: sqlite3.Connection) -> int:
            deleted: int = db.execute(_DELETE, (stream, up_to_seq)).rowcount
            db.execute(_MARK_ACKED, (up_to_seq, stream))
            return deleted

        deleted = self._write(f"acknowledge in {stream}", delete)
        if deleted is None:
            return 0
        # No sync needed: an acknowledgement a power cut rolls back only sends those
        # records once more, and the platform drops them as duplicates.
        if deleted > 0:
            self._end_episode_if_room()
        return max(0, deleted)

    def _write(self, what: str, body: Callable[[sqlite3.Connection], _T]) -> _T | None:
        """``body`` in one write transaction; None if the file was corrupt and replaced (the
        caller's records went with it), OutboxError for any other failure."""
        db = self._conn()
        try:
            db.execute("BEGIN IMMEDIATE")
            result = body(db)
            db.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            rollback(db)
            if not is_corrupt(exc):
                raise OutboxStorageError(f"cannot {what}: {exc}") from exc
            self._recover(exc)
            return None
        except sqlite3.Error as exc:
            rollback(db)
            raise OutboxStorageError(f"cannot {what}: {exc}") from exc
        return result

    def stats(self) -> dict[str, StreamStats]:
        """Per stream: records waiting, age of the oldest, last and acknowledged seq, evictions."""
        try:
            rows = self._conn().execute(_STATS).fetchall()
        except sqlite3.Error as exc:
            raise OutboxStorageError(f"cannot read {self.path}: {exc}") from exc
        now = self._clock()
        result = {
            stream: StreamStats(
                count=count,
                oldest_age_s=None if oldest is None else max(0.0, now - oldest),
                last_seq=last_seq,
                acked_seq=acked_seq,
                evicted=dict(self._evictions.get(stream, {})),
            )
            for stream, last_seq, acked_seq, count, oldest in rows
        }
        for stream, per in self._evictions.items():
            if stream not in result:  # refused before it ever stored a record
                result[stream] = StreamStats(
                    count=0, oldest_age_s=None, last_seq=0, acked_seq=0, evicted=dict(per)
                )
        return dict(sorted(result.items()))
