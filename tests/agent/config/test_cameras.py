"""One camera schema for both processes: the config check and the worker agree on every key.

A camera section is validated twice, by the daemon (``smartpole config check``, with file
and line) and by the camera's worker (from JSON on its command line). Both use
``CameraConfig``; these tests hold that what the daemon sends is read back as the same
settings, and that what either side refuses is named by its key.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from helpers.calibrations import calibrations
from helpers.paths import PROFILES
from smartpole.agent.buses.registry import load_config
from smartpole.agent.config.camera_worker import command
from smartpole.agent.config.cameras import COCO_TRAFFIC, CameraConfig, describe
from smartpole.agent.core.errors import ConfigError
from smartpole.models.default_model import model_path, shipped_model_file
from smartpole.models.errors import AnalyticsConfigError
from smartpole.models.worker import parse

LINE = {"from": [150, 230], "to": [640, 230]}
BASE: dict[str, Any] = {"source": "clip.mp4", "model": "model.onnx", "lines": {"road": LINE}}

coordinate = st.floats(-5000, 5000, allow_nan=False)
point = st.tuples(coordinate, coordinate)
name = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,12}", fullmatch=True)


@st.composite
def zones(draw: st.DrawFn) -> dict[str, Any]:
    x, y = draw(point)
    w, h = draw(st.floats(2, 2000)), draw(st.floats(2, 2000))
    zone: dict[str, Any] = {
        "polygon": [[x, y], [x + w, y], [x + w, y + h], [x, y + h]],
        "kind": draw(st.sampled_from(["occupancy", "carriageway", "no_stopping", "queue"])),
    }
    if zone["kind"] == "queue" or draw(st.booleans()):
        ends = draw(st.tuples(point, point).filter(lambda e: e[0] != e[1]))
        zone["stop_line"] = [list(end) for end in ends]
    if draw(st.booleans()):
        zone["direction"] = list(draw(point.filter(lambda d: d != (0.0, 0.0))))
    return zone


TUNING = {
    "detect_every": st.integers(1, 25),
    "detect_interval_s": st.floats(0.001, 2),
    "full_frame_s": st.floats(0.001, 60),
    "refresh_s": st.floats(0.01, 60),
    "score_threshold": st.floats(0.01, 1),
    "count_min_score": st.floats(0, 1),
    "nms_iou": st.floats(0.01, 1),
    "threads": st.integers(1, 64),
    "max_regions": st.integers(1, 16),
    "min_region_side": st.integers(32, 4096),
    "region_margin": st.floats(0, 2),
    "motion_work_width": st.integers(32, 4096),
    "motion_threshold": st.integers(1, 255),
    "motion_min_area": st.integers(1, 10_000),
    "band_px": st.floats(0, 100),
    "max_missed_s": st.floats(0.01, 60),
    "min_hits": st.integers(1, 25),
    "stopped_after_s": st.floats(0.01, 3600),
    "pedestrian_after_s": st.floats(0, 60),
    "interval_s": st.floats(0.01, 3600),
    "no_frames_after_s": st.floats(0.01, 3600),
    "health_period_s": st.floats(0.01, 60),
    "loop": st.booleans(),
    "realtime": st.booleans(),
    # Omitted, the worker uses the model the package ships.
    "model": st.sampled_from(["model.onnx", "models/yolox.onnx", "/opt/models/yolox.onnx"]),
    "device": name,
    "classes": st.dictionaries(st.integers(0, 999), st.text(min_size=1, max_size=12), min_size=1),
    "zones": st.dictionaries(name, zones(), max_size=3),
    "calibration": calibrations(),
}
sections = st.fixed_dictionaries(
    {
        "source": st.sampled_from(["rtsp://10.0.0.20/stream1", "clip.mp4", "video/street.mp4"]),
        "lines": st.dictionaries(
            name,
            st.tuples(point, point)
            .filter(lambda e: e[0] != e[1])
            .map(lambda e: {"from": list(e[0]), "to": list(e[1])}),
            min_size=1,
            max_size=4,
        ),
    },
    optional=TUNING,
)


@given(sections)
def test_what_the_daemon_sends_the_worker_reads_as_the_same_settings(
    section: dict[str, Any],
) -> None:
    config = CameraConfig.model_validate(section)
    sent = config.for_worker(Path("/etc/smartpole"))
    argv = command(sys.executable, "street", sent)
    assert parse(argv[argv.index("--config") + 1]) == sent


@given(sections)
def test_the_worker_gets_absolute_paths_and_the_rest_unchanged(section: dict[str, Any]) -> None:
    config = CameraConfig.model_validate(section)
    sent = config.for_worker(Path("/etc/smartpole"))
    if config.model is None:
        assert sent.model is None  # the worker finds the shipped model in its own package
    else:
        assert Path(sent.model or "").is_absolute()
        assert sent.model == str(Path("/etc/smartpole", config.model).resolve())
    if "://" in config.source:
        assert sent.source == config.source
    else:
        assert sent.source == str(Path("/etc/smartpole", config.source).resolve())
    assert sent.model_copy(update={"source": config.source, "model": config.model}) == config


def test_the_defaults() -> None:
    config = CameraConfig.model_validate(BASE)
    assert config.classes == COCO_TRAFFIC
    assert (config.interval_s, config.health_period_s, config.no_frames_after_s) == (60, 2, 30)
    assert (config.realtime, config.loop) == (True, False)
    assert (config.detect_every, config.detect_interval_s, config.full_frame_s) == (None, 0.16, 1)
    assert (config.count_min_score, config.band_px) == (0.4, 6.0)
    assert config.zones == {}
    assert config.calibration is None
    assert config.device is None


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"interval_s": 0}, "interval_s: Input should be greater than 0 (got 0)"),
        ({"detect_every": 1.5}, "detect_every: Input should be a valid integer"),
        ({"intervall_s": 60}, "intervall_s: unknown key"),
        ({"classes": {}}, "classes: Dictionary should have at least 1 item"),
        ({"classes": {"car": "car"}}, "classes.car: Input should be a valid integer"),
        ({"classes": {2: ""}}, "classes.2: String should have at least 1 character"),
        ({"lines": {}}, "lines: Dictionary should have at least 1 item"),
        ({"lines": {"a": {"from": [0, 0], "to": [0, 0]}}}, "lines.a: a counting line needs two"),
        ({"lines": {"a": {"from": [0, 0]}}}, "lines.a.to: required key is missing"),
        ({"lines": {"a": {"from": [0, 0], "to": [1]}}}, "lines.a.to.1: a value is missing"),
        (
            {"zones": {"z": {"polygon": [[0, 0], [10, 0], [20, 0]]}}},
            "zones.z.polygon: the zone has zero area",
        ),
        (
            {"zones": {"z": {"polygon": [[0, 0], [9, 0], [9, 9]], "kind": "x"}}},
            "zones.z.kind: Input should be",
        ),
        (
            {"zones": {"z": {"polygon": [[0, 0], [9, 0], [9, 9]], "direction": [0, 0]}}},
            "zones.z.direction: a direction must be a non-zero (dx, dy)",
        ),
        (
            {"zones": {"z": {"polygon": [[0, 0], [9, 0], [9, 9]], "kind": "queue"}}},
            "zones.z: a queue zone needs a stop_line",
        ),
        (
            {"calibration": {"image": [[0, 0]] * 3, "ground_m": [[0, 0]] * 4}},
            "calibration.image: List should have at least 4",
        ),
        ({"source": ""}, "source: String should have at least 1 character"),
    ],
)
def test_the_worker_names_the_key_of_a_bad_setting(extra: dict[str, Any], message: str) -> None:
    with pytest.raises(AnalyticsConfigError) as caught:
        parse(json.dumps({**BASE, **extra}))
    assert message in str(caught.value)


def test_numbers_must_be_finite() -> None:
    """YAML can say ``.inf``; JSON cannot carry it to the worker, and no setting means it."""
    with pytest.raises(ValidationError) as caught:
        CameraConfig.model_validate(
            {**BASE, "lines": {"a": {"from": [0, 0], "to": [float("inf"), 1]}}}
        )
    assert "lines.a.to.0: Input should be a finite number" in describe(caught.value)


def test_the_config_check_locates_a_camera_problem_by_file_line_and_key(tmp_path: Path) -> None:
    """The geometry checks that both processes share still point into the pole config."""
    config = tmp_path / "pole.yaml"
    config.write_text(
        f"""pole: {{id: camera-rig}}
