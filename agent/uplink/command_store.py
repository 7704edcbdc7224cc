"""Command ids already seen, with their answers, kept across restarts.

MQTT QoS 1 redelivers a command whose acknowledgement was lost, also after the agent
restarted; a power cycle must still happen once. Every id is written (fsync, atomic
replace) *before* the command runs, marked pending, and again with its answer afterwards.
If the agent dies in between, the redelivery is answered "duplicate" with an unknown
outcome instead of running the command a second time: for switching street equipment,
at most once is the safe side.

A file that cannot be read is moved aside (``commands.json.corrupt``) and the agent
continues with an empty memory: the timestamp window still refuses old replays.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from smartpole.agent.core.jsonfile import JsonFile

log = structlog.get_logger("smartpole.commands")

STORE_FILE = "commands.json"
STORE_VERSION = 1


@dataclass
class Seen:
    at: float  # when it arrived (wall clock, epoch seconds)
    result: dict[str, Any] | None  # None: it was running when the agent stopped


class CommandStore:
    def __init__(self, path: Path, keep_s: float, max_entries: int) -> None:
        self.path = path
        self._keep_s = keep_s
        self._max = max_entries
        self._file = JsonFile(path, "command_store")
        self._seen: dict[str, Seen] = {}  # insertion order is arrival order
        self.quarantined = False
        self.evicted_early = 0
        self._load()

    @property
    def write_failures(self) -> int:
        return self._file.write_failures

    def __len__(self) -> int:
        return len(self._seen)

    def _load(self) -> None:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return
        except (OSError, UnicodeDecodeError) as exc:
            self._quarantine(str(exc))
            return
        try:
            data = json.loads(text)
            if data.get("version") != STORE_VERSION:
                raise ValueError(f"unknown version {data.get('version')!r}")
            entries = sorted(data["commands"].items(), key=lambda item: float(item[1]["at"]))
            for command_id, entry in entries:
                result = entry["result"]
                if not isinstance(command_id, str) or not (
                    result is None or isinstance(result, dict)
                ):
                    raise ValueError(f"bad entry for {command_id!r}")
                self._seen[command_id] = Seen(float(entry["at"]), result)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            self._seen.clear()
            self._quarantine(f"{type(exc).__name__}: {exc}")

    def _quarantine(self, problem: str) -> None:
        self.quarantined = True
        aside = self.path.with_name(self.path.name + ".corrupt")
        with contextlib.suppress(OSError):
            self.path.replace(aside)
        log.error("command_store_unreadable", file=str(self.path), moved_to=str(aside),
                  problem=problem)  # fmt: skip

    def get(self, command_id: str) -> Seen | None:
        return self._seen.get(command_id)

    def prune(self, now: float) -> None:
        """Forget ids older than ``keep_s`` (only in memory; written with the next change)."""
        while self._seen:
            command_id, seen = next(iter(self._seen.items()))
            if now - seen.at <= self._keep_s:
                break
            del self._seen[command_id]

    def begin(self, command_id: str, now: float) -> bool:
        """Remember ``command_id`` as running; False when that could not be written."""
        while len(self._seen) >= self._max:
            del self._seen[next(iter(self._seen))]
            self.evicted_early += 1
        self._seen[command_id] = Seen(now, None)
        return self._save()

    def finish(self, command_id: str, result: dict[str, Any]) -> bool:
        seen = self._seen.get(command_id)
        if seen is not None:
            seen.result = result
        return self._save()

    def _save(self) -> bool:
        commands = {cid: {"at": s.at, "result": s.result} for cid, s in self._seen.items()}
        return self._file.write({"version": STORE_VERSION, "commands": commands})
