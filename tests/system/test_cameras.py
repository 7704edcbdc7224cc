"""A camera end to end: the daemon runs a worker process on the real street clip, looped as
a live source, and traffic summaries with the labelled counts arrive in the outbox.

Also what must not happen: a worker with a bad model restarting in a tight loop, or a
config that names a missing model reaching the daemon at all.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from helpers.paths import PROFILES, SHARED_DATA, TEST_DATA
from helpers.processes import SMARTPOLE, Proc, api
from helpers.waiting import wait_until
from smartpole.agent.buses.registry import load_config
from smartpole.agent.config.camera_worker import command

DATA = SHARED_DATA
CLIP = DATA / "video" / "street-2lane-640x352.mp4"
MODEL = DATA / "models" / "yolox-nano-coco-416.onnx"
LABELS = TEST_DATA / "street-2lane-labels.json"
CLIP_S = 905 / 24  # the clip's length: one summary interval per loop

pytestmark = pytest.mark.skipif(
    not CLIP.exists() or not MODEL.exists(), reason=f"shared test data not found in {DATA}"
)


def _pole(tmp_path: Path, **camera: Any) -> Path:
    config = tmp_path / "pole.yaml"
    settings = {
        "source": str(CLIP),
        "loop": True,
        "realtime": False,
        "model": str(MODEL),
        "interval_s": CLIP_S,
        "lines": {"road": {"from": [150, 230], "to": [640, 230]}},
        "health_period_s": 1.0,
        **camera,
    }
    config.write_text(
        yaml.safe_dump(
            {
                "pole": {"id": "camera-rig"},
                "profiles_dir": str(PROFILES),
                "buses": {"rs485-1": {"type": "modbus-rtu", "port": "/dev/null"}},
                "devices": {"weather": {"profile": "cwt-uwd", "bus": "rs485-1", "unit_id": 1}},
                "cameras": {"street": settings},
            }
        )
    )
    return config


def _traffic(state: Path) -> list[dict[str, Any]]:
    path = state / "outbox.sqlite3"
    if not path.exists():
        return []
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        rows = db.execute(
            "SELECT payload FROM records WHERE stream = 'traffic' ORDER BY seq"
        ).fetchall()
    return [json.loads(row[0]) for row in rows]


def _expected() -> dict[str, dict[str, int]]:
    labels = json.loads(LABELS.read_text())
    counts: dict[str, dict[str, int]] = {"in": {}, "out": {}}
    for crossing in labels["crossings"]:
        per_class = counts[crossing["direction"]]
        per_class[crossing["class"]] = per_class.get(crossing["class"], 0) + 1
    return counts


def test_the_daemon_counts_the_looped_street_clip_into_the_outbox(
    tmp_path: Path, daemon: Callable[..., Proc]
) -> None:
    agent = daemon(_pole(tmp_path))
    state = tmp_path / "state"
    # The first loop starts with an empty background model; the second one is the first
    # interval the camera watched from start to end with a warm model.
    wait_until(lambda: len(_traffic(state)) >= 2, 100, "two traffic summaries")
    summary = _traffic(state)[1]
    assert summary["camera"] == "street"
    assert summary["interval_start"] == pytest.approx(CLIP_S, abs=0.1)
    assert not summary.get("partial")
    got = summary["lines"]["road"]
    expected = _expected()
    for direction in ("in", "out"):
        # Every labelled road user once, in the product's class (the pickup is a car), nothing
        # else: the outbox carries the class the pipeline decided at the crossing.
        assert {cls: n for cls, n in got[direction].items() if n} == expected[direction], got

    (camera,) = api(agent, "cameras")
    assert camera["state"] == "ok"
    assert camera["ready"]["width"] == 640
    assert camera["health"]["processed_fps"] > 0


def test_a_bad_model_is_a_camera_config_error_not_a_restart_loop(
    tmp_path: Path, daemon: Callable[..., Proc]
) -> None:
    bogus = tmp_path / "bogus.onnx"
    bogus.write_bytes(b"this is not an onnx model")
    agent = daemon(_pole(tmp_path, model=str(bogus)))
    wait_until(lambda: api(agent, "cameras")[0]["state"] == "config_error", 60, "the config error")
    (camera,) = api(agent, "cameras")
    assert camera["restarts"] == 0
    assert "model" in camera["last_error"]
    assert api(agent, "status")["pid"] > 0, "the daemon itself keeps running"


def test_a_missing_model_is_rejected_before_start(tmp_path: Path) -> None:
    config = _pole(tmp_path, model="no-such-model.onnx")
    result = subprocess.run(
        [*SMARTPOLE, "config", "check", str(config)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "cameras.street.model: no model file 'no-such-model.onnx'" in result.stdout + (
        result.stderr
    )


def test_a_killed_daemon_takes_its_camera_worker_with_it(
    tmp_path: Path, daemon: Callable[..., Proc]
) -> None:
    agent = daemon(_pole(tmp_path, realtime=True))
    wait_until(lambda: api(agent, "cameras")[0]["pid"], 30, "the worker's start")
    worker = api(agent, "cameras")[0]["pid"]
    agent.process.kill()
    agent.process.wait()

    def gone() -> bool:
        try:
            os.kill(worker, 0)
        except ProcessLookupError:
            return True
        with open(f"/proc/{worker}/stat") as stat:  # a zombie waiting for init counts as gone
            return stat.read().split()[2] == "Z"

    wait_until(gone, 20, "the orphaned worker's exit")


def test_queue_zones_need_a_stop_line_and_pass_it_to_the_worker(tmp_path: Path) -> None:
    queue = {"polygon": [[200, 260], [620, 260], [640, 352], [180, 352]], "kind": "queue"}
    config = _pole(tmp_path, zones={"approach": queue})
    result = subprocess.run(
        [*SMARTPOLE, "config", "check", str(config)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "a queue zone needs a stop_line" in result.stdout + result.stderr

    with_line = {**queue, "stop_line": [[180, 340], [640, 340]]}
    config = _pole(tmp_path, zones={"approach": with_line})
    loaded = load_config(config)
    worker = command("python", "street", loaded.pole.cameras["street"].for_worker(config.parent))
    sent = json.loads(worker[worker.index("--config") + 1])
    assert sent["zones"]["approach"]["stop_line"] == [[180.0, 340.0], [640.0, 340.0]]
    from smartpole.models.scene import Scene  # the worker's own parser and scene take it
    from smartpole.models.worker import parse

    scene = Scene.of(parse(json.dumps(sent)))
    assert [zone.stop_line for zone in scene.zones] == [((180, 340), (640, 340))]
