"""Last-known point values kept across restarts, written atomically.

After a restart (power cut, watchdog, update) a technician still sees what each point last
read and when, marked stale, instead of a blank table. A write that fails (read-only or full
disk) is logged once and retried at the next flush; it never stops the daemon.
"""

from __future__ import annotations

import json
from pathlib import Path

import structlog

from smartpole.agent.core.jsonfile import JsonFile
from smartpole.agent.core.points import PointTable

log = structlog.get_logger("smartpole.state")

FILE_NAME = "points.json"
FORMAT_VERSION = 1


class PointStore:
    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / FILE_NAME
        self._file = JsonFile(self.path, "state")

    def restore(self, table: PointTable) -> int:
        """Load saved values into ``table`` as stale; return how many were restored."""
        try:
            saved = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return 0
        except (OSError, ValueError) as exc:
            log.warning("state_unreadable", file=str(self.path), error=str(exc))
            return 0
        if not isinstance(saved, dict) or saved.get("version") != FORMAT_VERSION:
            log.warning("state_ignored", file=str(self.path), reason="unknown format")
            return 0
        restored = 0
        for item in saved.get("points", []):
            try:
                table.restore(item["device"], item["point"], item["value"], item["timestamp"])
                restored += 1
            except (KeyError, TypeError):
                continue
        return restored

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
