"""The outbox file's schema version (``PRAGMA user_version``): migrated forward, kept for the
release before, set aside when a newer release wrote it.

The same rules as the JSON state files (``state_schema.py``), for a database: before the
first step rewrites an older file, the file as it was is copied (SQLite's backup API, so the
copy holds what its WAL held too) to ``outbox.sqlite3.schema-<old>`` by way of a temporary
name; the steps then run inside the one transaction ``connect`` opens, with the new
``user_version``, so a crash leaves the old file or the migrated one. A file of a newer
version (a rollback) is never salvaged (its tables may mean something else): it goes to
``outbox.sqlite3.from-schema-<N>`` whole, and the copy this release left at the upgrade takes
its place, or the outbox starts empty. Either way the records the newer release queued since
are not sent by this one: reported upstream as a store damage and listed by ``diag status``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Final

import structlog

from smartpole.agent.core.quarantine import Damage
from smartpole.agent.core.state_schema import (
    LEDGER,
    SchemaLedger,
    SetAside,
    copy_name,
    newer_name,
)

log = structlog.get_logger("smartpole.outbox")

Step = Callable[[sqlite3.Connection], None]

# N -> the step from version N to N + 1. None yet: version 1 is the first with a number.
MIGRATIONS: Final[Mapping[int, Step]] = {}


def keep_copy(db: sqlite3.Connection, path: Path, version: int) -> Path | None:
    """The file as ``version`` wrote it, kept for that release; None (logged) if it could not
    be: the migration goes on, since this release needs its outbox more than a rollback."""
    copy = copy_name(path, version)
    tmp = copy.with_name(copy.name + ".tmp")
    try:
        tmp.unlink(missing_ok=True)
        target = sqlite3.connect(tmp)
        try:
            db.backup(target)
            target.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
        finally:
            target.close()
        with tmp.open("rb") as written:
            os.fsync(written.fileno())
        tmp.replace(copy)
    except (OSError, sqlite3.Error) as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        log.error("outbox_schema_copy_failed", file=str(path), copy=str(copy), error=str(exc))
        return None
    return copy


def migrate(db: sqlite3.Connection, version: int, current: int, steps: Mapping[int, Step]) -> None:
    """Run the steps from ``version`` to ``current`` inside the caller's open transaction."""
    for n in range(version, current):
        steps[n](db)


def set_aside_newer(
    path: Path, version: int, known: int, now: float, *, ledger: SchemaLedger = LEDGER
) -> Damage:
    """Move a newer release's file out of the way; put this release's copy in its place if
    there is one. Every step is a rename or a link: a crash leaves the newer file in place
    (done again at the next start) or the job done."""
    aside = newer_name(path, version)
    copy: Path | None = copy_name(path, known)
    staged = path.with_name(path.name + ".tmp-copy")
    try:
        if copy is not None and _version(copy) == known:
            shutil.copyfile(copy, staged)
            with staged.open("rb") as written:
                os.fsync(written.fileno())
        else:
            copy = None
        _keep(path, aside)
        wal = path.with_name(path.name + "-wal")
        if wal.exists():
            wal.replace(aside.with_name(aside.name + "-wal"))
        path.with_name(path.name + "-shm").unlink(missing_ok=True)
        if copy is not None:
            staged.replace(path)
        else:
            path.unlink(missing_ok=True)
    except OSError as exc:
        with contextlib.suppress(OSError):
            staged.unlink()
        raise OSError(f"cannot set aside {path} of a newer release: {exc}") from exc
    ledger.set_aside.append(SetAside(path, version, known, aside, copy, now))
    damage = Damage(
        store="outbox",
        file=str(path),
        moved_to=str(aside),
        reason=f"written by a newer release (version {version}, this release knows {known})"
        + (f"; continued from {copy.name}" if copy is not None else "; started empty"),
        lost=None,
        exact=False,
        at=now,
    )
    damage.log()
    return damage


def _keep(path: Path, aside: Path) -> None:
    """``aside`` becomes the newer file while ``path`` still is (a hard link, or a copy where
    links are not supported), replacing an older one kept there."""
    tmp = aside.with_name(aside.name + ".tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(path, tmp)
    except OSError:
        shutil.copyfile(path, tmp)
    tmp.replace(aside)


def _version(path: Path) -> int | None:
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error:
        return None
    try:
        return int(db.execute("PRAGMA user_version").fetchone()[0])
    except sqlite3.Error:
        return None
    finally:
        db.close()
