"""The audit trail: every command and automatic action, who asked, what was read back.

IEC 62443 and the city's operators both want to know who switched what and whether the
device did it. Records go to the log (so they reach the journal and, later, the uplink) and
to an append-only JSON-lines file in the state directory that survives restarts.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import structlog

log = structlog.get_logger("smartpole.audit")

FILE_NAME = "audit.jsonl"


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


class AuditLog:
    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / FILE_NAME
        self.write_failures = 0

    def record(self, entry: AuditRecord) -> None:
        data = asdict(entry)
        log.info("audit", **data)
        try:
            with self.path.open("a", encoding="utf-8") as out:
                out.write(json.dumps(data, ensure_ascii=False, default=str) + "\n")
                out.flush()
                os.fsync(out.fileno())
        except OSError as exc:
            self.write_failures += 1
            log.error("audit_write_failed", file=str(self.path), error=str(exc))

    def tail(self, count: int) -> list[dict[str, object]]:
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()[-count:]
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in lines if line.strip()]
