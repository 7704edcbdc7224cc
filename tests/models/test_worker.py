"""The camera worker as the control process runs it: a subprocess speaking JSON lines.

Each test starts ``python -m smartpole.models.worker --camera NAME --config JSON`` and reads
its stdout with the supervisor's own parser, so every line is held to the protocol: the real
clip end to end, and every kind of bad input (bad model, line outside the frame, missing,
truncated or damaged video, a source that stalls). The rule under test: a clear error line
and exit code, or a health state, never silence or a hang.
"""

from __future__ import annotations

import json
import os
import queue
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers import bad_clips
from helpers.paths import SHARED_DATA, TEST_DATA
from smartpole.agent.config.camera_worker import WorkerExit, command, parse_line
from smartpole.agent.config.cameras import CameraConfig
from smartpole.agent.config.v2x import V2xConfig
from smartpole.models.roadside_stage import NO_GEO
from smartpole.models.v2x_link import NO_SECTION

SHARED = SHARED_DATA
CLIP = SHARED / "video" / "street-2lane-640x352.mp4"
LABELS = json.loads((TEST_DATA / "street-2lane-labels.json").read_text())
LINE = {"from": [150, 230], "to": [640, 230]}
#: The cars parked at the right edge of the clip (they stand there the whole clip).
PARKED = [[560, 140], [640, 140], [640, 200], [560, 200]]
HEALTH_KEYS = {
    "type",
    "camera",
    "state",
    "decode_fps",
    "processed_fps",
    "skipped",
    "inference_ms",
    "cpu_percent",
    "rss_mb",
    "last_frame_age_s",
    "frames",
    "source_warnings",
    "shake_px",
    "drift_px",
    "v2x",
}
pytestmark = pytest.mark.skipif(not CLIP.is_file(), reason=f"shared test data {SHARED} is absent")


class Worker:
    """A worker subprocess; its stdout lines are parsed into ``lines`` by a thread.

    Its stdin is a pipe held open, as the supervisor holds it (``--exit-with-stdin``).
    """

    def __init__(self, argv: list[str], log: Path) -> None:
        with log.open("w") as stderr:
            self.process = subprocess.Popen(
                argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, text=True
            )
        self.log = log
        self.lines: list[dict[str, Any]] = []
        self._new: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            message: Any = parse_line(raw)  # every stdout line must be one message
            self.lines.append(message)
            self._new.put(message)
        self._new.put(None)

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool], timeout: float) -> Any:
        """The first line (already read or still to come) that satisfies ``predicate``."""
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            for message in self.lines[seen:]:
                if predicate(message):
                    return message
            seen = len(self.lines)
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no such line in {timeout} s: {self.lines[-5:]}")
            try:
                if self._new.get(timeout=left) is None and seen == len(self.lines):
                    raise AssertionError(f"worker ended first: {self.lines[-5:]}")
            except queue.Empty:
                continue

    def wait(self, timeout: float) -> int:
        code = self.process.wait(timeout=timeout)
        self._thread.join(timeout=5)
        return code

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.lines if m["type"] == kind]

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.wait(10)
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                pipe.close()


@pytest.fixture
def worker(tmp_path: Path) -> Iterator[Callable[..., Worker]]:
    started: list[Worker] = []

    def start(argv: list[str] | None = None, **config: Any) -> Worker:
        # No model: the worker uses the one the package ships.
        settings = {
            "source": str(CLIP),
            "realtime": False,
            "lines": {"main": LINE},
            "interval_s": 12,
            "health_period_s": 0.5,
            **config,
        }
        argv = argv or [
            *(sys.executable, "-m", "smartpole.models.worker"),
            *("--camera", "cam-1", "--config", json.dumps(settings)),
        ]
        proc = Worker(argv, tmp_path / f"worker-{len(started)}.log")
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.close()


