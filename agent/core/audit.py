"""The audit trail: every command and automatic action, who asked, what was read back.

IEC 62443 and the city's operators both want to know who switched what and whether the
device did it. Records go to the log (so they reach the journal and, later, the uplink) and
to an append-only JSON-lines file in the state directory that survives restarts.

A power cut mid-write can leave a torn line (half a record, no newline). The reader skips
and counts such lines instead of failing on them (``tail``, ``torn_lines``), and ``salvage``
(at the daemon's start) moves a file with torn lines aside, keeps its good lines in a fresh
one, and reports the loss: otherwise the next record would be appended onto the torn
line and be lost with it.

Each line carries its own schema version (``"version"``, ``core/state_schema.py``), not the
file a header: the file is only ever appended to, by whichever release runs, so after an
upgrade and a rollback it holds lines of both. A line of an older version is brought forward
as it is read; one of a newer version is skipped and counted (``newer_lines``), never
misread, and kept in the file for the release that wrote it.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import structlog

from smartpole.agent.core.quarantine import Damage, aside_name
from smartpole.agent.core.state_schema import KEY, Schema

log = structlog.get_logger("smartpole.audit")

FILE_NAME = "audit.jsonl"
SCHEMA = Schema("audit", 1)  # 1: a record per line, as AuditRecord has it


@dataclass
class AuditRecord:
    actor: str  # "cli:uid=0", "mqtt:<client>", "agent:lighting" ...
    action: str  # "write", "ptz_preset", ...
    target: str  # "lamp1.dim_level"
    requested: object
    ok: bool = False
    read_back: object = None
    error: str | None = None
    at: float = field(default_factory=time.time)
    # Set when ``actor`` is "unauthenticated": the actor a rejected command named (a claim).
    claimed_actor: str | None = None
    # A platform or OPC UA command's id, as its answer on cmd/result carries it.
    command_id: str | None = None


class AuditLog:
    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / FILE_NAME
        self.write_failures = 0
        self.torn_lines = 0  # lines skipped by the last read (``tail``): not JSON records
        self.newer_lines = 0  # lines skipped by the last read: a newer release's version

    def record(self, entry: AuditRecord) -> None:
        data = asdict(entry)
        log.info("audit", **data)
        try:
            with self.path.open("a", encoding="utf-8") as out:
                line = {**data, KEY: SCHEMA.current}
                out.write(json.dumps(line, ensure_ascii=False, default=str) + "\n")
                out.flush()
                os.fsync(out.fileno())
        except OSError as exc:
            self.write_failures += 1
            log.error("audit_write_failed", file=str(self.path), error=str(exc))

    def tail(self, count: int) -> list[dict[str, object]]:
        """The last ``count`` records; torn lines are skipped and counted (``torn_lines``)."""
        try:
            text = self.path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            self.torn_lines = self.newer_lines = 0
            return []
        records, torn, newer = _parse(text)
        self.torn_lines, self.newer_lines = len(torn), newer
        return records[-count:] if count > 0 else []

    def salvage(self, now: float | None = None) -> Damage | None:
        """At start: a file with torn lines is moved aside and its good records kept in a
        fresh one; the loss is logged and returned for upstream. None when all is well."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("audit_unreadable", file=str(self.path), error=str(exc))
            return None
        text = raw.decode("utf-8", errors="replace")
        records, torn_lines, _ = _parse(text)
        if not torn_lines:
            return None
        # A record appended onto a torn one shares its line: count the records begun there.
        begun = [max(1, line.count('"actor":')) for line in torn_lines]
        torn = len(torn_lines)
        at = time.time() if now is None else now
        target = aside_name(self.path, at)
        fresh = self.path.with_name(self.path.name + ".tmp")
        try:
            with fresh.open("w", encoding="utf-8") as out:
                torn_set = set(torn_lines)
                for line in text.splitlines():  # as written: a newer release's lines too
                    if line.strip() and line not in torn_set:
                        out.write(line + "\n")
                out.flush()
                os.fsync(out.fileno())
            self.path.replace(target)
            fresh.replace(self.path)
            moved: str | None = str(target)
        except OSError as exc:
            log.warning("audit_salvage_failed", file=str(self.path), error=str(exc))
            moved = None  # left as it is: the reader skips the torn lines
        damage = Damage(
            store="audit",
            file=str(self.path),
            moved_to=moved,
            reason=f"{torn} torn lines",
            lost=sum(begun),
            exact=all(n == 1 for n in begun),
            recovered=len(records),
            at=at,
        )
        damage.log()
        return damage


def _parse(text: str) -> tuple[list[dict[str, object]], list[str], int]:
    """The records of a JSON-lines text (in this release's version), the non-blank lines
    that were not records, and how many records were of a version this release cannot read."""
    records: list[dict[str, object]] = []
    torn: list[str] = []
    newer = 0
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            torn.append(line)
            continue
        if not isinstance(record, dict):
            torn.append(line)
            continue
        version = SCHEMA.version_of(record)
        if version is None or version > SCHEMA.current:
            newer += 1
        else:
            records.append(SCHEMA.upgrade(record, version) if version < SCHEMA.current else record)
    return records, torn, newer
