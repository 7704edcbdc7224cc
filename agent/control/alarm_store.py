"""The alarm store: active alarms, watched sensors and recent history in one JSON file.

Split out of ``alarms.py`` so the file format and how it is written live apart from the
alarm state machine. ``AlarmManager`` loads the store once at start, so a restart neither
forgets an alarm nor raises it a second time, and saves it after every transition. The file
is written atomically (as ``agent/state.py`` does: a temporary file, fsync, rename). A write
that fails is logged once and reported to the caller, who retries it later (the manager
does at the next transition or ``tick``); it never stops the daemon. A file that cannot be
read or has an unknown format is moved aside (``core/quarantine.py``) with an estimate of the
active alarms it held, and the report (``damage``) goes upstream: the manager starts empty.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from smartpole.agent.control.alarm_types import Alarm, AlarmEvent
from smartpole.agent.core.jsonfile import JsonFile
from smartpole.agent.core.quarantine import Damage, quarantine
from smartpole.agent.core.state_schema import Schema, prepare

__all__ = ["FORMAT_VERSION", "AlarmStore", "SavedAlarms"]

log = structlog.get_logger("smartpole.alarms")

FORMAT_VERSION = 1
SCHEMA = Schema("alarms", FORMAT_VERSION)


@dataclass(frozen=True)
class SavedAlarms:
    """What a store file held, each part checked for its shape only."""

    active: list[Any]  # entries as ``Alarm.to_json`` wrote them; the manager restores them
    watched: list[tuple[str, str]]  # (source, kind) pairs whose sensor-lost timer runs
    history: list[Any]  # entries as ``AlarmEvent.to_json`` wrote them

    def events(self) -> Iterator[AlarmEvent]:
        """The history entries that still parse, oldest first; the others are dropped."""
        for item in self.history:
            if not isinstance(item, dict):
                continue
            try:
                event = AlarmEvent.from_json(item)
            except (KeyError, TypeError, ValueError):
                continue
            yield event


class AlarmStore:
    """The store file of one ``AlarmManager``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = JsonFile(path, "alarm_store")
        self._failing = False
        self.damage: Damage | None = None  # a file found unreadable at ``load``

    @property
    def write_failures(self) -> int:
        return self._file.write_failures

    @property
    def failing(self) -> bool:
        """True from a failed write until the next one that succeeds."""
        return self._failing

    def load(self) -> SavedAlarms | None:
        """What the file holds; None when there is none, or it is unreadable or unknown."""
        prepare(self.path, SCHEMA)
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("alarm_store_unreadable", file=str(self.path), error=str(exc))
            return None
        try:
            saved = json.loads(raw)
        except ValueError as exc:
            self._discard(raw, f"not JSON: {exc}")
            return None
        if not isinstance(saved, dict) or saved.get("version") != FORMAT_VERSION:
            self._discard(raw, "unknown format")
            return None
        watched = [
            (pair[0], pair[1])
            for pair in _list(saved.get("watched"))
            if isinstance(pair, list) and len(pair) == 2 and all(isinstance(p, str) for p in pair)
        ]
        return SavedAlarms(
            active=_list(saved.get("active")),
            watched=watched,
            history=_list(saved.get("history")),
        )

    def _discard(self, raw: bytes, reason: str) -> None:
        """Move the unreadable file aside; the active alarms lost are estimated from its
        text (each active entry has a ``raised_at``; history entries do not)."""
        begun = raw.count(b'"raised_at":')
        self.damage = quarantine("alarms", self.path, reason, lost=begun or None, exact=False)

    def save(
        self,
        active: Iterable[Alarm],
        watched: Iterable[tuple[str, str]],
        history: Iterable[AlarmEvent],
    ) -> bool:
        """Replace the file atomically; False (logged once until it works again) on failure."""
        data = {
            "version": FORMAT_VERSION,
            "active": [alarm.to_json() for alarm in active],
            "watched": [list(key) for key in watched],
            "history": [event.to_json() for event in history],
        }
        self._failing = not self._file.write(data)
        return not self._failing


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []
