"""A camera's ``calibration:``: its kinds, and every bad one refused with file, line and key.

The checks are pure Python in the camera schema, so the config check locates them in the
pole file and the worker, reading the same section as JSON, refuses the very same ones.
"""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from helpers.paths import PROFILES, REPO
from smartpole.agent.buses.registry import load_config
from smartpole.agent.config.cameras import CameraConfig
from smartpole.agent.config.geodesy import GeoFrame
from smartpole.agent.core.errors import ConfigError
from smartpole.models.errors import AnalyticsConfigError
from smartpole.models.worker import parse

ORIGIN = "origin: {latitude: 23.1291, longitude: 113.2644}"
IMAGE = """\
image:
  - [300, 200]
  - [520, 200]
  - [640, 340]
  - [160, 340]
"""
# A lane 7 m wide and 30 m long north of the pole, as seen by a camera looking north.
EAST_NORTH = """\
ground_en_m:
  - [-3.5, 30]
  - [3.5, 30]
  - [3.5, 0]
  - [-3.5, 0]
"""
LATLON = """\
ground_latlon:
  - [23.12937, 113.26437]
  - [23.12937, 113.26443]
  - [23.12910, 113.26443]
  - [23.12910, 113.26437]
"""
SITE = "site: {latitude: 23.1291, longitude: 113.2644, timezone: Asia/Shanghai}\n"


def pole(tmp_path: Path, calibration: str, site: str = SITE) -> Path:
    config = tmp_path / "pole.yaml"
    (tmp_path / "clip.mp4").write_bytes(b"")
    block = textwrap.indent(calibration, "      ")
    config.write_text(
        f"""pole: {{id: camera-rig}}
profiles_dir: {PROFILES}
{site}buses:
  rs485-1: {{type: modbus-rtu, port: /dev/null}}
devices:
  weather: {{profile: cwt-uwd, bus: rs485-1, unit_id: 1}}
cameras:
  street:
    source: clip.mp4
    lines:
      road: {{from: [10, 10], to: [100, 10]}}
    calibration:
{block}"""
    )
    return config


def line_of(config: Path, marker: str) -> int:
    lines = config.read_text().splitlines()
    return next(n for n, text in enumerate(lines, 1) if marker in text)


def test_the_three_kinds_pass_and_give_east_north_metres(tmp_path: Path) -> None:
    for calibration, kind in [
        (IMAGE + "ground_m: [[0, 30], [7, 30], [7, 0], [0, 0]]\n", "ground_m"),
        (IMAGE + ORIGIN + "\n" + EAST_NORTH, "ground_en_m"),
        (IMAGE + ORIGIN + "\n" + LATLON, "ground_latlon"),
    ]:
        camera = load_config(pole(tmp_path, calibration)).pole.cameras["street"]
        assert camera.calibration is not None
        assert camera.calibration.kind == kind
    frame = GeoFrame(23.1291, 113.2644)
    assert camera.calibration.geo_frame() == frame
    expected = [frame.to_en(lat, lon) for lat, lon in yaml.safe_load(LATLON)["ground_latlon"]]
    assert camera.calibration.ground_points() == expected
    assert expected[0][1] == pytest.approx(29.9, abs=0.1)  # 0.00027 degree north


# (calibration text, the text on the line the problem points at, key, message)
BAD: list[tuple[str, str, str, str]] = [
    (
        IMAGE.replace("[640, 340]", "[-3, 340]") + "ground_m: [[0, 30], [7, 30], [7, 0], [0, 0]]\n",
        "[-3, 340]",
        "calibration.image[2]",
        "[-3, 340] is not in the image: pixels count from its top-left corner",
    ),
    (
        "image: [[100, 100], [200, 100], [300, 100], [150, 300]]\n"
        "ground_m: [[0, 30], [7, 30], [7, 0], [0, 0]]\n",
        "image:",
        "calibration.image",
        "three of the 4 points are (nearly) on one line",
    ),
    (
        "image: [[300, 200], [520, 200], [160, 340], [640, 340]]\n"
        "ground_m: [[0, 30], [7, 30], [7, 0], [0, 0]]\n",
        "image:",
        "calibration.image",
        "crosses itself, a 'bow tie'",
    ),
    (
        IMAGE + "ground_m: [[0, 0], [0.5, 0], [0.5, 0.5], [0, 0.5]]\n",
        "ground_m:",
        "calibration.ground_m",
        "the ground quadrilateral covers 0.25 m², less than 1 m²",
    ),
    (
        IMAGE + ORIGIN + "\n" + "ground_en_m: [[0, 0], [0, 0], [3, 3], [0, 3]]\n",
        "ground_en_m:",
        "calibration.ground_en_m",
        "two of the 4 points are the same",
    ),
    (
        IMAGE + ORIGIN + "\n" + EAST_NORTH.replace("[3.5, 30]", "[3.5, 3000]"),
        "[3.5, 3000]",
        "calibration.ground_en_m[1]",
        "[3.5, 3000] is 3.0 km from the origin",
    ),
    (
        IMAGE + ORIGIN + "\n" + LATLON.replace("[23.12937, 113.26443]", "[23.15937, 113.26443]"),
        "[23.15937, 113.26443]",
        "calibration.ground_latlon[1]",
        "[23.1594, 113.264] is 3.4 km from the origin",
    ),
    (
        IMAGE + ORIGIN + "\n" + LATLON.replace("[23.12937, 113.26443]", "[113.26443, 23.12937]"),
        "[113.26443, 23.12937]",
        "calibration.ground_latlon[1]",
        "latitude is -90 to 90, longitude -180 to 180 ([latitude, longitude] swapped?)",
    ),
    (
        # East and north swapped: the mirror image of the lane.
        IMAGE + ORIGIN + "\n" + "ground_en_m: [[30, -3.5], [30, 3.5], [0, 3.5], [0, -3.5]]\n",
        "ground_en_m:",
        "calibration.ground_en_m",
        "the ground points go around the other way than the image points, as in a mirror",
    ),
    (
        IMAGE + LATLON,
        "calibration:",
        "calibration",
        "ground_latlon needs origin: {latitude, longitude}, the pole's surveyed position",
    ),
    (
        IMAGE + ORIGIN + "\n" + EAST_NORTH + "ground_m: [[0, 30], [7, 30], [7, 0], [0, 0]]\n",
        "calibration:",
        "calibration",
        "give one of ground_m, ground_en_m, not 2",
    ),
    (
        IMAGE + ORIGIN + "\n" + "ground_m: [[0, 30], [7, 30], [7, 0], [0, 0]]\n",
        "calibration:",
        "calibration",
        "origin places ground_en_m or ground_latlon on the earth; ground_m is any road frame",
    ),
    (
        IMAGE,
        "calibration:",
        "calibration",
        "where the image points lie on the road is missing: give one of ground_m",
    ),
]


