"""An outbox file on disk: its schema, opening it, and replacing one that is unusable.

Split from the store (``outbox_store.py``), which owns the connection and the counters: here
is what knows the file itself. ``connect`` opens or creates it and checks it is an outbox
(integrity, format version, not a foreign database); ``empty_file_reason`` catches the
zero-length file SQLite would silently take for a new one; ``move_aside`` keeps an unusable
file (and its WAL) under a timestamped name; ``restore`` copies what ``outbox_salvage.py``
could read from it into the fresh file; ``bound`` keeps the file and its WAL within
``max_bytes``.
"""

from __future__ import annotations

import contextlib
import secrets
import sqlite3
from collections.abc import Mapping
from pathlib import Path
from typing import Final

import structlog

from smartpole.agent.core.outbox_eviction import CORRUPT
from smartpole.agent.core.outbox_salvage import Loss, Salvage
from smartpole.agent.core.outbox_schema import (
    MIGRATIONS,
    Step,
    keep_copy,
    migrate,
    set_aside_newer,
)
from smartpole.agent.core.outbox_types import OutboxStorageError
from smartpole.agent.core.quarantine import Damage, aside_name

log = structlog.get_logger("smartpole.outbox")

SCHEMA_VERSION: Final = 1
BUSY_TIMEOUT_S: Final = 1.0  # only this process writes; a reader (diag) holds a lock briefly