profiles_dir: {PROFILES}
buses:
  rs485-1: {{type: modbus-rtu, port: /dev/null}}
devices:
  weather: {{profile: cwt-uwd, bus: rs485-1, unit_id: 1}}
cameras:
  street:
    source: clip.mp4
    model: model.onnx
    lines:
      road: {{from: [10, 10], to: [10, 10]}}
"""
    )
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    (problem,) = caught.value.problems
    lines = config.read_text().splitlines()
    road = next(n for n, text in enumerate(lines, 1) if text.strip().startswith("road:"))
    assert str(problem) == (
        f"{config}:{road}: cameras.street.lines.road: a counting line needs two different points"
    )


def test_tuning_keys_are_pole_config_keys() -> None:
    config = CameraConfig.model_validate({**BASE, "detect_every": 2, "stopped_after_s": 5})
    assert (config.detect_every, config.stopped_after_s) == (2, 5.0)


def _camera_pole(tmp_path: Path, model: str | None) -> Path:
    config = tmp_path / "etc" / "pole.yaml"
    config.parent.mkdir(exist_ok=True)
    (config.parent / "clip.mp4").write_bytes(b"")
    model_line = "" if model is None else f"\n    model: {model}"
    config.write_text(
        f"""pole: {{id: camera-rig}}
