"""The camera worker's link to its roadside unit: the publisher, the messages, the health.

Why the worker publishes itself instead of handing the messages to the control process: a
V2X message is worth something only within a couple of hundred milliseconds, and each hop
through another process and event loop adds latency and a queue. So the worker that made
the snapshot sends it (``v2x_publisher``, QoS 0, dropped when the broker is away, never
queued), and the control process only learns the counters from the health line.

A camera sends nothing, and its health says why (``V2xHealth.reason``), when the pole has
no ``v2x:`` section, when its calibration is not geo-referenced, or when the RSU broker's
settings cannot be used (a credential file that cannot be read).
"""

from __future__ import annotations

import contextlib
import ssl
import time
from pathlib import Path
from typing import Any, Final, Self

import structlog

from smartpole.agent.config.camera_worker import V2xHealth, V2xState
from smartpole.agent.config.safefile import read_small_file
from smartpole.agent.config.v2x import V2xConfig
from smartpole.drivers.lifecycle import Closing
from smartpole.models.errors import AnalyticsConfigError
from smartpole.models.frames import VideoFrame
from smartpole.models.pipeline import Pipeline
from smartpole.models.pipeline_results import FrameResult
from smartpole.models.roadside_stage import NO_GEO, RoadsideSettings
from smartpole.models.scene import Scene
from smartpole.models.v2x_output import RoadsideOutput
from smartpole.models.v2x_publisher import V2xPublisher

NO_SECTION: Final = "the pole config has no v2x: section"
#: A credential file is a short line; more is not a credential.
CREDENTIAL_BYTES: Final = 4096

log = structlog.get_logger("smartpole.worker.v2x")


def _wall(frame: VideoFrame) -> float:
    """The frame's capture on the wall clock: now, less the time since it was captured."""
    return time.time() - (time.monotonic() - frame.captured_s)


class PublisherSink:
    """``RoadsideOutput``'s sink on the wire: QoS 0 through the worker's publisher."""

    def __init__(self, publisher: V2xPublisher) -> None:
        self.publisher = publisher

    def send(self, topic: str, payload: dict[str, Any], captured_s: float | None) -> None:
        self.publisher.publish(topic, payload, captured_s=captured_s)


def tls_context(v2x: V2xConfig) -> ssl.SSLContext | None:
    """The TLS context of the RSU broker connection (paths are absolute: ``for_worker``)."""
    tls = v2x.tls
    if tls is None:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        if tls.insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        elif tls.ca_file is not None:
            context.load_verify_locations(cafile=tls.ca_file)
        else:
            context.load_default_certs(ssl.Purpose.SERVER_AUTH)
        if tls.cert_file is not None and tls.key_file is not None:
            context.load_cert_chain(tls.cert_file, tls.key_file)
    except (OSError, ssl.SSLError) as exc:
        raise AnalyticsConfigError(f"v2x.tls: {exc}") from exc
    return context


def _credential(name: str, path: str | None) -> str | None:
    if path is None:
        return None
    try:
        return read_small_file(Path(path), CREDENTIAL_BYTES).decode("utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise AnalyticsConfigError(f"v2x.{name} {path}: cannot be read ({exc})") from exc


class RoadsideLink(Closing):
    """Opened around the worker's frame loop; ``attach`` once the pipeline exists."""

    def __init__(self, v2x: V2xConfig | None, scene: Scene, camera: str) -> None:
        self.v2x = v2x
        self.camera = camera
        self.reason: str | None = None
        if v2x is None:
            self.reason = NO_SECTION
        elif scene.geo is None:
            self.reason = NO_GEO
        self._scene = scene
        self._publisher: V2xPublisher | None = None
        self._output: RoadsideOutput | None = None
        self._last = (time.monotonic(), 0)

    @property
    def settings(self) -> RoadsideSettings | None:
        """The pipeline's roadside settings; None when this camera sends nothing."""
        if self.reason is not None or self.v2x is None:
            return None
        return RoadsideSettings.of(self.v2x)

    def __enter__(self) -> Self:
        v2x = self.v2x
        if v2x is None or self.reason is not None:
            return self
        try:
            publisher = V2xPublisher(
                v2x.host,
                v2x.broker_port(),
                client_id=f"smartpole-{self.camera}-{v2x.rsu_id}"[:128],
                tls=tls_context(v2x),
                username=_credential("username_file", v2x.username_file),
                password=_credential("password_file", v2x.password_file),
            )
        except AnalyticsConfigError as exc:
            # The broker's settings are the RSU's business: the camera still counts.
            self.reason = str(exc)
            log.error("v2x_unusable", error=self.reason)
            return self
        publisher.start()
        self._publisher = publisher
        return self

    def close(self) -> None:
        if self._publisher is not None:
            with contextlib.suppress(Exception):  # closing must not hide the real error
                self._publisher.close()

    def attach(self, pipeline: Pipeline) -> None:
        """The pipeline (built with ``settings``) exists: send what its stage gives."""
        geo = self._scene.geo
        stage = pipeline.roadside
        if self._publisher is None or self.v2x is None or geo is None or stage is None:
            return
        self._output = RoadsideOutput(
            stage,
            PublisherSink(self._publisher),
            geo,
            rsu_id=self.v2x.rsu_id,
            source_id=self.camera,
            rsm_topic=self.v2x.rsm_topic(),
            rsi_topic=self.v2x.rsi_topic(),
        )

    def before_frame(self, frame: VideoFrame) -> None:
        """Send the snapshot due at this frame as it is captured: called on the reader
        thread, so the message never waits behind the analytics of earlier frames."""
        if self._output is not None:
            self._output.before_frame(frame.pts_s, wall_s=_wall(frame), captured_s=frame.captured_s)

    def after_frame(self, result: FrameResult, frame: VideoFrame) -> None:
        """Send the roadside events the frame started, re-sent or ended."""
        if self._output is not None:
            self._output.after_frame(result, wall_s=_wall(frame))

    def finish(self, pipeline: Pipeline | None) -> None:
        """The stream ended: cancel the events still active, while the link is up."""
        if self._output is not None and pipeline is not None:
            self._output.finish(pipeline.stats.last_t_s or 0.0, wall_s=time.time())

    def health(self) -> V2xHealth:
        now = time.monotonic()
        then, rsm_then = self._last
        output = self._output
        rsm = output.rsm if output is not None else 0
        self._last = (now, rsm)
        publisher = self._publisher
        state: V2xState = "off"
        sent = dropped = 0
        p50 = p99 = None
        if self.reason is None and publisher is not None:
            stats = publisher.stats()
            sent, dropped = stats.sent, stats.dropped
            p50, p99 = stats.latency_p50_ms, stats.latency_p99_ms
            if stats.connected:
                state = "sending"
            elif stats.outages or stats.connect_failures:
                state = "broker_down"
            else:
                state = "connecting"
        return V2xHealth(
            state=state,
            reason=self.reason,
            rsm_hz=round((rsm - rsm_then) / max(now - then, 1e-6), 2),
            sent=sent,
            dropped=dropped,
            stale=output.stage.stale if output is not None else 0,
            vague=output.stage.vague if output is not None else 0,
            latency_p50_ms=None if p50 is None else round(p50, 2),
            latency_p99_ms=None if p99 is None else round(p99, 2),
        )
