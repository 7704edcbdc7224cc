"""Command ids already seen, with their answers: the replay cache, kept across restarts.

MQTT QoS 1 redelivers a command whose acknowledgement was lost, also after the agent
restarted; a power cycle must still happen once. Every id is written (fsync, atomic
replace) *before* the command runs, marked pending, and again with its answer afterwards.
If the agent dies in between, the redelivery is answered "duplicate" with an unknown
outcome instead of running the command a second time: for switching street equipment,
at most once is the safe side.

The timestamp window alone does not stop a replay: it is judged on the wall clock, which a
bad NTP answer or an RTC reset can step by days and back. So an id is forgotten only when
``keep_s`` (at least twice the window) has passed on *both* clocks since it arrived: on the
wall clock (the window has moved past it, whatever it was issued at) and on the monotonic
clock (that time really passed, it was not a step). A wall clock stepped forward cannot age
ids, and one stepped back keeps them longer. After a restart the monotonic age of a
remembered id is unknown, so it counts from the start. Only an accepted command makes room
(``begin``): a rejected one never prunes. The cache is bounded by count; when it is full of
ids still inside their window, the new command is refused (``CacheFullError``) rather than
an old id forgotten early.

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

from smartpole.agent.core.clock import SYSTEM_CLOCK, Clock
from smartpole.agent.core.jsonfile import JsonFile
from smartpole.agent.core.state_schema import Schema, prepare

log = structlog.get_logger("smartpole.commands")

STORE_FILE = "commands.json"
STORE_VERSION = 1
SCHEMA = Schema("commands", STORE_VERSION)


class CacheFullError(Exception):
    """Every remembered id is still inside its window: forgetting one would allow a replay."""


@dataclass
class Seen:
    at: float  # when it arrived (wall clock, epoch seconds); persisted
    mono: float  # when it arrived (monotonic); the start for ids loaded from the file
    result: dict[str, Any] | None  # None: it was running when the agent stopped
    issued_at: float | None = None  # the platform's signed time; None in older files


class CommandStore:
    def __init__(
        self, path: Path, keep_s: float, max_entries: int, clock: Clock = SYSTEM_CLOCK
    ) -> None:
        self.path = path
        self._keep_s = keep_s
        self._max = max_entries
        self._clock = clock
        self._file = JsonFile(path, "command_store")
        self._seen: dict[str, Seen] = {}  # insertion order is arrival order
        self.quarantined = False
        self.refused_full = 0
        self.forgotten_until: float | None = None  # the newest issued_at of a forgotten id
        self._load()

    @property
    def write_failures(self) -> int:
        return self._file.write_failures

    def __len__(self) -> int:
        return len(self._seen)

    def _load(self) -> None:
        prepare(self.path, SCHEMA)
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return
        except (OSError, UnicodeDecodeError) as exc:
            self._quarantine(str(exc))
            return
        started = self._clock.monotonic()
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
                issued = entry.get("issued_at")
                self._seen[command_id] = Seen(
                    float(entry["at"]), started, result, None if issued is None else float(issued)
                )
            until = data.get("forgotten_until")
            self.forgotten_until = None if until is None else float(until)
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

    def _expired(self, seen: Seen, wall: float, mono: float) -> bool:
        return wall - seen.at > self._keep_s and mono - seen.mono > self._keep_s

    def _prune(self) -> None:
        """Forget the oldest ids whose time has passed on both clocks (in memory only; the
        file follows with the next write)."""
        wall, mono = self._clock.time(), self._clock.monotonic()
        while self._seen:
            command_id, seen = next(iter(self._seen.items()))
            if not self._expired(seen, wall, mono):
                break
            del self._seen[command_id]
            if seen.issued_at is not None:
                self.forgotten_until = max(self.forgotten_until or seen.issued_at, seen.issued_at)

    def begin(self, command_id: str, issued_at: float) -> bool:
        """Remember ``command_id`` as running; False when that could not be written.

        Raises ``CacheFullError`` (nothing remembered, the command must not run) when the
        cache is full of ids that may not be forgotten yet.
        """
        self._prune()
        if len(self._seen) >= self._max:
            self.refused_full += 1
            raise CacheFullError(
                f"{len(self._seen)} command ids are remembered, the most allowed, and none "
                f"is older than {self._keep_s:g} s on both clocks"
            )
        self._seen[command_id] = Seen(self._clock.time(), self._clock.monotonic(), None, issued_at)
        return self._save()

    def finish(self, command_id: str, result: dict[str, Any]) -> bool:
        seen = self._seen.get(command_id)
        if seen is not None:
            seen.result = result
        return self._save()

    def _save(self) -> bool:
        commands = {
            cid: {"at": s.at, "issued_at": s.issued_at, "result": s.result}
            for cid, s in self._seen.items()
        }
        data = {"version": STORE_VERSION, "forgotten_until": self.forgotten_until}
        return self._file.write({**data, "commands": commands})
