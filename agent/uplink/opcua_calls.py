"""What makes an OPC UA method call a platform command like any other: an id, and its answer
on the ``cmd/result`` stream.

A method call has no id of its own, but the command processor remembers ids (it answers a
known one "duplicate" and runs nothing) and the platform correlates answers by id. Each call
gets ``opcua-<n>``, with ``n`` counted in a state file that is written (fsync, rename)
before the id is used, so ids never repeat across restarts. If the file cannot be written,
the ids of this run carry a random part as well (``opcua-<n>-<8 hex>``), which keeps them
unique; the failure is logged once and counted (``diag uplink``: ``opcua.call_id_write_failures``).

The answer of every call, in the one result shape (``command_answers.answer``) plus
``actor`` (``opcua:<user>``: the platform did not send this command, so it learns who
did), goes into the outbox's ``cmd_result`` stream when the command ends: a call answered
"pending" reports its result later, when the command finishes.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import structlog

from smartpole.agent.core.jsonfile import JsonFile
from smartpole.agent.core.outbox import Outbox, OutboxError, Priority
from smartpole.agent.core.state_schema import Schema, prepare
from smartpole.agent.uplink.topics import COMMAND_RESULT_STREAM

log = structlog.get_logger("smartpole.uplink.opcua")

FILE_NAME = "opcua_calls.json"
PREFIX = "opcua-"
SCHEMA = Schema("opcua_call_ids", 1)  # 1: {"next": n}, the key added

Report = Callable[[Mapping[str, Any]], None]


class CallIds:
    """``opcua-1``, ``opcua-2`` ... continued across restarts."""

    def __init__(self, path: Path) -> None:
        self._file = JsonFile(path, "opcua_call_ids")
        self._suffix = ""
        self._next = self._load(path)

    @property
    def write_failures(self) -> int:
        return self._file.write_failures

    def _load(self, path: Path) -> int:
        prepare(path, SCHEMA)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return 1
        except OSError as exc:
            log.warning("opcua_call_ids_unreadable", file=str(path), error=str(exc))
            self._suffix = f"-{secrets.token_hex(4)}"
            return 1
        try:
            value = json.loads(text)["next"]
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"next is {value!r}")
        except (ValueError, KeyError, TypeError) as exc:
            # Starting over at 1 could reuse an id the processor still remembers.
            log.warning("opcua_call_ids_unreadable", file=str(path), error=str(exc))
            self._suffix = f"-{secrets.token_hex(4)}"
            return 1
        return value

    def next(self) -> str:
        number = self._next
        self._next += 1
        written = self._file.write({"version": SCHEMA.current, "next": self._next})
        if not written and not self._suffix:
            self._suffix = f"-{secrets.token_hex(4)}"  # the file may hold an older n now
        return f"{PREFIX}{number}{self._suffix}"


def outbox_report(outbox: Outbox, notify: Callable[[], None] | None = None) -> Report:
    """Answers of OPC UA calls onto ``cmd/result``, as the MQTT uplink queues its own."""

    def report(result: Mapping[str, Any]) -> None:
        try:
            outbox.append(COMMAND_RESULT_STREAM, result, priority=Priority.HIGH)
            outbox.flush()
        except OutboxError:
            return  # counted and logged once by the outbox
        if notify is not None:
            notify()

    return report
