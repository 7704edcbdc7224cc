"""A camera's frame results as V2X messages, handed to a sink: the RSU's broker or a file.

The worker's sink is the publisher (``v2x_publisher``): real time, dropped when the broker
is away, never queued. ``smartpole analyze --rsm`` uses ``JsonLinesSink``, which writes the
same topics and payloads to a file, so a recording shows what the live camera would send.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol, TextIO

from smartpole.models.geo import GeoFrame
from smartpole.models.pipeline_results import FrameResult
from smartpole.models.roadside import RoadsideEvent
from smartpole.models.roadside_stage import RoadsideSettings
from smartpole.models.v2x_messages import ParticipantIds, RsiBuilder, RsmBuilder


class Sink(Protocol):
    """Where messages go; ``captured_s`` is the capture time (monotonic) of the frame the
    message is from, so a sink on the wire can measure the latency."""

    def send(self, topic: str, payload: dict[str, Any], captured_s: float) -> None: ...


class JsonLinesSink:
    """``{"topic": ..., "payload": ...}`` per line, in a file opened here and closed by
    ``close``; ``OSError`` if it cannot be written."""

    def __init__(self, path: Path) -> None:
        self._file: TextIO = path.open("w", encoding="utf-8")

    def send(self, topic: str, payload: dict[str, Any], captured_s: float) -> None:
        self._file.write(json.dumps({"topic": topic, "payload": payload}) + "\n")

    def close(self) -> None:
        self._file.close()


def rsm_topic(rsu_id: str, vendor: str) -> str:
    """OpenV2X's uplink topic for roadside safety messages."""
    return f"V2X/RSU/{rsu_id}/RSM/UP/{vendor}"


def rsi_topic(rsu_id: str, vendor: str) -> str:
    """OpenV2X's uplink topic for roadside information (events)."""
    return f"V2X/RSU/{rsu_id}/RSI/UP/{vendor}"


class RoadsideOutput:
    """Builds each snapshot's RSM and each batch of event changes' RSI and sends them."""

    def __init__(
        self,
        sink: Sink,
        geo: GeoFrame,
        *,
        rsu_id: str,
        vendor: str,
        settings: RoadsideSettings,
    ) -> None:
        self.sink = sink
        self.settings = settings
        self._rsm_topic = rsm_topic(rsu_id, vendor)
        self._rsi_topic = rsi_topic(rsu_id, vendor)
        self._rsm = RsmBuilder(rsu_id, geo, ParticipantIds())
        self._rsi = RsiBuilder(rsu_id, geo)

    def on_frame(self, result: FrameResult, *, wall_s: float, captured_s: float = 0.0) -> None:
        """Send what this frame produced; ``wall_s`` is its capture time on the wall clock
        (the messages' ``secMark`` and ``timeStamp``)."""
        if result.participants is not None:
            payload = self._rsm.build(result.participants, wall_s)
            self.sink.send(self._rsm_topic, payload, captured_s)
        if result.roadside_events:
            self._send_events(result.roadside_events, wall_s, captured_s)

    def close(self, events: list[RoadsideEvent], *, wall_s: float) -> None:
        """The stream ended: send the last cancellations, and close a file sink."""
        if events:
            self._send_events(events, wall_s, 0.0)
        close = getattr(self.sink, "close", None)
        if callable(close):
            close()

    def _send_events(self, events: list[RoadsideEvent], wall_s: float, captured_s: float) -> None:
        self.sink.send(self._rsi_topic, self._rsi.build(events, wall_s), captured_s)
