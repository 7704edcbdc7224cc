"""A failed upgrade reaches the platform: the release switcher's history, reported once.

``smartpole-release`` (package/smartpole_release.py) records every activation in
``releases.json`` in the state folder: the release that ended running, or one rolled back,
refused (incomplete, or the pole file fails its check under it) or failed. The pole that
runs after such a failure is the one that can say so: at start, before READY, each
unreported failure goes into the durable outbox as one event (``source: release``), so it
arrives when the uplink returns, and is then marked reported in the file.

Marking happens before READY on purpose: the switcher rewrites the file only after READY
(or after the daemon it started has died), so the two never write it at once. An entry is
marked only once the outbox holds it on disk; one held in memory only (outbox file
unusable) stays unreported and goes again at the next start: twice rather than never.
"""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path
from typing import Any, Final

import structlog

from smartpole.agent.core.jsonfile import JsonFile
from smartpole.agent.core.outbox import Outbox, OutboxError, Priority

log = structlog.get_logger("smartpole.uplink.releases")

FILE_NAME: Final = "releases.json"
FORMAT_VERSION: Final = 1
STREAM: Final = "events"
FAILED: Final = frozenset({"rolled_back", "refused", "failed"})
SHOWN: Final = 5  # history entries in ``diag status``
REASON_CHARS: Final = 500


def release_payload(entry: dict[str, Any]) -> dict[str, object]:
    """The event of one failed activation (``schemas/uplink/event.schema.json``)."""
    at = entry.get("at")
    when = float(at) if isinstance(at, int | float) and _finite(at) else None
    return {
        "source": "release",
        "kind": str(entry["outcome"]),
        "version": str(entry.get("version")),
        "from": entry.get("from") if isinstance(entry.get("from"), str) else None,
        "at": when,
        "reason": str(entry.get("reason") or "")[:REASON_CHARS],
    }


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


class ReleaseHistory:
    """``releases.json`` as the daemon sees it: reports failures, shows the last entries."""

    def __init__(self, state_dir: Path) -> None:
        self._file = JsonFile(state_dir / FILE_NAME, "releases")
        self._data: dict[str, Any] | None = None
        self.problem: str | None = None
        self.reported = 0
        self._load()

    @property
    def entries(self) -> list[dict[str, Any]]:
        history = self._data.get("history") if self._data is not None else None
        return [e for e in history if isinstance(e, dict)] if isinstance(history, list) else []

    def _load(self) -> None:
        path = self._file.path
        try:
            data = json.loads(path.read_bytes())
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            # The switcher owns this file and refuses to go on with it unreadable: it is
            # left where it is for the technician, never moved aside from here.
            self.problem = f"release history {path}: unreadable ({exc})"
            log.warning("releases_unreadable", file=str(path), error=str(exc))
            return
        if not isinstance(data, dict) or data.get("version") != FORMAT_VERSION:
            self.problem = f"release history {path}: unknown format"
            log.warning("releases_unknown_format", file=str(path))
            return
        self._data = data

    def report(self, outbox: Outbox) -> int:
        """Queue each unreported failure once; how many were queued durably now."""
        marked = 0
        for entry in self.entries:
            if entry.get("reported") is not False or entry.get("outcome") not in FAILED:
                continue
            try:
                seq = outbox.append(STREAM, release_payload(entry), priority=Priority.HIGH)
            except OutboxError as exc:  # counted and logged by the outbox
                log.warning("release_report_refused", version=entry.get("version"), error=str(exc))
                break
            log.warning(
                "release_failure_reported",
                version=entry.get("version"),
                outcome=entry.get("outcome"),
                reason=entry.get("reason"),
            )
            if seq is not None:
                entry["reported"] = True
                marked += 1
        if marked and self._data is not None:
            with contextlib.suppress(OSError):
                self._file.write(self._data, indent=1)
        self.reported += marked
        return marked

    def status(self) -> dict[str, object]:
        """For ``diag status``: the last activations, newest last."""
        return {
            "history": self.entries[-SHOWN:],
            "unreported": sum(
                1 for e in self.entries if e.get("reported") is False and e.get("outcome") in FAILED
            ),
            "write_failures": self._file.write_failures,
        }
