"""The outbox's nouns, shared by the file store (``outbox_store.py``) and the outbox that
callers hold (``outbox.py``): records, priorities, the errors, and the checks of a stream name
and a payload that both apply before anything is stored."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import TypedDict

from smartpole.agent.core.errors import AgentError

STREAM_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class OutboxError(AgentError):
    """The outbox could not do what was asked (disk full, I/O error, closed).

    The caller counts it and keeps running: a full disk must never stop lighting control or
    alarm handling, it only means this record will not reach the platform.
    """


class OutboxStorageError(OutboxError):
    """The file could not be opened, written or synced (full disk, I/O error, a directory
    in its place): the storage failed, not the record. ``Outbox`` keeps the record in memory
    and tries again; only the file store itself raises it."""


class OutboxRefusedError(OutboxError):
    """No room within ``max_bytes`` even after evicting what may be evicted: the record is
    refused and counted (reason ``refused``), as the bounds intend; retrying cannot help."""


class Priority(IntEnum):
    """How urgently the uplink should drain a record; higher goes first."""

    LOW = 0
    NORMAL = 1
    HIGH = 2


@dataclass(frozen=True)
class OutboxRecord:
    stream: str
    seq: int
    priority: int
    created_at: float  # wall clock, seconds since the epoch
    payload_json: str  # as stored: the uplink sends it on without decoding it again
    epoch: str  # with stream and seq, the platform's de-duplication key

    @property
    def payload(self) -> dict[str, object]:
        decoded: dict[str, object] = json.loads(self.payload_json)
        return decoded

    def to_json(self) -> dict[str, object]:
        return {
            "epoch": self.epoch,
            "stream": self.stream,
            "seq": self.seq,
            "priority": self.priority,
            "created_at": self.created_at,
            "payload": self.payload,
        }


class StreamStats(TypedDict):
    count: int  # records waiting for an acknowledgement
    oldest_age_s: float | None  # age of the oldest waiting record; None when none wait
    last_seq: int  # the last sequence number handed out (0: never)
    acked_seq: int  # the highest sequence number acknowledged
    evicted: dict[str, int]  # records evicted or refused since the file was made, per reason


def encode(stream: str, payload: Mapping[str, object]) -> str:
    try:
        return json.dumps(dict(payload), ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise OutboxError(f"payload for {stream} is not JSON: {exc}") from exc


def check_priority(priority: object) -> None:
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise ValueError(f"priority must be an int, not {priority!r}")


def check_stream(stream: str) -> None:
    if not isinstance(stream, str) or not STREAM_PATTERN.match(stream):
        raise ValueError(f"invalid outbox stream name {stream!r}")
