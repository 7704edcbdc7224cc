"""Schema versions of the JSON state files: migrated forward on read, never misread after a
rollback.

A pole is upgraded and, when the new release does not come up, rolled back, both remotely
and unattended. So a state file may be read by a release newer than the one that wrote it
(an upgrade) or older (a rollback). Each kind of file declares a ``Schema``: the version this
release writes and the steps (``N`` -> ``N + 1``) that bring an older file forward. The
version lives in the file's top-level ``"version"`` key, the key nine of the files already
carried as their format number (a second key beside it would have to move in step with it,
or a release that checks only ``"version"`` would misread); a file without it is
``unversioned`` (version 1: today's formats).

``prepare`` runs before a store reads its file, and leaves it in this release's version:

- older: the file as it was is first kept as ``<name>.schema-<old>`` (atomic copy), for the
  release that wrote it should the pole be rolled back; then the steps run and the file is
  replaced atomically. A crash between the two leaves the old file in place and the copy
  beside it: the next start does both again.
- newer (a rollback): never read as if it were ours. The newer file is kept as
  ``<name>.from-schema-<N>``; the copy this release's own version left behind at the upgrade
  (``<name>.schema-<ours>``) is put in its place, or, without one, the store starts afresh.
  Either is logged once and recorded in ``LEDGER``, which ``diag status`` lists as problems.
- the same version, no file, or one that is not JSON: left alone; the store's own reader
  handles damage as it always did (``core/quarantine.py``).

The outbox database keeps its version in ``PRAGMA user_version`` (``outbox_file.py``) and
the audit log one per line (``audit.py``); both reuse ``Schema.upgrade`` and the copy names.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import structlog

log = structlog.get_logger("smartpole.state")

KEY: Final = "version"

Step = Callable[[Any], Any]


class SchemaError(Exception):
    """A schema declared wrong (a gap in its steps): a programming error, caught by tests."""


@dataclass(frozen=True)
class Schema:
    """One kind of state file: ``store`` names it in logs and problems."""

    store: str
    current: int
    steps: Mapping[int, Step] = field(default_factory=dict)  # N -> the step N to N + 1
    unversioned: int = 1  # the version of a file without the key

    def __post_init__(self) -> None:
        if not 0 <= self.unversioned <= self.current:
            raise SchemaError(f"{self.store}: unversioned {self.unversioned} > {self.current}")
        wanted = set(range(self.unversioned, self.current))
        if set(self.steps) != wanted:
            raise SchemaError(f"{self.store}: steps {sorted(self.steps)} != {sorted(wanted)}")

    def version_of(self, data: object) -> int | None:
        """The version ``data`` says it has; None when its key holds no whole number."""
        if not isinstance(data, dict) or KEY not in data:
            return self.unversioned
        value = data[KEY]
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    def upgrade(self, data: Any, version: int) -> Any:
        """``data`` of ``version`` (< ``current``) brought to ``current``, one step at a time;
        each result is stamped with the version it now has."""
        if version < self.unversioned:
            raise SchemaError(f"{self.store}: no step from version {version}")
        for n in range(version, self.current):
            data = self.steps[n](data)
            if isinstance(data, dict):
                data = {**data, KEY: n + 1}
        return data


@dataclass(frozen=True)
class SetAside:
    """A file written by a newer release than this one, moved out of the store's way."""

    file: Path
    version: int
    known: int
    moved_to: Path
    copy: Path | None  # the copy used in its place; None: the store started afresh
    at: float

    def problem(self) -> str:
        then = f"using {self.copy.name}" if self.copy is not None else "started afresh"
        return (
            f"state file {self.file}: written by a newer release (version {self.version}, "
            f"this release knows {self.known}); set aside as {self.moved_to.name}, {then}"
        )


