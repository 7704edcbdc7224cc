"""The camera worker: one process per camera, ``python -m smartpole.models.worker``.

It owns the camera (``VideoSource``) and its analytics (``Pipeline``); frames never leave
it. What it is given and what it says back (the command line, the JSON lines on stdout, the
exit codes) is the contract in ``smartpole.agent.config.camera_worker``, which the
supervisor in the control process reads with the same types. Its settings are the camera's
section of the pole config, validated by the same schema as the config check
(``smartpole.agent.config.cameras``).

Decoding runs in a reader thread (``worker_io``); a geo-calibrated camera on a pole with a
``v2x:`` section also sends its road users to the roadside unit itself (``v2x_link``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import queue
import resource
import signal
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from types import FrameType
from typing import Any, Final

import structlog
from pydantic import ValidationError

from smartpole.agent.config.camera_worker import (
    ErrorKind,
    ErrorMessage,
    EventMessage,
    HealthMessage,
    ReadyMessage,
    SummaryMessage,
    WorkerExit,
    WorkerState,
)
from smartpole.agent.config.cameras import CameraConfig, describe
from smartpole.agent.config.v2x import V2xConfig
from smartpole.models.detections import load_detector
from smartpole.models.errors import AnalyticsConfigError, ModelError, SourceError
from smartpole.models.kernels import warm_up
from smartpole.models.pipeline import Pipeline
from smartpole.models.pipeline_results import FrameResult
from smartpole.models.resident import release_libraries
from smartpole.models.scene import Scene
from smartpole.models.source import VideoSource
from smartpole.models.v2x_link import RoadsideLink
from smartpole.models.worker_io import Output, Reader

#: How long the exit waits for the reader thread before leaving it blocked in FFmpeg.
READER_JOIN_S: Final = 2.0

log = structlog.get_logger("smartpole.worker")


class FatalError(Exception):
    """Stop the worker: emit an error line of ``kind`` and exit with ``code``."""

    def __init__(self, kind: ErrorKind, message: str, code: WorkerExit) -> None:
        super().__init__(message)
        self.kind: ErrorKind = kind
        self.code = code


class Health:
    """The health line's numbers, computed by the timer thread from what the others set."""

    def __init__(
        self, out: Output, config: CameraConfig, source: VideoSource, roadside: RoadsideLink
    ) -> None:
        self.out = out
        self.config = config
        self.source = source
        self.pipeline: Pipeline | None = None
        self.reader: Reader | None = None
        self.roadside = roadside
        self.last_frame_wall: float | None = None
        self.started = time.monotonic()
        self._stop = threading.Event()
        self._last = (time.monotonic(), time.process_time(), 0, 0)
        self._warned = 0
        self._thread = threading.Thread(target=self._run, name="health", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """No health line after this returns (an error line must be the last word)."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=1.0)

    def _run(self) -> None:
        while not self._stop.wait(self.config.health_period_s):
            self.out.send(self.snapshot())

    def state(self, now: float) -> WorkerState:
        waited = now - (self.last_frame_wall or self.started)
        if waited > self.config.no_frames_after_s:
            stats = self.source.stats
            if self.source.live and (stats.reconnects > 0 or stats.last_error):
                return "reconnecting"
            return "no_frames"
        if self.pipeline is None:
            return "starting"
        return self.pipeline.stats.quality

    def source_warnings(self) -> list[str]:
        """The source's timing and decoding warnings; each new one is logged once."""
        source = self.source.stats
        warnings = source.all_warnings()
        for text in source.warnings[self._warned :]:
            log.warning("source_warning", warning=text)
        self._warned = len(source.warnings)
        return warnings

    def snapshot(self) -> HealthMessage:
        now, cpu = time.monotonic(), time.process_time()
        decoded = self.source.stats.decoded
        stats = self.pipeline.stats if self.pipeline is not None else None
        processed = stats.processed if stats is not None else 0
        then, cpu_then, decoded_then, processed_then = self._last
        self._last = (now, cpu, decoded, processed)
        span = max(now - then, 1e-6)
        age = None if self.last_frame_wall is None else round(now - self.last_frame_wall, 3)
        return HealthMessage(
            type="health",
            camera=self.out.camera,
            state=self.state(now),
            decode_fps=round((decoded - decoded_then) / span, 2),
            processed_fps=round((processed - processed_then) / span, 2),
            skipped=self.reader.skipped if self.reader is not None else 0,
            inference_ms=round(stats.inference_ms, 2) if stats is not None else 0.0,
            cpu_percent=round(100.0 * (cpu - cpu_then) / span, 1),
            rss_mb=round(rss_mb(), 1),
            last_frame_age_s=age,
            frames=processed,
            source_warnings=self.source_warnings(),
            shake_px=round(stats.shake_px, 2) if stats is not None else 0.0,
            drift_px=round(stats.drift_px, 2) if stats is not None else 0.0,
            v2x=self.roadside.health(),
        )


def rss_mb() -> float:
    """Resident memory of this process now (Linux /proc; the peak elsewhere)."""
    try:
        pages = int(Path("/proc/self/statm").read_text(encoding="ascii").split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 1e6
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3


def parse(text: str) -> CameraConfig:
    """The camera's section, as the config check validated it; ``AnalyticsConfigError``
    naming the keys if it is not valid (it was, unless the worker was started by hand)."""
    try:
        return CameraConfig.model_validate_json(text)
    except ValidationError as exc:
        raise AnalyticsConfigError(f"--config: {describe(exc)}") from exc


def parse_v2x(text: str) -> V2xConfig:
    """The pole's ``v2x:`` section, as the config check validated it; ``AnalyticsConfigError``
    naming the keys if it is not valid."""
    try:
        return V2xConfig.model_validate_json(text)
    except ValidationError as exc:
        raise AnalyticsConfigError(f"--v2x: {describe(exc)}") from exc


class Worker:
    """One camera's worker; ``run`` returns the exit code (``WorkerExit``).

    Construction builds the scene, so a calibration that cannot work is reported before
    the camera is opened.
    """

    def __init__(self, out: Output, config: CameraConfig, v2x: V2xConfig | None = None) -> None:
        self.out = out
        self.config = config
        self.v2x = v2x
        self.scene = Scene.of(config)
        self.stopping = threading.Event()
        self.reader: Reader | None = None
        self.source = VideoSource(config.source, loop=config.loop, realtime=config.realtime)
        self.roadside = RoadsideLink(v2x, self.scene, out.camera)
        self.health = Health(out, config, self.source, self.roadside)

    def stop(self, signum: int = 0, frame: FrameType | None = None) -> None:
        """SIGTERM/SIGINT: finish the current frame, flush a partial summary, exit 0."""
        self.stopping.set()
        self.source.close()

    def run(self) -> WorkerExit:
        self.health.start()
        try:
            with self.roadside:
                return self._run()
        finally:
            self.health.stop()
            self.source.close()

    def reader_stuck(self) -> bool:
        """Whether the reader thread is still blocked after the source was closed."""
        return self.reader is not None and not self.reader.join(READER_JOIN_S)

    def _run(self) -> WorkerExit:
        # The kernels before the model, and between the start-up steps the pages of code
        # that only start-up runs (imports, LLVM loading the kernels, ONNX Runtime building
        # the session) are given back (``models.resident``). In the other order the first
        # kernel's load (~60 MB, most of it LLVM) would add to the session's memory at the
        # worker's peak. The price: a bad model is reported after the kernels load (a
        # quarter of a second from the cache, seconds on a cold one).
        released_kb = release_libraries()
        compile_s = warm_up()
        released_kb += release_libraries()
        started = time.perf_counter()
        detector = load_detector(self.config)
        model_load_s = time.perf_counter() - started
        released_kb += release_libraries()
        log.info(
            "model_loaded",
            compile_s=round(compile_s, 3),
            model_load_s=round(model_load_s, 3),
            released_mb=round(released_kb / 1024, 1),
        )
        live_paced = self.source.live or self.config.realtime
        reader = self.reader = Reader(
            self.source, drop_when_behind=live_paced, on_frame=self.roadside.before_frame
        )
        self.health.reader = reader
        reader.start()
        pipeline: Pipeline | None = None
        reported_skips = 0
        while not self.stopping.is_set():
            try:
                item = reader.frames.get(timeout=0.25)
            except queue.Empty:
                continue
            if isinstance(item, SourceError):
                self._finish(pipeline)
                raise FatalError("source", str(item), WorkerExit.FAILURE)
            if isinstance(item, Exception):
                self._finish(pipeline)
                raise item
            if isinstance(item, str):
                log.info("source_ended", frames=pipeline.stats.processed if pipeline else 0)
                break
            self.health.last_frame_wall = time.monotonic()
            if pipeline is None:
                pipeline = Pipeline(
                    self.config,
                    item.width,
                    item.height,
                    camera=self.out.camera,
                    scene=self.scene,
                    detector=detector,
                    roadside=self.roadside.settings,
                )
                self.roadside.attach(pipeline)
                self.health.pipeline = pipeline
                self.out.send(
                    ReadyMessage(
                        type="ready",
                        camera=self.out.camera,
                        width=item.width,
                        height=item.height,
                        fps=round(self.source.stats.nominal_fps, 3),
                        compile_s=round(compile_s, 3),
                        model_load_s=round(model_load_s, 3),
                    )
                )
            if reader.skipped > reported_skips:
                pipeline.note_skipped(reader.skipped - reported_skips)
                reported_skips = reader.skipped
            result = pipeline.process(item)
            self.roadside.after_frame(result, item)
            self._publish(result)
        self._finish(pipeline)
        return WorkerExit.OK

    def _publish(self, result: FrameResult) -> None:
        for event in result.events:
            self.out.send(
                EventMessage(
                    {
                        "type": "event",
                        "camera": self.out.camera,
                        "event": event.kind,
                        "zone": event.zone,
                        "track_id": event.track_id,
                        "class": event.class_name,
                        "t_s": event.t_s,
                        "duration_s": event.duration_s,
                    }
                )
            )
        for summary in result.summaries:
            self.out.send(summary_message(self.out.camera, summary))

    def _finish(self, pipeline: Pipeline | None) -> None:
        """The roadside events still active cancelled, the summaries still open sent, the
        last one flagged partial."""
        self.roadside.finish(pipeline)
        if pipeline is None:
            return
        for summary in pipeline.finish():
            self.out.send(summary_message(self.out.camera, summary))


def summary_message(camera: str, summary: Mapping[str, Any]) -> SummaryMessage:
    """A ``SummaryAggregator`` summary as the protocol's message, key by key: a key the
    protocol does not know fails here, in the worker's tests, not in the supervisor."""
    message = SummaryMessage(
        type="summary",
        camera=camera,
        interval_start=summary["interval_start"],
        interval_s=summary["interval_s"],
        lines=summary["lines"],
        speed_kmh=summary["speed_kmh"],
        zones=summary["zones"],
        queue=summary["queue"],
        events=summary["events"],
        quality=summary["quality"],
    )
    if "partial" in summary:
        message["partial"] = summary["partial"]
    return message


def _configure_logging() -> None:
    """JSON log lines on stderr; stdout is the protocol and carries nothing else."""
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            structlog.processors.JSONRenderer(),
        ],
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )


