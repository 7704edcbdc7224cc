"""``Cameras``, the owner of a pole's camera workers: what they report reaches the outbox.

A real worker on the street clip shows the whole way, worker to outbox. A stand-in worker
(a script in place of the interpreter, speaking the protocol from a file of lines) pins
down what the real one cannot be made to do on cue: a malformed line, a bad-input exit,
cameras losing their frames in a given order. Both run as real child processes and record
into a real outbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import threading
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import structlog

from helpers.paths import REPO, SHARED_DATA, TEST_DATA
from helpers.waiting import eventually
from smartpole.agent.buses.registry import load_config
from smartpole.agent.cameras import Cameras
from smartpole.agent.config.cameras import CameraConfig
from smartpole.agent.config.v2x import V2xConfig
from smartpole.agent.core.outbox import Outbox, Priority
from smartpole.agent.pole import Pole

SHARED = SHARED_DATA
CLIP = SHARED / "video" / "street-2lane-640x352.mp4"
MODEL = SHARED / "models" / "yolox-nano-coco-416.onnx"
LABELS = json.loads((TEST_DATA / "street-2lane-labels.json").read_text())
LINE = {"from": [150, 230], "to": [640, 230]}
PARKED = [[560, 140], [640, 140], [640, 200], [560, 200]]  # cars parked all through the clip

STAND_IN = '''#!{python}
"""Says the lines in <camera>.lines as a worker would; "WAIT f" waits for file f, "EXIT n"
exits with n; then it waits on stdin like a worker started with --exit-with-stdin."""
import json, pathlib, sys, time
here = pathlib.Path(__file__).parent
args = sys.argv[1:]
camera = args[args.index("--camera") + 1]
(here / f"{{camera}}.argv.json").write_text(json.dumps(args))
for line in (here / f"{{camera}}.lines").read_text().splitlines():
    if line.startswith("WAIT "):
        while not (here / line.split()[1]).exists():
            time.sleep(0.01)
    elif line.startswith("EXIT "):
        sys.exit(int(line.split()[1]))
    else:
        print(line, flush=True)
sys.stdin.read()
'''


def health(camera: str, state: str) -> dict[str, Any]:
    return {
        "type": "health",
        "camera": camera,
        "state": state,
        "decode_fps": 25.0,
        "processed_fps": 25.0,
        "skipped": 0,
        "inference_ms": 14.2,
        "cpu_percent": 48.5,
        "rss_mb": 240.1,
        "last_frame_age_s": 0.04,
        "frames": 1500,
        "source_warnings": [],
        "shake_px": 0.4,
        "drift_px": 1.2,
        "v2x": {
            "state": "sending",
            "reason": None,
            "rsm_hz": 10.0,
            "sent": 420,
            "dropped": 0,
            "stale": 3,
            "vague": 1,
            "latency_p50_ms": 31.5,
            "latency_p99_ms": 68.0,
        },
    }


SUMMARY = {
    "type": "summary",
    "camera": "street",
    "interval_start": 0.0,
    "interval_s": 60.0,
    "lines": {"road": {"in": {"car": 3, "person": 0}, "out": {"car": 1, "person": 2}}},
    "speed_kmh": {"road": {"mean": None, "p85": None, "n": 0}},
    "zones": {"bus-stop": {"occupancy": 0.25, "mean_dwell_s": 12.5}},
    "queue": {},
    "events": [],
    "quality": {"fps": 25.0, "frames": 1500, "dropped": 0, "state": "ok"},
}
EVENT = {
    "type": "event",
    "camera": "street",
    "event": "stopped_vehicle",
    "zone": "bus-stop",
    "track_id": 7,
    "class": "car",
    "t_s": 31.5,
    "duration_s": 30.2,
}


def camera(**settings: Any) -> CameraConfig:
    return CameraConfig.model_validate(
        {"source": "rtsp://10.0.0.20/stream1", "model": "model.onnx", "lines": {"road": LINE}}
        | settings
    )


@pytest.fixture
def stand_in(tmp_path: Path) -> Callable[[str, list[Any]], str]:
    """Write a camera's lines for the stand-in worker; returns the stand-in's path."""
    script = tmp_path / "worker"
    script.write_text(STAND_IN.format(python=sys.executable))
    script.chmod(0o755)

    def lines(name: str, items: list[Any]) -> str:
        text = [item if isinstance(item, str) else json.dumps(item) for item in items]
        (tmp_path / f"{name}.lines").write_text("\n".join(text) + "\n")
        return str(script)

    return lines


@contextlib.asynccontextmanager
async def running(cameras: Cameras) -> AsyncIterator[None]:
    """Run every camera task; on the way out cancel them, which stops the workers."""
    tasks = [asyncio.create_task(run(), name=name) for name, run in cameras.tasks().items()]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert all(isinstance(r, asyncio.CancelledError) for r in results), results
        # asyncio reaps each child in a thread of its own, which ends just after the reap.
        await eventually(
            lambda: not [t for t in threading.enumerate() if t.name.startswith("waitpid")],
            5,
            "the reaper threads' end",
        )


@pytest.mark.asyncio
async def test_summaries_and_events_are_recorded_as_the_worker_sent_them(
    tmp_path: Path, stand_in: Callable[[str, list[Any]], str]
) -> None:
    python = stand_in("street", [health("street", "ok"), "not a message", SUMMARY, EVENT])
    config = camera(device="camera-power", source="clip.mp4")
    with Outbox(tmp_path) as outbox, structlog.testing.capture_logs() as logs:
        cameras = Cameras({"street": config}, tmp_path, outbox, python=python)
        async with running(cameras):
            await eventually(
                lambda: outbox.pending("traffic") and outbox.pending("events"), 30, "the records"
            )
            (status,) = cameras.status()
        traffic, events = outbox.pending("traffic"), outbox.pending("events")

    assert [(r.payload, r.priority) for r in traffic] == [
        ({k: v for k, v in SUMMARY.items() if k != "type"}, Priority.NORMAL)
    ]
    assert [(r.payload, r.priority) for r in events] == [
        ({"source": "camera", **{k: v for k, v in EVENT.items() if k != "type"}}, Priority.HIGH)
    ]
    assert status["camera"] == "street"
    assert status["device"] == "camera-power"
    assert status["state"] == "ok"
    assert status["health"] == health("street", "ok")
    assert status["summaries"] == 1
    bad = [e["line"].strip() for e in logs if e["event"] == "camera_bad_line"]
    assert bad == ["not a message"]
    assert cameras.workers[0].bad_lines == 1

    argv = json.loads((tmp_path / "street.argv.json").read_text())
    assert argv[argv.index("--camera") + 1] == "street"
    sent = CameraConfig.model_validate_json(argv[argv.index("--config") + 1])
    assert sent == config.for_worker(tmp_path)
    assert sent.source == str(tmp_path / "clip.mp4")


@pytest.mark.asyncio
async def test_every_worker_gets_the_poles_v2x_section_with_absolute_paths(
    tmp_path: Path, stand_in: Callable[[str, list[Any]], str]
) -> None:
    python = stand_in("street", [health("street", "ok")])
    stand_in("plain", [health("plain", "ok")])
    v2x = V2xConfig.model_validate(
        {"host": "rsu.local", "rsu_id": "R328328", "username_file": "rsu.user", "tls": {}}
    )
    cameras_config = {"street": camera(), "plain": camera()}
    with Outbox(tmp_path) as outbox:
        cameras = Cameras(cameras_config, tmp_path, outbox, python=python, v2x=v2x)
        async with running(cameras):
            await eventually(
                lambda: all(w.last_health is not None for w in cameras.workers), 30, "health"
            )
        without = Cameras({"other": camera()}, tmp_path, outbox, python=python)
    for name in ("street", "plain"):
        argv = json.loads((tmp_path / f"{name}.argv.json").read_text())
        sent = V2xConfig.model_validate_json(argv[argv.index("--v2x") + 1])
        assert sent == v2x.for_worker(tmp_path)
        assert sent.username_file == str(tmp_path / "rsu.user")
    assert "--v2x" not in without.workers[0]._command


@pytest.mark.asyncio
async def test_the_pole_hands_its_v2x_section_to_its_cameras(tmp_path: Path) -> None:
    """The composition root passes ``v2x:`` on: the example pole's camera worker would be
    started with it (assembled, not run: no worker process is started here)."""
    config = load_config(REPO / "configs" / "poles" / "v2x-camera.yaml")
    assert config.pole.v2x is not None
    async with Pole(
        config, state_dir=tmp_path, runtime_dir=tmp_path, clock_trusted=lambda: True
    ) as pole:
        (worker,) = pole.cameras.workers
        argv = worker._command
        sent = V2xConfig.model_validate_json(argv[argv.index("--v2x") + 1])
    assert sent == config.pole.v2x.for_worker(config.path.parent)


WARNING = "declared frame rate 24 fps disagrees with the timestamps (10 fps)"


def _doubtful(up: dict[str, Any]) -> dict[str, Any]:
    return {**up, "source_warnings": [WARNING]}


def _rsu_down(up: dict[str, Any]) -> dict[str, Any]:
    return {**up, "v2x": {**up["v2x"], "state": "broker_down", "dropped": 37}}


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (_doubtful, f"camera street: {WARNING}"),
        (
            _rsu_down,
            "camera street: the RSU's broker is unreachable; "
            "37 V2X messages dropped (never queued)",
        ),
    ],
)
async def test_what_a_workers_health_says_is_wrong_is_a_diag_status_problem(
    tmp_path: Path,
    stand_in: Callable[[str, list[Any]], str],
    change: Callable[[dict[str, Any]], dict[str, Any]],
    problem: str,
) -> None:
    """A doubtful video (its source warnings) or an unreachable RSU broker."""
    up = health("street", "ok")
    python = stand_in("street", [up, "WAIT go", change(up)])
    with Outbox(tmp_path) as outbox:
        cameras = Cameras({"street": camera()}, tmp_path, outbox, python=python)
        async with running(cameras):
            await eventually(lambda: cameras.workers[0].last_health, 30, "the first health")
            assert cameras.problems() == []
            (tmp_path / "go").touch()
            await eventually(cameras.problems, 30, "the problem")
            assert cameras.problems() == [problem]


@pytest.mark.asyncio
async def test_a_bad_input_exit_is_a_config_error_and_no_restart(
    tmp_path: Path, stand_in: Callable[[str, list[Any]], str]
) -> None:
    error = {"type": "error", "camera": "street", "kind": "model", "message": "no such file"}
    python = stand_in("street", [error, "EXIT 2"])
    with Outbox(tmp_path) as outbox:
        cameras = Cameras(
            {"street": camera(device="camera-power")}, tmp_path, outbox, python=python
        )
        async with running(cameras):
            await eventually(
                lambda: cameras.status()[0]["state"] == "config_error", 30, "the config error"
            )
            (status,) = cameras.status()
    assert status["restarts"] == 0
    assert status["last_error"] == "model: no such file"
    assert status["pid"] is None
    assert cameras.no_frames_since("camera-power") is None  # a power cycle would not help


@pytest.mark.asyncio
async def test_a_failed_worker_is_restarted_and_its_device_counts_as_without_frames(
    tmp_path: Path, stand_in: Callable[[str, list[Any]], str]
) -> None:
    python = stand_in("street", [health("street", "ok"), "EXIT 1"])
    with Outbox(tmp_path) as outbox:
        cameras = Cameras(
            {"street": camera(device="camera-power")}, tmp_path, outbox, python=python
        )
        async with running(cameras):
            await eventually(lambda: cameras.status()[0]["restarts"] >= 1, 30, "a restart")
            (status,) = cameras.status()
            since = cameras.no_frames_since("camera-power")
    assert status["state"] == "worker_failed"
    assert since == status["state_since"]


@pytest.mark.asyncio
async def test_no_frames_since_is_the_earliest_camera_on_that_device(
    tmp_path: Path, stand_in: Callable[[str, list[Any]], str]
) -> None:
    """The first camera loses its frames last, so neither order nor the first one found
    can stand in for the earliest."""
    stand_in("north", [health("north", "ok"), "WAIT north.go", health("north", "no_frames")])
    stand_in("south", [health("south", "no_frames")])
    python = stand_in("lamp", [health("lamp", "ok")])
    configs = {
        "north": camera(device="camera-power"),
        "south": camera(device="camera-power"),
        "lamp": camera(device="lamp-1"),
    }
    with Outbox(tmp_path) as outbox:
        cameras = Cameras(configs, tmp_path, outbox, python=python)
        north, south, _ = cameras.workers

        def states() -> list[object]:
            return [status["state"] for status in cameras.status()]

        async with running(cameras):
            await eventually(lambda: states() == ["ok", "no_frames", "ok"], 30, "the first states")
            assert cameras.no_frames_since("camera-power") == south.state_since
            (tmp_path / "north.go").touch()
            await eventually(lambda: states()[0] == "no_frames", 30, "north without frames")
            assert north.state_since > south.state_since
            assert cameras.no_frames_since("camera-power") == south.state_since
            assert cameras.no_frames_since("lamp-1") is None
            assert cameras.no_frames_since("no-such-device") is None


@pytest.mark.asyncio
@pytest.mark.skipif(
    not (CLIP.is_file() and MODEL.is_file()), reason=f"shared test data {SHARED} is absent"
)
async def test_a_real_worker_on_the_street_clip_fills_the_outbox(tmp_path: Path) -> None:
    street = camera(
        source=str(CLIP),
        realtime=False,
        model=str(MODEL),
        interval_s=12,
        zones={"parked": {"polygon": PARKED, "kind": "no_stopping"}},
        stopped_after_s=2.0,
        health_period_s=0.5,
    )
    with Outbox(tmp_path) as outbox:
        cameras = Cameras({"street": street}, tmp_path, outbox)
        async with running(cameras):
            await eventually(
                lambda: outbox.pending("traffic") and outbox.pending("events"),
                100,
                "a summary and an event",
            )
            (status,) = cameras.status()
        summary = outbox.pending("traffic")[0].payload
        event = outbox.pending("events")[0].payload

    assert summary["camera"] == "street"
    assert "type" not in summary
    assert summary["interval_start"] == 0.0
    fps = float(LABELS["fps"])
    labelled = Counter(c["direction"] for c in LABELS["crossings"] if c["frame"] / fps < 12)
    counted = {d: sum(summary["lines"]["road"][d].values()) for d in ("in", "out")}
    assert counted == {"in": labelled["in"], "out": labelled["out"]}
    assert event["source"] == "camera"
    assert (event["camera"], event["event"], event["zone"]) == (
        "street",
        "stopped_vehicle",
        "parked",
    )
    ready = status["ready"]
    assert isinstance(ready, dict)
    assert (ready["width"], ready["height"]) == (640, 352)
    assert isinstance(status["pid"], int)
    with pytest.raises(ProcessLookupError):
        os.kill(status["pid"], 0)  # stopped and reaped with its task