profiles_dir: {PROFILES}
buses:
  rs485-1: {{type: modbus-rtu, port: /dev/null}}
devices:
  weather: {{profile: cwt-uwd, bus: rs485-1, unit_id: 1}}
cameras:
  street:
    source: clip.mp4{model_line}
    lines:
      road: {{from: [10, 10], to: [100, 10]}}
"""
    )
    return config


def test_an_installed_pole_names_the_shipped_model_by_its_absolute_path(tmp_path: Path) -> None:
    """/usr/share/smartpole/models/... on a pole: an absolute model path is taken as it is,
    not from the config's folder (here a stand-in under tmp_path, same code path)."""
    shipped = tmp_path / "usr" / "share" / "smartpole" / "models" / "yolox-nano-coco-416.onnx"
    shipped.parent.mkdir(parents=True)
    shipped.write_bytes(b"onnx")
    config = _camera_pole(tmp_path, str(shipped))
    camera = load_config(config).pole.cameras["street"]
    assert camera.for_worker(config.parent).model == str(shipped)


def test_a_camera_without_a_model_passes_the_check_and_the_worker_uses_the_shipped_one(
    tmp_path: Path,
) -> None:
    config = _camera_pole(tmp_path, None)
    camera = load_config(config).pole.cameras["street"]
    assert camera.model is None
    sent = camera.for_worker(config.parent)
    assert sent.model is None
    assert model_path(sent.model) == shipped_model_file()


def test_a_missing_model_says_where_it_was_looked_for(tmp_path: Path) -> None:
    absent = "/usr/share/smartpole/models/no-such-model.onnx"
    with pytest.raises(ConfigError) as caught:
        load_config(_camera_pole(tmp_path, absent))
    (problem,) = caught.value.problems
    assert problem.message == f"no model file {absent!r}"
    with pytest.raises(ConfigError) as caught:
        load_config(_camera_pole(tmp_path, "models/m.onnx"))
    (problem,) = caught.value.problems
    where = tmp_path / "etc" / "models" / "m.onnx"
    assert problem.message == f"no model file 'models/m.onnx' ({where}, relative to the config)"
    with pytest.raises(ConfigError) as caught:  # was a crash: ENAMETOOLONG from is_file
        load_config(_camera_pole(tmp_path, "m" * 3000))
    (problem,) = caught.value.problems
    assert problem.message.startswith("no model file 'mmm")