def serve(text: str, out: Output, v2x_text: str | None = None) -> tuple[WorkerExit, Worker | None]:
    """Parse, run, and turn every failure into its error line; return the exit code."""
    worker: Worker | None = None
    try:
        try:
            v2x = parse_v2x(v2x_text) if v2x_text is not None else None
            worker = Worker(out, parse(text), v2x)
            signal.signal(signal.SIGTERM, worker.stop)
            signal.signal(signal.SIGINT, worker.stop)
            return worker.run(), worker
        except ModelError as exc:
            raise FatalError("model", str(exc), WorkerExit.BAD_INPUT) from exc
        except (AnalyticsConfigError, SourceError) as exc:  # SourceError: a bad URL scheme
            raise FatalError("config", str(exc), WorkerExit.BAD_INPUT) from exc
    except FatalError as exc:
        log.error("worker_failed", kind=exc.kind, error=str(exc))
        out.send(ErrorMessage(type="error", camera=out.camera, kind=exc.kind, message=str(exc)))
        return exc.code, worker
    except Exception as exc:  # last resort: a line for the supervisor
        log.exception("worker_crashed")
        message = f"{type(exc).__name__}: {exc}"
        out.send(ErrorMessage(type="error", camera=out.camera, kind="internal", message=message))
        return WorkerExit.FAILURE, worker