@dataclass
class SchemaLedger:
    """What ``prepare`` did in this process: migrations and set-aside files."""

    set_aside: list[SetAside] = field(default_factory=list)
    migrated: int = 0
    failed: list[tuple[Path, int, str]] = field(default_factory=list)  # file, version, why

    @property
    def migrate_failures(self) -> int:
        return len(self.failed)

    def problems(self, state_dir: Path) -> list[str]:
        """The set-aside files and failed migrations of ``state_dir`` (one process serves
        one state dir; tests run several)."""
        found = [item.problem() for item in self.set_aside if item.file.parent == state_dir]
        found.extend(
            f"state file {file}: migrating it from version {version} failed ({why}); "
            f"read as it is, the file as it was kept as {copy_name(file, version).name}"
            for file, version, why in self.failed
            if file.parent == state_dir
        )
        return found

    def counts(self) -> dict[str, int]:
        """For ``diag status``: what this process did to its state files."""
        return {
            "migrated": self.migrated,
            "set_aside": len(self.set_aside),
            "migrate_failures": self.migrate_failures,
        }


LEDGER: Final = SchemaLedger()


def copy_name(path: Path, version: int) -> Path:
    """Where the file as version ``version`` wrote it is kept for that release."""
    return path.with_name(f"{path.name}.schema-{version}")


def newer_name(path: Path, version: int) -> Path:
    return path.with_name(f"{path.name}.from-schema-{version}")


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` by ``data``: the old content or the new, never part of each."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with tmp.open("wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        tmp.replace(path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def prepare(
    path: Path, schema: Schema, *, ledger: SchemaLedger = LEDGER, now: float | None = None
) -> None:
    """Leave ``path`` in ``schema.current`` (see the module docstring); never raises for what
    is on disk: a failure is logged and the store reads what is there, as before."""
    try:
        raw = path.read_bytes()
        data = json.loads(raw)
    except (OSError, ValueError):
        return  # missing, unreadable or not JSON: the store's own reader says so
    version = schema.version_of(data)
    if version is None or version == schema.current:
        return
    if version > schema.current:
        _set_aside(path, schema, version, ledger, time.time() if now is None else now)
    elif version >= schema.unversioned:
        _migrate(path, schema, data, raw, version, ledger)


def _migrate(
    path: Path, schema: Schema, data: Any, raw: bytes, version: int, ledger: SchemaLedger
) -> None:
    copy = copy_name(path, version)
    try:
        write_atomic(copy, raw)  # first: the old release's file, whatever happens next
        upgraded = schema.upgrade(data, version)
        write_atomic(path, json.dumps(upgraded, ensure_ascii=False).encode())
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        why = f"{type(exc).__name__}: {exc}"
        ledger.failed.append((path, version, why))
        log.error(
            "state_migrate_failed",
            file=str(path),
            store=schema.store,
            version=version,
            to=schema.current,
            error=why,
        )
        return
    ledger.migrated += 1
    log.info(
        "state_migrated",
        file=str(path),
        store=schema.store,
        version=version,
        to=schema.current,
        kept=str(copy),
    )


def _set_aside(path: Path, schema: Schema, version: int, ledger: SchemaLedger, now: float) -> None:
    """A newer file: kept under ``from-schema-N``; our own copy, if any, put in its place."""
    aside = newer_name(path, version)
    mine = _own_copy(copy_name(path, schema.current), schema)
    copy = None if mine is None else copy_name(path, schema.current)
    try:
        if mine is None:
            path.replace(aside)
        else:
            # Two atomic steps, the newer file replaced only once it is kept: a crash
            # between them leaves it in place, and the next start does both again.
            write_atomic(aside, path.read_bytes())
            write_atomic(path, mine)
    except OSError as exc:
        # Left in place: the store's own version check refuses it as an unknown format.
        log.error("state_newer_set_aside_failed", file=str(path), error=str(exc))
        return
    entry = SetAside(path, version, schema.current, aside, copy, now)
    ledger.set_aside.append(entry)
    log.warning(
        "state_from_newer_release",
        file=str(path),
        store=schema.store,
        version=version,
        known=schema.current,
        moved_to=str(aside),
        using=None if copy is None else str(copy),
    )


def _own_copy(copy: Path, schema: Schema) -> bytes | None:
    """The copy of this release's version, if there is one that says it is that version."""
    try:
        mine = copy.read_bytes()
        if schema.version_of(json.loads(mine)) == schema.current:
            return mine
    except (OSError, ValueError):
        pass
    return None
