"""Last-known point values kept across restarts, written atomically.

After a restart (power cut, watchdog, update) a technician still sees what each point last
read and when, marked stale, instead of a blank table. A write that fails (read-only or full
disk) is logged once and retried at the next flush; it never stops the daemon. A file that
cannot be read is moved aside (``core/quarantine.py``) with an estimate of the points it
held, and the report (``damage``) goes upstream.
"""

from __future__ import annotations

import json
from pathlib import Path

import structlog

from smartpole.agent.core.jsonfile import JsonFile
from smartpole.agent.core.points import PointTable
from smartpole.agent.core.quarantine import Damage, quarantine
from smartpole.agent.core.state_schema import Schema, prepare

log = structlog.get_logger("smartpole.state")

FILE_NAME = "points.json"
FORMAT_VERSION = 1
SCHEMA = Schema("points", FORMAT_VERSION)


class PointStore:
    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / FILE_NAME
        self._file = JsonFile(self.path, "state")
        self.damage: Damage | None = None  # a file found unreadable at ``restore``

    def restore(self, table: PointTable) -> int:
        """Load saved values into ``table`` as stale; return how many were restored."""
        prepare(self.path, SCHEMA)
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return 0
        except OSError as exc:
            log.warning("state_unreadable", file=str(self.path), error=str(exc))
            return 0
        try:
            saved = json.loads(raw)
        except ValueError as exc:
            self._discard(raw, f"not JSON: {exc}")
            return 0
        if not isinstance(saved, dict) or saved.get("version") != FORMAT_VERSION:
            self._discard(raw, "unknown format")
            return 0
        restored = 0
        for item in saved.get("points", []):
            try:
                table.restore(item["device"], item["point"], item["value"], item["timestamp"])
                restored += 1
            except (KeyError, TypeError):
                continue
        return restored

    def _discard(self, raw: bytes, reason: str) -> None:
        """Move the unreadable file aside; the points lost are estimated from its text."""
        begun = raw.count(b'"point":')
        self.damage = quarantine("points", self.path, reason, lost=begun or None, exact=False)

    def flush(self, table: PointTable) -> bool:
        points = [
            sample.to_json()
            for sample in table.snapshot()
            if sample.value is not None and sample.timestamp is not None
        ]
        return self._file.write({"version": FORMAT_VERSION, "points": points})

    @property
    def write_failures(self) -> int:
        return self._file.write_failures