def test_the_clip_gives_ready_health_and_the_labelled_counts_per_interval(
    worker: Callable[..., Worker],
) -> None:
    proc = worker()
    assert proc.wait(100) == WorkerExit.OK, proc.log.read_text()
    ready = proc.of("ready")
    assert len(ready) == 1
    assert ready[0]["camera"] == "cam-1"
    assert (ready[0]["width"], ready[0]["height"]) == (640, 352)
    assert abs(ready[0]["fps"] - 24.01) < 0.05
    assert ready[0]["compile_s"] >= 0
    assert ready[0]["model_load_s"] > 0
    assert proc.lines.index(ready[0]) == next(
        i for i, m in enumerate(proc.lines) if m["type"] != "health"
    ), "ready comes before any summary"
    health = proc.of("health")
    assert health, "a 15 s run has health lines every 0.5 s"
    for line in health:
        assert set(line) == HEALTH_KEYS
        assert line["state"] in ("starting", "ok")
        assert line["v2x"]["state"] == "off"
        assert line["v2x"]["reason"] == NO_SECTION
    assert any(line["state"] == "ok" and line["processed_fps"] > 0 for line in health)
    summaries = proc.of("summary")
    assert [s["interval_start"] for s in summaries] == [0.0, 12.0, 24.0, 36.0]
    assert [s.get("partial", False) for s in summaries] == [False, False, False, True]
    fps = float(LABELS["fps"])
    for summary in summaries:
        start = summary["interval_start"]
        labelled = Counter(
            c["direction"] for c in LABELS["crossings"] if start <= c["frame"] / fps < start + 12
        )
        counted = {d: sum(summary["lines"]["main"][d].values()) for d in ("in", "out")}
        assert counted == {"in": labelled["in"], "out": labelled["out"]}, start
        assert summary["camera"] == "cam-1"
    assert sum(s["quality"]["frames"] for s in summaries) == LABELS["frames"]
    assert not proc.of("error")


def test_sigterm_ends_a_live_run_with_a_partial_summary(
    worker: Callable[..., Worker], tmp_path: Path
) -> None:
    """Started exactly as the control process starts it (``camera_worker.command``), on a
    pole with an RSU: the camera has no geo-calibration, so it says why it sends nothing."""
    camera = CameraConfig.model_validate(
        {
            "source": str(CLIP),
            "loop": True,
            "lines": {"main": LINE},
            "zones": {"parked": {"polygon": PARKED, "kind": "no_stopping"}},
            "interval_s": 300,
            "health_period_s": 0.5,
            "device": "camera-power",
        }
    )
    v2x = V2xConfig(host="127.0.0.1", rsu_id="R1")
    proc = worker(command(sys.executable, "cam-1", camera.for_worker(tmp_path), v2x=v2x))
    health = proc.wait_for(lambda m: m["type"] == "health" and m["state"] == "ok", 60)
    assert health["v2x"]["state"] == "off"
    assert health["v2x"]["reason"] == NO_GEO
    assert health["v2x"]["sent"] == 0
    proc.process.send_signal(signal.SIGTERM)
    assert proc.wait(20) == WorkerExit.OK
    summaries = proc.of("summary")
    assert len(summaries) == 1
    assert summaries[0]["partial"] is True
    assert summaries[0]["quality"]["frames"] > 0
    assert set(summaries[0]["zones"]) == {"parked"}
    assert not proc.of("error")


def test_events_are_sent_as_they_happen(worker: Callable[..., Worker]) -> None:
    zones = {"parked": {"polygon": PARKED, "kind": "no_stopping"}}
    proc = worker(zones=zones, stopped_after_s=2.0, interval_s=300)
    event = proc.wait_for(lambda m: m["type"] == "event", 60)
    assert event["event"] == "stopped_vehicle"
    assert event["zone"] == "parked"
    assert event["class"] == "car"
    assert event["camera"] == "cam-1"
    assert {"track_id", "t_s", "duration_s"} <= set(event)
    assert proc.wait(100) == WorkerExit.OK
    (summary,) = proc.of("summary")
    assert any(e["type"] == "stopped_vehicle" for e in summary["events"])


@pytest.mark.parametrize("model", ["missing", "garbage"])
def test_an_unusable_model_is_a_model_error_with_exit_2(
    worker: Callable[..., Worker], tmp_path: Path, model: str
) -> None:
    path = tmp_path / "model.onnx"
    if model == "garbage":
        path.write_bytes(b"this is not an ONNX model\n" * 100)
    proc = worker(model=str(path))
    assert proc.wait(60) == WorkerExit.BAD_INPUT
    (error,) = proc.of("error")
    assert error["kind"] == "model"
    assert str(path) in error["message"]
    assert not proc.of("ready")


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"lines": {"main": {"from": [150, 230], "to": [700, 230]}}}, "outside the 640x352"),
        ({"interval_s": -1}, "interval_s"),
        ({"colour": "red"}, "unknown key"),
        ({"source": "ftp://camera/stream"}, "unsupported URL scheme"),
    ],
)
def test_a_bad_setting_is_a_config_error_with_exit_2(
    worker: Callable[..., Worker], config: dict[str, Any], message: str
) -> None:
    proc = worker(**config)
    assert proc.wait(60) == WorkerExit.BAD_INPUT
    (error,) = proc.of("error")
    assert error["kind"] == "config"
    assert message in error["message"]


