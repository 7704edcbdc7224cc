"""The on-disk outbox: everything that must reach the platform is written here first.

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
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import sqlite3
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from types import TracebackType
from typing import Final, TypedDict

import structlog

from smartpole.agent.errors import AgentError

log = structlog.get_logger("smartpole.outbox")

FILE_NAME = "outbox.sqlite3"
SCHEMA_VERSION = 1
BUSY_TIMEOUT_S = 1.0  # only this process writes; a reader (diag) holds a lock briefly at most
STREAM_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

# SQLite primary result codes (the low byte of the extended code Python reports).
_SQLITE_CORRUPT: Final = 11
_SQLITE_NOTADB: Final = 26

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS streams (
    stream TEXT PRIMARY KEY,
    last_seq INTEGER NOT NULL,
    acked_seq INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS records (
    stream TEXT NOT NULL,
    seq INTEGER NOT NULL,
    priority INTEGER NOT NULL,
    created_at REAL NOT NULL,
    payload TEXT NOT NULL,
    PRIMARY KEY (stream, seq)
);
"""
_NEXT_SEQ = (
    "INSERT INTO streams (stream, last_seq) VALUES (?, 1) "
    "ON CONFLICT (stream) DO UPDATE SET last_seq = last_seq + 1 RETURNING last_seq"
)
_INSERT = "INSERT INTO records (stream, seq, priority, created_at, payload) VALUES (?, ?, ?, ?, ?)"
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


class OutboxError(AgentError):
    """The outbox could not do what was asked (disk full, I/O error, closed).

    The caller counts it and keeps running: a full disk must never stop lighting control or
    alarm handling, it only means this record will not reach the platform.
    """


class Priority(IntEnum):
    """How urgently the uplink should drain a record; higher goes first."""

    LOW = 0
    NORMAL = 1
    HIGH = 2


@dataclass(frozen=True)
class OutboxRecord:
    stream: str
    seq: int
    priority: int
    created_at: float  # wall clock, seconds since the epoch
    payload: dict[str, object]
    epoch: str  # with stream and seq, the platform's de-duplication key

    def to_json(self) -> dict[str, object]:
        return {
            "epoch": self.epoch,
            "stream": self.stream,
            "seq": self.seq,
            "priority": self.priority,
            "created_at": self.created_at,
            "payload": self.payload,
        }


class StreamStats(TypedDict):
    count: int  # records waiting for an acknowledgement
    oldest_age_s: float | None  # age of the oldest waiting record; None when none wait
    last_seq: int  # the last sequence number handed out (0: never)
    acked_seq: int  # the highest sequence number acknowledged


class _UnusableFileError(Exception):
    """The file is not a usable outbox database (corrupt, foreign, newer format)."""