def _exit_with_stdin() -> None:
    """The supervisor holds our stdin open and never writes: EOF means it is gone, and an
    orphaned worker would keep the camera (one process owns a camera) and a core busy."""

    def watch() -> None:
        # os.read, not sys.stdin: a daemon thread blocked inside the buffered reader makes
        # the interpreter abort at exit (it cannot take the buffer's lock).
        with contextlib.suppress(OSError):
            while os.read(0, 4096):
                pass
        log.warning("supervisor_gone")
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="stdin-watch", daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m smartpole.models.worker")
    parser.add_argument("--camera", default="camera", help="the camera's name in its lines")
    parser.add_argument("--config", required=True, help="the camera's section as JSON")
    parser.add_argument("--v2x", help="the pole's v2x: section as JSON (RSU broker, rate)")
    parser.add_argument(
        "--exit-with-stdin",
        action="store_true",
        help="stop when stdin closes: the supervisor died (even by SIGKILL)",
    )
    args = parser.parse_args(argv)
    _configure_logging()
    if args.exit_with_stdin:
        _exit_with_stdin()
    structlog.contextvars.bind_contextvars(camera=args.camera)
    code, worker = serve(args.config, Output(args.camera), args.v2x)
    if worker is not None and worker.reader_stuck():
        # A read blocked in FFmpeg (a FIFO nobody writes to) cannot be interrupted, and the
        # interpreter's shutdown could wait on it: leave now, with the output flushed.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
