"""A camera's frame results as V2X messages, handed to a sink: the RSU's broker or a file.

The worker's sink is the publisher (``v2x_publisher``): real time, dropped when the broker
is away, never queued. ``smartpole analyze --rsm`` uses ``JsonLinesSink``, which writes the
same topics and payloads to a file, so a recording shows what the live camera would send.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol, TextIO

from smartpole.drivers.lifecycle import Closing
from smartpole.models.geo import GeoFrame
from smartpole.models.pipeline_results import FrameResult
from smartpole.models.roadside import RoadsideEvent
from smartpole.models.roadside_stage import RoadsideStage
from smartpole.models.v2x_messages import V2xMessages


class Sink(Protocol):
    """Where messages go; ``captured_s`` is the capture time (monotonic) of the frame an
    RSM is from, so a sink on the wire can measure its latency; None for an RSI."""

    def send(self, topic: str, payload: dict[str, Any], captured_s: float | None) -> None: ...


class JsonLinesSink(Closing):
    """``{"topic": ..., "payload": ...}`` per line, in a file opened here; ``OSError`` if it
    cannot be written."""

    def __init__(self, path: Path) -> None:
        self._file: TextIO = path.open("w", encoding="utf-8")

    def send(self, topic: str, payload: dict[str, Any], captured_s: float | None) -> None:
        self._file.write(json.dumps({"topic": topic, "payload": payload}) + "\n")

    def close(self) -> None:
        self._file.close()


class RoadsideOutput:
    """A pipeline's roadside stage, frame by frame, as RSM and RSI handed to a sink: the
    worker and ``analyze --rsm`` both drive it, so a recording gives what the camera sends.

    Per frame, ``before_frame`` (the snapshot due at the frame, made before the frame is
    analysed: ``roadside_stage`` says why), then ``after_frame`` with the frame's result;
    ``finish`` at the end of the stream. ``wall_s`` is the frame's capture on the wall clock
    (``secMark``, ``timeStamp``), ``captured_s`` on the monotonic clock: the latency of the
    snapshots, which is what the RSU's budget is about. Events are found only after their
    frame's analytics, behind the frames before it, so RSI are sent untimed rather than
    mixed into the snapshots' percentiles.
    ``omitted`` counts road users a snapshot could not carry (a type V2X has no code for, no
    finite position); ``rsm``/``rsi`` the payloads handed to the sink.
    """

    def __init__(
        self,
        stage: RoadsideStage,
        sink: Sink,
        geo: GeoFrame,
        *,
        rsu_id: str,
        source_id: str,
        rsm_topic: str,
        rsi_topic: str,
    ) -> None:
        self.stage = stage
        self.sink = sink
        self.rsm_topic = rsm_topic
        self.rsi_topic = rsi_topic
        self._messages = V2xMessages(rsu_id, geo.to_latlon, source_id=source_id)
        self.rsm = self.rsi = self.omitted = 0

    def before_frame(self, t_s: float, *, wall_s: float, captured_s: float) -> None:
        """Send the snapshot due at the frame of stream time ``t_s``, if one is. None goes
        for an empty road: the standard's list holds 1..16 road users."""
        participants = self.stage.snapshot(t_s)
        if participants is None:
            return
        message = self._messages.rsm(participants, epoch_ms=_ms(wall_s), t_s=t_s)
        self.omitted += message.omitted
        if message.payload is not None:
            self.sink.send(self.rsm_topic, message.payload, captured_s)
            self.rsm += 1

    def after_frame(self, result: FrameResult, *, wall_s: float) -> None:
        """Send the roadside events the frame started, re-sent or ended."""
        self._send_events(result.roadside_events, result.t_s, wall_s)

    def finish(self, t_s: float, *, wall_s: float) -> None:
        """The stream ended at stream time ``t_s``: cancel every event still active."""
        self._send_events(self.stage.close(t_s), t_s, wall_s)

    def _send_events(self, events: list[RoadsideEvent], t_s: float, wall_s: float) -> None:
        if not events:
            return
        for payload in self._messages.rsi(events, epoch_ms=_ms(wall_s), t_s=t_s):
            self.sink.send(self.rsi_topic, payload, None)
            self.rsi += 1


def _ms(wall_s: float) -> int:
    return round(wall_s * 1000.0)