class Outbox:
    """One connection to ``<state_dir>/outbox.sqlite3``; owned by the event loop's thread.

    ``max_bytes`` bounds the file so a long outage cannot fill the disk that the state and
    audit files share; reaching it makes ``append`` raise ``OutboxError`` like a full disk.
    """

    def __init__(
        self,
        state_dir: Path,
        *,
        max_bytes: int | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = state_dir / FILE_NAME
        self.max_bytes = max_bytes
        self.append_failures = 0
        self.recoveries = 0  # corrupt files moved aside since start
        self._clock = clock
        self._failing = False
        self._unsynced = False
        self._db: sqlite3.Connection | None = None
        self.epoch = ""
        self._db = self._open()

    # -- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> Outbox:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            self._db = None

    def _open(self) -> sqlite3.Connection:
        """Open the file, or move an unusable one aside and start a fresh one."""
        try:
            return self._connect()
        except (sqlite3.DatabaseError, _UnusableFileError) as exc:
            if isinstance(exc, sqlite3.DatabaseError) and not _is_corrupt(exc):
                raise OutboxError(f"cannot open {self.path}: {exc}") from exc
            self._move_aside(str(exc))
        try:
            return self._connect()
        except (sqlite3.DatabaseError, _UnusableFileError) as exc:
            raise OutboxError(f"cannot create {self.path}: {exc}") from exc

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: no implicit transactions; each method runs its own.
        db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        try:
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                log.warning("outbox_not_wal", file=str(self.path), journal_mode=mode)
            db.execute("PRAGMA synchronous=NORMAL")  # see the module docstring
            checked = db.execute("PRAGMA quick_check(1)").fetchone()[0]
            if checked != "ok":
                raise _UnusableFileError(f"integrity check failed: {checked}")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION):
                raise _UnusableFileError(f"unknown outbox format version {version}")
            if version == 0 and db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
                raise _UnusableFileError("an SQLite database, but not an outbox")
            db.execute("BEGIN IMMEDIATE")
            _create_schema(db)
            row = db.execute("SELECT value FROM meta WHERE key = 'epoch'").fetchone()
            if row is None:
                epoch = secrets.token_hex(8)
                db.execute("INSERT INTO meta (key, value) VALUES ('epoch', ?)", (epoch,))
            else:
                epoch = str(row[0])
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            db.execute("COMMIT")
            if self.max_bytes is not None:
                page_size = db.execute("PRAGMA page_size").fetchone()[0]
                pages = max(1, self.max_bytes // int(page_size))
                db.execute(f"PRAGMA max_page_count = {pages}")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                db.close()
            raise
        self.epoch = epoch
        return db

    def _move_aside(self, reason: str) -> None:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(self._clock()))
        target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        counter = 1
        while target.exists():
            counter += 1
            target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}.{counter}")
        try:
            if self.path.exists():
                self.path.replace(target)
            # The write-ahead log belongs to the old file; keep it with it for forensics.
            wal = self.path.with_name(self.path.name + "-wal")
            if wal.exists():
                wal.replace(target.with_name(target.name + "-wal"))
            self.path.with_name(self.path.name + "-shm").unlink(missing_ok=True)
        except OSError as exc:
            raise OutboxError(f"cannot move unusable {self.path} aside: {exc}") from exc
        self.recoveries += 1
        log.error(
            "outbox_corrupt_moved_aside", file=str(self.path), moved_to=str(target), error=reason
        )

    def _recover(self, exc: sqlite3.DatabaseError) -> None:
        """The file went bad while open (torn flash page): move it aside, start afresh."""
        self.close()
        self._move_aside(str(exc))
        self._unsynced = False
        self._db = self._open()

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise OutboxError("the outbox is closed")
        return self._db

    # -- the API ---------------------------------------------------------------------------

    def append(self, stream: str, payload: Mapping[str, object], *, priority: int) -> int:
        """Store one record and return its sequence number in ``stream``.

        Raises ``OutboxError`` when the record could not be stored (disk full, I/O error,
        ``max_bytes`` reached, payload not representable as JSON); the caller counts it and
        carries on. A bad ``stream`` or ``priority`` is a programming error (``ValueError``).
        """
        _check_stream(stream)
        if isinstance(priority, bool) or not isinstance(priority, int):
            raise ValueError(f"priority must be an int, not {priority!r}")
        try:
            seq = self._append(stream, payload, priority)
        except OutboxError as exc:
            self.append_failures += 1
            if not self._failing:
                log.error(
                    "outbox_append_failed", file=str(self.path), stream=stream, error=str(exc)
                )
                self._failing = True
            raise
        if self._failing:
            log.info("outbox_append_recovered", file=str(self.path), failures=self.append_failures)
            self._failing = False
        return seq

    def _append(self, stream: str, payload: Mapping[str, object], priority: int) -> int:
        try:
            text = json.dumps(
                dict(payload), ensure_ascii=False, separators=(",", ":"), allow_nan=False
            )
        except (TypeError, ValueError) as exc:
            raise OutboxError(f"payload for {stream} is not JSON: {exc}") from exc
        try:
            return self._insert(stream, text, priority)
        except sqlite3.DatabaseError as exc:
            if not _is_corrupt(exc):
                raise OutboxError(f"cannot append to {stream}: {exc}") from exc
            self._recover(exc)
        except sqlite3.Error as exc:
            raise OutboxError(f"cannot append to {stream}: {exc}") from exc
        try:
            return self._insert(stream, text, priority)
        except sqlite3.Error as exc:
            raise OutboxError(f"cannot append to {stream}: {exc}") from exc

    def _insert(self, stream: str, text: str, priority: int) -> int:
        db = self._conn()
        try:
            db.execute("BEGIN IMMEDIATE")
            seq = int(db.execute(_NEXT_SEQ, (stream,)).fetchone()[0])
            db.execute(_INSERT, (stream, seq, priority, self._clock(), text))
            db.execute("COMMIT")
        except BaseException:
            _rollback(db)
            raise
        self._unsynced = True
        return seq

    def flush(self) -> None:
        """Make every record appended so far survive a power cut (one fsync, when needed)."""
        if not self._unsynced:
            return
        try:
            self._conn().execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error as exc:
            raise OutboxError(f"cannot sync {self.path}: {exc}") from exc
        self._unsynced = False

    def pending(self, stream: str | None = None, limit: int = 100) -> list[OutboxRecord]:
        """Unacknowledged records, oldest first, ordered by stream then sequence number.

        Everything returned is on stable storage first (``flush``), so a sequence number the
        platform has seen can never be handed out again after a power cut.
        """
        if limit < 1:
            raise ValueError("limit must be at least 1")
        if stream is not None:
            _check_stream(stream)
        self.flush()
        try:
            if stream is None:
                rows = self._conn().execute(_PENDING_ALL, (limit,)).fetchall()
            else:
                rows = self._conn().execute(_PENDING_ONE, (stream, limit)).fetchall()
        except sqlite3.DatabaseError as exc:
            if not _is_corrupt(exc):
                raise OutboxError(f"cannot read {self.path}: {exc}") from exc
            self._recover(exc)
            return []
        except sqlite3.Error as exc:
            raise OutboxError(f"cannot read {self.path}: {exc}") from exc
        return [
            OutboxRecord(
                stream=row[0],
                seq=row[1],
                priority=row[2],
                created_at=row[3],
                payload=json.loads(row[4]),
                epoch=self.epoch,
            )
            for row in rows
        ]

    def ack(self, stream: str, up_to_seq: int) -> int:
        """Delete the records of ``stream`` up to and including ``up_to_seq``; return how many.

        Sequence numbers are kept per stream apart from the records, so they never go back
        even when every record has been acknowledged.
        """
        _check_stream(stream)
        db = self._conn()
        try:
            db.execute("BEGIN IMMEDIATE")
            deleted = db.execute(_DELETE, (stream, up_to_seq)).rowcount
            db.execute(_MARK_ACKED, (up_to_seq, stream))
            db.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            _rollback(db)
            if not _is_corrupt(exc):
                raise OutboxError(f"cannot acknowledge in {stream}: {exc}") from exc
            self._recover(exc)
            return 0
        except sqlite3.Error as exc:
            _rollback(db)
            raise OutboxError(f"cannot acknowledge in {stream}: {exc}") from exc
        self._unsynced = True
        return max(0, deleted)

    def stats(self) -> dict[str, StreamStats]:
        """Per stream: records waiting, age of the oldest, last and acknowledged seq."""
        try:
            rows = self._conn().execute(_STATS).fetchall()
        except sqlite3.Error as exc:
            raise OutboxError(f"cannot read {self.path}: {exc}") from exc
        now = self._clock()
        return {
            stream: StreamStats(
                count=count,
                oldest_age_s=None if oldest is None else max(0.0, now - oldest),
                last_seq=last_seq,
                acked_seq=acked_seq,
            )
            for stream, last_seq, acked_seq, count, oldest in rows
        }


def _create_schema(db: sqlite3.Connection) -> None:
    # executescript() would COMMIT the open transaction first; run statement by statement.
    for statement in _SCHEMA.split(";"):
        if statement.strip():
            db.execute(statement)


def _rollback(db: sqlite3.Connection) -> None:
    if db.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            db.execute("ROLLBACK")


def _is_corrupt(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
    return code in (_SQLITE_CORRUPT, _SQLITE_NOTADB)


def _check_stream(stream: str) -> None:
    if not isinstance(stream, str) or not STREAM_PATTERN.match(stream):
        raise ValueError(f"invalid outbox stream name {stream!r}")
