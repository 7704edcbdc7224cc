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
from smartpole.models.roadside import Participant, RoadsideEvent
from smartpole.models.v2x_messages import V2xMessages


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


class RoadsideOutput:
    """Builds each snapshot's RSM and each batch of event changes' RSI and sends them.

    ``omitted`` counts road users a snapshot could not carry (a type V2X has no code for,
    no finite position); ``rsm``/``rsi`` the payloads handed to the sink.
    """

    def __init__(
        self,
        sink: Sink,
        geo: GeoFrame,
        *,
        rsu_id: str,
        source_id: str,
        rsm_topic: str,
        rsi_topic: str,
    ) -> None:
        self.sink = sink
        self.rsm_topic = rsm_topic
        self.rsi_topic = rsi_topic
        self._messages = V2xMessages(rsu_id, geo.to_latlon, source_id=source_id)
        self.rsm = self.rsi = self.omitted = 0

    def send_snapshot(
        self, participants: list[Participant], *, t_s: float, wall_s: float, captured_s: float
    ) -> None:
        """One snapshot as an RSM (none for an empty road: the standard's list has 1..16
        entries). ``t_s`` is the frame's stream time, ``wall_s`` its capture time on the wall
        clock (``secMark``, ``timeStamp``), ``captured_s`` on the monotonic clock."""
        message = self._messages.rsm(participants, epoch_ms=round(wall_s * 1000.0), t_s=t_s)
        self.omitted += message.omitted
        if message.payload is not None:
            self.sink.send(self.rsm_topic, message.payload, captured_s)
            self.rsm += 1

    def send_events(self, result: FrameResult, *, wall_s: float, captured_s: float) -> None:
        """The frame's roadside event changes as RSI."""
        if result.roadside_events:
            epoch_ms = round(wall_s * 1000.0)
            self._send_events(result.roadside_events, epoch_ms, result.t_s, captured_s)

    def close(self, events: list[RoadsideEvent], *, wall_s: float, t_s: float) -> None:
        """The stream ended: send the last cancellations, and close a file sink."""
        if events:
            self._send_events(events, round(wall_s * 1000.0), t_s, 0.0)
        close = getattr(self.sink, "close", None)
        if callable(close):
            close()

    def _send_events(
        self, events: list[RoadsideEvent], epoch_ms: int, t_s: float, captured_s: float
    ) -> None:
        for payload in self._messages.rsi(events, epoch_ms=epoch_ms, t_s=t_s):
            self.sink.send(self.rsi_topic, payload, captured_s)
            self.rsi += 1