@pytest.mark.parametrize(("calibration", "marker", "key", "message"), BAD)
def test_the_config_check_locates_a_bad_calibration(
    tmp_path: Path, calibration: str, marker: str, key: str, message: str
) -> None:
    config = pole(tmp_path, calibration)
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    (problem,) = caught.value.problems
    where = f"{config}:{line_of(config, marker)}: cameras.street.{key}: "
    assert str(problem).startswith(where), str(problem)
    assert message in problem.message


@pytest.mark.parametrize(("calibration", "marker", "key", "message"), BAD)
def test_the_worker_refuses_the_same_calibration_naming_the_key(
    calibration: str, marker: str, key: str, message: str
) -> None:
    section: dict[str, Any] = {
        "source": "/video/clip.mp4",
        "lines": {"road": {"from": [10, 10], "to": [100, 10]}},
        "calibration": yaml.safe_load(calibration),
    }
    with pytest.raises(AnalyticsConfigError) as caught:
        parse(json.dumps(section))
    dotted = re.sub(r"\[(\d+)\]", r".\1", key)  # the worker's line has no file to point into
    assert str(caught.value).startswith(f"--config: {dotted}: ")
    assert message in str(caught.value)


def test_an_origin_far_from_the_site_is_a_problem_at_the_origin(tmp_path: Path) -> None:
    """Two places for one pole that disagree by kilometres: one of them is mistyped."""
    site = SITE.replace("113.2644", "113.2844")  # 0.02 degree east: 2 km
    config = pole(tmp_path, IMAGE + ORIGIN + "\n" + EAST_NORTH, site=site)
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    (problem,) = caught.value.problems
    assert str(problem) == (
        f"{config}:{line_of(config, 'origin:')}: cameras.street.calibration.origin: "
        "the origin is 2.0 km from the site (23.1291, 113.284); both say where this pole "
        "stands, so one of them is mistyped"
    )
    # Within 1 km (a long street's site written once for several poles) is fine.
    near = SITE.replace("113.2644", "113.2704")
    load_config(pole(tmp_path, IMAGE + ORIGIN + "\n" + EAST_NORTH, site=near))
    # No site: nothing to compare.
    load_config(pole(tmp_path, IMAGE + ORIGIN + "\n" + EAST_NORTH, site=""))


def test_a_geo_calibration_survives_the_trip_to_the_worker(tmp_path: Path) -> None:
    camera = load_config(pole(tmp_path, IMAGE + ORIGIN + "\n" + LATLON)).pole.cameras["street"]
    sent = camera.for_worker(tmp_path)
    assert parse(sent.model_dump_json(by_alias=True)) == sent
    assert CameraConfig.model_validate_json(sent.model_dump_json()).calibration == (
        camera.calibration
    )


def test_the_example_pole_is_geo_calibrated_and_sends_v2x() -> None:
    """configs/poles/v2x-camera.yaml passes the check, and its marks given as latitude and
    longitude are the ones its comment gives in metres east/north, to the centimetre."""
    loaded = load_config(REPO / "configs" / "poles" / "v2x-camera.yaml").pole
    calibration = loaded.cameras["north"].calibration
    assert calibration is not None
    assert calibration.kind == "ground_latlon"
    expected = [(-1.5, 40), (5.5, 40), (5.5, 10), (-1.5, 10)]
    for got, want in zip(calibration.ground_points(), expected, strict=True):
        assert got == pytest.approx(want, abs=0.01)
    assert loaded.v2x is not None
    assert loaded.v2x.rsm_topic() == "V2X/RSU/R328328/RSM/UP"