# SQLite primary result codes (the low byte of the extended code Python reports).
SQLITE_CORRUPT: Final = 11
SQLITE_NOTADB: Final = 26
SQLITE_FULL: Final = 13

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
CREATE INDEX IF NOT EXISTS records_by_age ON records (priority, created_at);
CREATE TABLE IF NOT EXISTS evictions (
    stream TEXT NOT NULL,
    reason TEXT NOT NULL,
    total INTEGER NOT NULL,
    reported INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (stream, reason)
);
"""
INSERT = "INSERT INTO records (stream, seq, priority, created_at, payload) VALUES (?, ?, ?, ?, ?)"
COUNT_EVICTIONS = (
    "INSERT INTO evictions (stream, reason, total) VALUES (?, ?, ?) "
    "ON CONFLICT (stream, reason) DO UPDATE SET total = total + excluded.total"
)


class UnusableFileError(Exception):
    """The file is not a usable outbox database (corrupt, foreign, newer format)."""


class NewerFileError(UnusableFileError):
    """Written by a newer release (a rollback): set aside whole, never salvaged."""

    def __init__(self, version: int) -> None:
        super().__init__(f"outbox format version {version} is newer than {SCHEMA_VERSION}")
        self.version = version


def connect_current(path: Path, now: float) -> tuple[sqlite3.Connection, str, list[Damage]]:
    """``connect``, after setting aside a newer release's file (``outbox_schema.py``) if that
    is what was there; the damage report of that, for upstream."""
    try:
        return (*connect(path), [])
    except NewerFileError as exc:
        try:
            damage = set_aside_newer(path, exc.version, SCHEMA_VERSION, now)
        except OSError as moving:
            raise OutboxStorageError(str(moving)) from moving
    return (*connect(path), [damage])


def connect(
    path: Path, *, current: int = SCHEMA_VERSION, steps: Mapping[int, Step] = MIGRATIONS
) -> tuple[sqlite3.Connection, str]:
    """Open (or create) the outbox at ``path``; its connection and epoch. An older file is
    migrated to ``current`` by ``steps`` (``outbox_schema.py``), a copy kept first.

    ``NewerFileError`` for a newer release's file; ``UnusableFileError`` (or a corrupt
    ``sqlite3.DatabaseError``) for a file that is not a usable outbox: the caller moves it
    aside."""
    # isolation_level=None: no implicit transactions; each method runs its own.
    db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    try:
        mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            log.warning("outbox_not_wal", file=str(path), journal_mode=mode)
        db.execute("PRAGMA synchronous=NORMAL")  # see the module docstring
        checked = db.execute("PRAGMA quick_check(1)").fetchone()[0]
        if checked != "ok":
            raise UnusableFileError(f"integrity check failed: {checked}")
        version = int(db.execute("PRAGMA user_version").fetchone()[0])
        if version > current:
            raise NewerFileError(version)
        if version < 0:
            raise UnusableFileError(f"unknown outbox format version {version}")
        if version == 0 and db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
            raise UnusableFileError("an SQLite database, but not an outbox")
        older = 0 < version < current
        if older:
            keep_copy(db, path, version)
        db.execute("BEGIN IMMEDIATE")
        if older:
            migrate(db, version, current, steps)
        _create_schema(db)
        row = db.execute("SELECT value FROM meta WHERE key = 'epoch'").fetchone()
        if row is None:
            epoch = secrets.token_hex(8)
            db.execute("INSERT INTO meta (key, value) VALUES ('epoch', ?)", (epoch,))
        else:
            epoch = str(row[0])
        db.execute(f"PRAGMA user_version = {current}")
        db.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            db.close()
        raise
    return db, epoch


def empty_file_reason(path: Path) -> str | None:
    """Why an existing file is unusable before SQLite looks: a zero-length file (with no
    WAL to rebuild it from) would open as a fresh, empty database and hide its loss."""
    try:
        if not path.is_file() or path.stat().st_size > 0:
            return None
        wal = path.with_name(path.name + "-wal")
        if wal.is_file() and wal.stat().st_size > 0:
            return None
    except OSError:
        return None
    return "zero-length file"


def bound(db: sqlite3.Connection, max_bytes: int, wal_bytes: int) -> None:
    """Keep the database and its WAL together within ``max_bytes``.

    The WAL gets ``WAL_SHARE`` of the budget: checkpointed (automatically, on commit)
    when half full, and truncated back to its share after each checkpoint
    (``journal_size_limit``); the database's pages are capped to the rest.
    """
    page_size = int(db.execute("PRAGMA page_size").fetchone()[0])
    wal_pages = max(1, wal_bytes // page_size)
    pages = max(1, (max_bytes - wal_bytes) // page_size)
    db.execute(f"PRAGMA max_page_count = {pages}")
    db.execute(f"PRAGMA journal_size_limit = {wal_bytes}")
    db.execute(f"PRAGMA wal_autocheckpoint = {max(1, wal_pages // 2)}")


def disk_bytes(path: Path) -> int:
    """Bytes the database and its WAL take on disk (the ``-shm`` index not counted)."""
    total = 0
    for part in (path, path.with_name(path.name + "-wal")):
        with contextlib.suppress(OSError):
            total += part.stat().st_size
    return total


def restore(db: sqlite3.Connection, found: Salvage, loss: Loss) -> str | None:
    """Copy what was salvaged from an unusable file into the fresh one, in one transaction;
    return the old epoch if it was kept. ``sqlite3.Error`` leaves the fresh file empty.

    The old epoch is kept when its sequence counters were read whole, so the platform
    sees the lost records as gaps in the numbering it knows; otherwise the fresh file's
    new epoch stands and the salvaged records keep their numbers within it.
    """
    kept = found.usable_epoch()
    last = {stream: seqs[0] for stream, seqs in found.streams.items()}
    for stream, seq, *_ in found.records:
        last[stream] = max(last.get(stream, 0), seq)
    try:
        db.execute("BEGIN IMMEDIATE")
        if kept is not None:
            db.execute("UPDATE meta SET value = ? WHERE key = 'epoch'", (kept,))
        db.executemany(
            "INSERT INTO streams (stream, last_seq, acked_seq) VALUES (?, ?, ?)",
            [(s, n, min(n, found.streams.get(s, (0, 0))[1])) for s, n in last.items()],
        )
        db.executemany(INSERT, found.records)
        db.executemany(
            "INSERT INTO evictions (stream, reason, total, reported) VALUES (?, ?, ?, ?)",
            [(s, r, t, p) for (s, r), (t, p) in found.evictions.items()],
        )
        db.executemany(COUNT_EVICTIONS, [(s, CORRUPT, n) for s, n in loss.per_stream.items()])
        db.execute("COMMIT")
    except BaseException:
        rollback(db)
        raise
    return kept


def move_aside(path: Path, now: float) -> Path:
    """Rename an unusable file, with its WAL, to a timestamped name beside it."""
    target = aside_name(path, now)
    try:
        if path.exists():
            path.replace(target)
        # The write-ahead log belongs to the old file; keep it with it for forensics.
        wal = path.with_name(path.name + "-wal")
        if wal.exists():
            wal.replace(target.with_name(target.name + "-wal"))
        path.with_name(path.name + "-shm").unlink(missing_ok=True)
    except OSError as exc:
        raise OutboxStorageError(f"cannot move unusable {path} aside: {exc}") from exc
    return target


def code(exc: sqlite3.Error) -> int:
    return int(getattr(exc, "sqlite_errorcode", 0)) & 0xFF


def _create_schema(db: sqlite3.Connection) -> None:
    # executescript() would COMMIT the open transaction first; run statement by statement.
    for statement in _SCHEMA.split(";"):
        if statement.strip():
            db.execute(statement)


def rollback(db: sqlite3.Connection) -> None:
    if db.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            db.execute("ROLLBACK")


def is_corrupt(exc: sqlite3.Error) -> bool:
    return code(exc) in (SQLITE_CORRUPT, SQLITE_NOTADB)