def test_a_missing_video_is_a_source_error(worker: Callable[..., Worker], tmp_path: Path) -> None:
    proc = worker(source=str(tmp_path / "nope.mp4"))
    assert proc.wait(60) == WorkerExit.FAILURE
    (error,) = proc.of("error")
    assert error["kind"] == "source"
    assert "nope.mp4" in error["message"]


@pytest.mark.parametrize(
    ("clip", "message"),
    [("empty", "is empty (0 bytes)"), ("undecodable", "no decoder here reads its video codec")],
)
def test_an_empty_or_undecodable_video_is_a_source_error(
    worker: Callable[..., Worker], tmp_path: Path, clip: str, message: str
) -> None:
    path = (
        bad_clips.empty_clip(tmp_path)
        if clip == "empty"
        else bad_clips.undecodable_clip(CLIP, tmp_path)
    )
    proc = worker(source=str(path))
    assert proc.wait(60) == WorkerExit.FAILURE
    (error,) = proc.of("error")
    assert error["kind"] == "source"
    assert message in error["message"]


def test_a_rate_the_timestamps_contradict_is_in_the_health_line_and_logged_once(
    worker: Callable[..., Worker], tmp_path: Path
) -> None:
    proc = worker(source=str(bad_clips.slow_clip(CLIP, tmp_path)), loop=True)
    health = proc.wait_for(lambda m: m["type"] == "health" and m["source_warnings"], 60)
    (warning,) = health["source_warnings"]
    assert "declared frame rate 24 fps disagrees with the timestamps (10 fps)" in warning
    proc.wait_for(lambda m: m["type"] == "health" and m["frames"] > 60, 60)  # past 2 loops
    proc.process.send_signal(signal.SIGTERM)
    assert proc.wait(20) == WorkerExit.OK
    logged = [line for line in proc.log.read_text().splitlines() if "source_warning" in line]
    assert len(logged) == 1, logged


def test_a_truncated_video_ends_with_a_source_error(
    worker: Callable[..., Worker], tmp_path: Path
) -> None:
    broken = tmp_path / "truncated.mp4"
    broken.write_bytes(CLIP.read_bytes()[: CLIP.stat().st_size // 2])
    proc = worker(source=str(broken))
    code = proc.wait(60)
    errors = proc.of("error")
    outcomes = ((WorkerExit.FAILURE, ["source"]), (WorkerExit.OK, []))
    assert (code, [e["kind"] for e in errors]) in outcomes


def test_a_damaged_video_is_analysed_as_far_as_it_decodes(
    worker: Callable[..., Worker], tmp_path: Path
) -> None:
    data = bytearray(CLIP.read_bytes())
    garbage = random.Random(6).randbytes(4000)
    for start in range(len(data) // 4, 3 * len(data) // 4, len(data) // 16):
        data[start : start + 4000] = garbage  # garbage over packets mid-stream
    damaged = tmp_path / "damaged.mp4"
    damaged.write_bytes(bytes(data))
    proc = worker(source=str(damaged))
    code = proc.wait(100)
    assert code in (WorkerExit.OK, WorkerExit.FAILURE), proc.log.read_text()
    assert proc.of("ready")
    summaries = proc.of("summary")
    assert summaries, "what decoded was summarised"
    assert summaries[-1]["partial"] is True
    assert [e["kind"] for e in proc.of("error")] == ([] if code == WorkerExit.OK else ["source"])


def test_a_source_that_never_sends_is_reported_as_no_frames(
    worker: Callable[..., Worker], tmp_path: Path
) -> None:
    fifo = tmp_path / "camera.fifo"
    os.mkfifo(fifo)
    keep_open = os.open(fifo, os.O_RDWR)  # a writer that never writes: reads block
    try:
        proc = worker(source=str(fifo), no_frames_after_s=1.0, health_period_s=0.3)
        line = proc.wait_for(lambda m: m["type"] == "health" and m["state"] == "no_frames", 30)
        assert line["last_frame_age_s"] is None
        assert line["frames"] == 0
        proc.process.send_signal(signal.SIGTERM)
        assert proc.wait(15) == WorkerExit.OK
    finally:
        os.close(keep_open)


def test_a_camera_that_refuses_connections_is_reported_as_reconnecting(
    worker: Callable[..., Worker],
) -> None:
    with socket.socket() as probe:  # a local port that nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = worker(
        source=f"rtsp://127.0.0.1:{port}/stream", no_frames_after_s=1.0, health_period_s=0.3
    )
    proc.wait_for(lambda m: m["type"] == "health" and m["state"] == "reconnecting", 30)
    proc.process.send_signal(signal.SIGTERM)
    assert proc.wait(15) == WorkerExit.OK
    assert not proc.of("ready")
    assert not proc.of("error")
