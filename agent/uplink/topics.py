"""The topic scheme under ``smartpole/v1/<pole_id>/`` (docs/uplink.md describes it)."""

from __future__ import annotations

from dataclasses import dataclass

PREFIX = "smartpole/v1"

# Outbox stream -> topic suffix. Streams not listed here go to a topic of their own name.
STREAM_TOPICS: dict[str, str] = {
    "telemetry": "telemetry",
    "alarms": "alarms",
    "traffic": "traffic",
    "events": "events",
    "cmd_result": "cmd/result",
}
# Drain order across streams (lower first): what the platform must act on goes first,
# bulk telemetry last. Within a stream the order is always the sequence number's.
STREAM_RANK: dict[str, int] = {
    "cmd_result": 0,
    "alarms": 0,
    "events": 1,
    "traffic": 2,
    "telemetry": 3,
}
DEFAULT_RANK = 2
COMMAND_RESULT_STREAM = "cmd_result"


@dataclass(frozen=True)
class Topics:
    pole_id: str

    @property
    def base(self) -> str:
        return f"{PREFIX}/{self.pole_id}"

    @property
    def state(self) -> str:
        return f"{self.base}/state"

    @property
    def meta(self) -> str:
        """Retained: every point's description (``agent/uplink/meta.py``)."""
        return f"{self.base}/meta"

    @property
    def command(self) -> str:
        return f"{self.base}/cmd"

    @property
    def command_result(self) -> str:
        return f"{self.base}/cmd/result"

    def for_stream(self, stream: str) -> str:
        return f"{self.base}/{STREAM_TOPICS.get(stream, stream)}"


def stream_rank(stream: str) -> int:
    return STREAM_RANK.get(stream, DEFAULT_RANK)
