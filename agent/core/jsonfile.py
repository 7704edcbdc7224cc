"""A JSON state file replaced atomically, its write failures logged once and counted.

Several parts of the agent keep small state on disk (last point values, active alarms,
overrides, power-cycle attempts, lamp accounts). Each must survive a power cut mid-write
(temporary file, fsync, rename: the old file or the new one, never half of each) and a
full or read-only disk (count it, log it once when it starts and once when it clears,
keep running).
"""

from __future__ import annotations

import json
from pathlib import Path

import structlog

from smartpole.agent.core.quarantine import Damage, quarantine
from smartpole.agent.core.state_schema import Schema, prepare, write_atomic

log = structlog.get_logger("smartpole.state")


class JsonFile:
    def __init__(self, path: Path, name: str) -> None:
        """``name`` prefixes the log events: ``<name>_write_failed`` / ``_write_recovered``."""
        self.path = path
        self._name = name
        self._failing = False
        self.write_failures = 0

    def write(self, data: object, *, indent: int | None = None) -> bool:
        try:
            write_atomic(self.path, json.dumps(data, ensure_ascii=False, indent=indent).encode())
        except OSError as exc:
            self.write_failures += 1
            if not self._failing:
                log.error(f"{self._name}_write_failed", file=str(self.path), error=str(exc))
                self._failing = True
            return False
        if self._failing:
            log.info(f"{self._name}_write_recovered", file=str(self.path))
            self._failing = False
        return True


def read_versioned(path: Path, schema: Schema) -> tuple[dict[str, object] | None, Damage | None]:
    """A state file written as ``{"version": schema.current, ...}`` (an older one migrated
    first, ``state_schema.py``): its content, or None when there is none. A file that is not
    that (torn, foreign, another version) is moved aside and the report comes back for
    upstream; one that cannot be read at all is logged and left."""
    store, version = schema.store, schema.current
    prepare(path, schema)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        log.warning(f"{store}_unreadable", file=str(path), error=str(exc))
        return None, None
    try:
        data = json.loads(raw)
    except ValueError as exc:
        return None, quarantine(store, path, f"not JSON: {exc}", lost=None, exact=False)
    if not isinstance(data, dict) or data.get("version") != version:
        return None, quarantine(store, path, "unknown format", lost=None, exact=False)
    return data, None
