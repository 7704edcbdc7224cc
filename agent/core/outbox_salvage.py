"""Reading what is left of an unusable outbox file, and knowing what it held.

A damaged file is moved aside by the store (``outbox_store.py``) and read here, on a
scratch copy, for whatever records survive; they go into the fresh file. How many were
lost is the other half: the damaged file itself often cannot say (a zero-length or
truncated file has lost its tables along with its records), so the store keeps a small
*manifest* next to it, ``outbox.counts.json``: the epoch and, per stream, the last and
acknowledged sequence numbers and the number of records waiting. It is written when the
file is opened, at most every ``MANIFEST_INTERVAL_S`` while records are made durable, and
at a clean close (``clean: true``: then it matches the file exactly). A loss is counted
from the larger of what the damaged file's own index says and what the manifest expected;
it is exact only when the manifest was written at a clean close of that very file, an
estimate otherwise, and unknown (``None``) when neither source exists.
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

import structlog

from smartpole.agent.core.jsonfile import JsonFile
from smartpole.agent.core.outbox_eviction import REASONS
from smartpole.agent.core.state_schema import Schema, prepare

log = structlog.get_logger("smartpole.outbox")

MANIFEST_NAME: Final = "outbox.counts.json"
MANIFEST_VERSION: Final = 1
MANIFEST_SCHEMA: Final = Schema("outbox_manifest", MANIFEST_VERSION)
MANIFEST_INTERVAL_S: Final = 10.0

Record = tuple[str, int, int, float, str]  # stream, seq, priority, created_at, payload


@dataclass(frozen=True)
class Manifest:
    """What the outbox held when the manifest was written."""

    epoch: str
    clean: bool  # written at a clean close: exactly what the file held then
    streams: dict[str, tuple[int, int, int]]  # stream -> last seq, acked seq, waiting


class ManifestFile:
    """The manifest of one outbox file; a write that fails is logged once, never raised."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / MANIFEST_NAME
        self._file = JsonFile(self.path, "outbox_manifest")
        prepare(self.path, MANIFEST_SCHEMA)

    def read(self) -> Manifest | None:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict) or data.get("version") != MANIFEST_VERSION:
            return None
        epoch, streams = data.get("epoch"), data.get("streams")
        if not isinstance(epoch, str) or not isinstance(streams, dict):
            return None
        parsed: dict[str, tuple[int, int, int]] = {}
        for stream, counts in streams.items():
            if (
                isinstance(counts, list)
                and len(counts) == 3
                and all(isinstance(n, int) and not isinstance(n, bool) for n in counts)
            ):
                parsed[stream] = (counts[0], counts[1], counts[2])
        return Manifest(epoch=epoch, clean=data.get("clean") is True, streams=parsed)

    def write(self, epoch: str, streams: dict[str, tuple[int, int, int]], *, clean: bool) -> bool:
        return self._file.write(
            {
                "version": MANIFEST_VERSION,
                "epoch": epoch,
                "clean": clean,
                "streams": {s: list(counts) for s, counts in sorted(streams.items())},
            }
        )


@dataclass
class Salvage:
    """What could be read from an unusable outbox file."""

    epoch: str | None = None
    streams: dict[str, tuple[int, int]] = field(default_factory=dict)  # last, acked seq
    streams_complete: bool = False  # the whole streams table was read
    records: list[Record] = field(default_factory=list)
    evictions: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)
    lost: dict[str, int] = field(default_factory=dict)  # records not recovered, per stream
    counted: bool = False  # the file's own index or counters gave a count to compare with

    def usable_epoch(self) -> str | None:
        """The old epoch, if sequence numbers can safely continue in it.

        Only when the sequence counters were read whole: otherwise a number the platform
        has already seen (acknowledged, so no longer in the file) could be handed out again.
        """
        return self.epoch if self.streams_complete else None


@dataclass(frozen=True)
class Loss:
    """Records of a damaged file that are gone: per stream, the total, and how sure."""

    per_stream: dict[str, int]
    known: bool  # False: neither the file nor a manifest could say ("unknown")
    exact: bool

    @property
    def total(self) -> int | None:
        return sum(self.per_stream.values()) if self.known else None


def count_loss(found: Salvage, manifest: Manifest | None) -> Loss:
    """The larger of what the file's index and the manifest say is gone, per stream."""
    lost = Counter(found.lost)
    usable = manifest is not None and (found.epoch is None or found.epoch == manifest.epoch)
    if manifest is not None and usable:
        for stream, (last, acked, waiting) in manifest.streams.items():
            kept = sum(1 for r in found.records if r[0] == stream and acked < r[1] <= last)
            lost[stream] = max(lost[stream], waiting - kept)
    per_stream = {s: n for s, n in sorted(lost.items()) if n > 0}
    exact = usable and manifest is not None and manifest.clean
    return Loss(per_stream=per_stream, known=usable or found.counted, exact=exact)


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
    if counted is None and found.streams_complete:  # upper bound: all not acknowledged
        counted = {s: max(0, last - acked) for s, (last, acked) in found.streams.items()}
    found.counted = counted is not None
    counted = counted or {}
    for stream, count in counted.items():
        if isinstance(stream, str) and count > recovered[stream]:
            found.lost[stream] = int(count) - recovered[stream]


def _read_records(db: sqlite3.Connection, stream_ok: re.Pattern[str]) -> list[Record]:
    """Walk the records table by rowid, skipping over pages that cannot be read."""
    out: list[Record] = []
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
