"""The uplink session number: one per connection attempt, the same in its last will and its
birth, so the platform can pair an ``offline`` with the ``online`` it ends.

It must grow across reconnects and across daemon restarts, so it is persisted: the state
directory's ``uplink-session.json`` holds the last number used, rewritten (atomically) before
each attempt. That is one small write per connection attempt, at most one a second at the
shortest backoff, far less than the telemetry's outbox commits. A file that cannot be read
(damaged, not JSON) restarts the count at the current Unix time in seconds, which is above
any count a pole reaches by connecting, so the numbers still grow; a file that cannot be
written is counted and logged once (``JsonFile``) and the count goes on in memory.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import structlog

from smartpole.agent.core.jsonfile import JsonFile
from smartpole.agent.core.state_schema import Schema, prepare

log = structlog.get_logger("smartpole.uplink")

FILE_NAME = "uplink-session.json"
MAX_FILE_BYTES = 4096
SCHEMA = Schema("uplink_session", 1)  # 1: {"session": n}, the key added


class SessionCounter:
    """``next()`` gives the number of the connection about to be attempted."""

    def __init__(self, state_dir: Path | None, *, wall: Callable[[], float] = time.time) -> None:
        path = None if state_dir is None else state_dir / FILE_NAME
        self._file = None if path is None else JsonFile(path, "uplink_session")
        self._wall = wall
        self.last = self._read()

    @property
    def write_failures(self) -> int:
        return 0 if self._file is None else self._file.write_failures

    def next(self) -> int:
        self.last += 1
        if self._file is not None:
            self._file.write({"version": SCHEMA.current, "session": self.last})
        return self.last

    def _read(self) -> int:
        if self._file is None:
            return 0
        path = self._file.path
        prepare(path, SCHEMA)
        try:
            with path.open("rb") as source:
                raw = source.read(MAX_FILE_BYTES + 1)
        except FileNotFoundError:
            return 0
        except OSError as exc:
            return self._restart(path, exc.strerror or type(exc).__name__)
        try:
            data = json.loads(raw) if len(raw) <= MAX_FILE_BYTES else None
        except (ValueError, UnicodeDecodeError):
            data = None
        number = data.get("session") if isinstance(data, dict) else None
        if not isinstance(number, int) or isinstance(number, bool) or number < 0:
            return self._restart(path, "not a session file")
        return number

    def _restart(self, path: Path, reason: str) -> int:
        start = int(self._wall())
        log.error("uplink_session_file_damaged", file=str(path), reason=reason, restart_at=start)
        return start
