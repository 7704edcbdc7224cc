"""The accuracy bar: ``smartpole analyze`` on the street clip against our labels.

The ground truth (``tests/data/street-2lane-labels.json``) was made by eye: a slit-scan of
the counting line's row over every frame finds each crossing, and the frames around it name
the road user and its direction (the product's classes: a pickup is a light vehicle,
``car``). The bar: every direction x class total within 5 % of the labels, which with
single-digit counts means exactly, and nothing counted that is not labelled (no phantoms
from shadows or trees).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from helpers import bad_clips
from helpers.paths import REPO, SHARED_DATA, TEST_DATA
from helpers.processes import SMARTPOLE, pole_config

SHARED = SHARED_DATA
CLIP = SHARED / "video" / "street-2lane-640x352.mp4"
MODEL = REPO / "models" / "assets" / "yolox-nano-coco-416.onnx"  # given explicitly
LABELS = json.loads((TEST_DATA / "street-2lane-labels.json").read_text())
CLASSES = ("car", "truck", "bus", "motorcycle", "bicycle", "person")
TOLERANCE = 0.05

pytestmark = pytest.mark.skipif(not CLIP.is_file(), reason=f"shared test data {SHARED} is absent")


@pytest.fixture(scope="module")
def analyzed(analyzed_clip: Callable[[Path, str], dict[str, Any]]) -> dict[str, Any]:
    """``smartpole analyze --json`` on the clip, run once as the user would run it: without
    ``--model`` or ``$SMARTPOLE_MODEL``, so with the model the package ships."""
    (x1, y1), (x2, y2) = LABELS["line"]
    return analyzed_clip(CLIP, f"{x1},{y1},{x2},{y2}")


def truth() -> Counter[tuple[str, str]]:
    return Counter((c["direction"], c["class"]) for c in LABELS["crossings"])


def test_the_output_has_the_documented_shape(analyzed: dict[str, Any]) -> None:
    assert analyzed["line"] == LABELS["line"]
    assert set(analyzed["counts"]) == {"in", "out"}
    for direction in ("in", "out"):
        assert tuple(analyzed["counts"][direction]) == CLASSES
    assert analyzed["frames"] == LABELS["frames"]
    assert analyzed["fps"] > 0
    assert analyzed["video_fps"] == pytest.approx(24.0, abs=0.1)
    assert analyzed["warnings"] == []


def test_every_direction_and_class_total_matches_the_labels(analyzed: dict[str, Any]) -> None:
    labels = truth()
    wrong = {}
    for direction in ("in", "out"):
        for name in CLASSES:
            want = labels[(direction, name)]
            got = analyzed["counts"][direction][name]
            if abs(got - want) > TOLERANCE * want:
                wrong[f"{direction}/{name}"] = f"counted {got}, labelled {want}"
    assert not wrong, f"outside {TOLERANCE:.0%} of the labels: {wrong}"


def test_no_road_user_is_missed_or_counted_twice(analyzed: dict[str, Any]) -> None:
    """Class aside: the vehicles per direction (a miscalled class still fails the test above)."""
    for direction in ("in", "out"):
        want = sum(n for (d, _), n in truth().items() if d == direction)
        assert sum(analyzed["counts"][direction].values()) == want, direction


# --- bad input: one line on stderr, exit 2 -----------------------------------------------


def analyze(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "SMARTPOLE_MODEL"}
    return subprocess.run(
        [*SMARTPOLE, "analyze", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**environ, **(env or {})},
    )


@pytest.mark.parametrize(
    ("video", "line", "model", "message"),
    [
        ("clip", "150,230,700,230", "model", "--line 150,230,700,230: p2 (700, 230) is outside"),
        ("clip", "150,230,640", "model", "expected four numbers"),
        ("missing", "150,230,640,230", "model", "no such video file"),
        ("truncated", "150,230,640,230", "model", "video: cannot open"),
        ("empty", "150,230,640,230", None, "empty.mp4' is empty (0 bytes)"),
        ("undecodable", "150,230,640,230", None, "no decoder here reads its video codec"),
        ("clip", "150,230,640,230", "garbage", "model: "),
        ("clip", "150,230,640,230", "missing", "model: "),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    tmp_path: Path, video: str, line: str, model: str | None, message: str
) -> None:
    paths = {
        "clip": CLIP,
        "model": MODEL,
        "missing": tmp_path / "missing",
        "garbage": tmp_path / "garbage.onnx",
        "truncated": tmp_path / "truncated.mp4",
    }
    paths["garbage"].write_text("not a model\n")
    paths["truncated"].write_bytes(CLIP.read_bytes()[:100_000])
    if video == "empty":
        paths["empty"] = bad_clips.empty_clip(tmp_path)
    if video == "undecodable":
        paths["undecodable"] = bad_clips.undecodable_clip(CLIP, tmp_path)
    args = [str(paths[video]), "--line", line, "--json"]
    if model is not None:
        args += ["--model", str(paths[model])]
    done = analyze(*args)
    assert done.returncode == 2
    assert done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert message in done.stderr


def test_a_clip_whose_timestamps_contradict_its_rate_is_counted_with_a_warning(
    tmp_path: Path,
) -> None:
    done = analyze(str(bad_clips.slow_clip(CLIP, tmp_path)), "--line", "150,230,640,230", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["frames"] == 30
    assert result["video_fps"] == pytest.approx(24.0 / bad_clips.SLOWDOWN, rel=0.02)
    (warning,) = result["warnings"]
    assert "declared frame rate 24 fps disagrees with the timestamps" in warning


def test_the_model_may_come_from_the_environment(tmp_path: Path) -> None:
    """``$SMARTPOLE_MODEL`` wins over the shipped model (a broken one shows it was read)."""
    garbage = tmp_path / "garbage.onnx"
    garbage.write_text("not a model\n")
    done = analyze(str(CLIP), "--line", "150,230,640,230", env={"SMARTPOLE_MODEL": str(garbage)})
    assert done.returncode == 2
    assert f"model: {garbage}" in done.stderr


# --- a camera's section of a pole config, and --rsm ----------------------------------------


def _camera(**extra: Any) -> dict[str, Any]:
    return {"source": str(CLIP), "lines": {"road": {"from": [150, 230], "to": [640, 230]}}, **extra}


@pytest.mark.parametrize(
    ("cameras", "args", "message"),
    [
        (None, ["--line", "150,230,640,230", "--rsm", "out.jsonl"], "--rsm needs --config"),
        (None, [], "give --line X1,Y1,X2,Y2, or --config POLE.yaml"),
        ({"a": _camera(), "b": _camera()}, [], "--camera NAME is needed (POLE has: a, b)"),
        ({"a": _camera()}, ["--camera", "c"], "no camera 'c' (POLE has: a)"),
        ({"a": _camera()}, ["--rsm", "out.jsonl"], "--rsm: the camera sends no RSM: no geo-"),
    ],
)
def test_a_camera_that_cannot_be_analysed_as_asked_is_one_line_and_exit_2(
    tmp_path: Path, cameras: dict[str, Any] | None, args: list[str], message: str
) -> None:
    args = [str(tmp_path / a) if a.endswith(".jsonl") else a for a in args]
    if cameras is not None:
        pole = pole_config(tmp_path, sections={"cameras": cameras})
        args += ["--config", str(pole)]
        message = message.replace("POLE", str(pole))
    done = analyze(str(CLIP), *args, "--json")
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert message in done.stderr


def test_a_broken_pole_config_is_reported_by_file_and_line(tmp_path: Path) -> None:
    pole = pole_config(
        tmp_path, sections={"cameras": {"a": _camera(calibration={"image": [[0, 0], [1, 1]]})}}
    )
    done = analyze(str(CLIP), "--config", str(pole), "--json")
    assert done.returncode == 2
    line = next(n for n, text in enumerate(pole.read_text().splitlines(), 1) if "image:" in text)
    assert f"{pole}:{line}: cameras.a.calibration.image" in done.stderr
