"""``Scene.of``: a geo-calibration becomes a ground calibration in metres east/north of the
pole and a ``GeoFrame`` that puts them on the earth; speeds keep working in either kind."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given

from helpers.calibrations import calibrations
from smartpole.agent.config.cameras import CameraConfig
from smartpole.models.errors import AnalyticsConfigError
from smartpole.models.geo import GeoFrame
from smartpole.models.scene import Scene

LINE = {"from": [10, 10], "to": [100, 10]}
IMAGE = [[300, 200], [520, 200], [640, 340], [160, 340]]
ORIGIN = {"latitude": 23.1291, "longitude": 113.2644}
EAST_NORTH = [[-3.5, 30], [3.5, 30], [3.5, 0], [-3.5, 0]]


def scene(calibration: dict[str, Any] | None) -> Scene:
    section: dict[str, Any] = {"source": "/video/clip.mp4", "lines": {"road": LINE}}
    if calibration is not None:
        section["calibration"] = calibration
    return Scene.of(CameraConfig.model_validate(section))


@given(calibrations(kinds=("ground_en_m", "ground_latlon")))
def test_image_points_land_on_their_geo_position(calibration: dict[str, Any]) -> None:
    built = scene(calibration)
    assert built.calibration is not None
    assert built.geo is not None
    origin = calibration["origin"]
    assert built.geo == GeoFrame(origin["latitude"], origin["longitude"])
    ground = built.calibration.to_ground(calibration["image"])
    if "ground_en_m" in calibration:
        assert ground == pytest.approx(np.asarray(calibration["ground_en_m"]), abs=1e-6)
    else:
        latlon = [built.geo.to_latlon(float(e), float(n)) for e, n in ground]
        # 1e-9 degree is 0.1 mm: the homography and the frame together lose nothing.
        assert np.asarray(latlon) == pytest.approx(
            np.asarray(calibration["ground_latlon"]), abs=1e-9
        )


def test_the_same_points_as_east_north_or_latlon_give_the_same_homography() -> None:
    frame = GeoFrame(ORIGIN["latitude"], ORIGIN["longitude"])
    latlon = [list(frame.to_latlon(e, n)) for e, n in EAST_NORTH]
    en = scene({"image": IMAGE, "origin": ORIGIN, "ground_en_m": EAST_NORTH})
    ll = scene({"image": IMAGE, "origin": ORIGIN, "ground_latlon": latlon})
    assert en.calibration is not None
    assert ll.calibration is not None
    pixels = [(x, y) for x in range(160, 641, 80) for y in range(200, 341, 35)]
    same = ll.calibration.to_ground(pixels)
    assert same == pytest.approx(en.calibration.to_ground(pixels), abs=1e-6)
    assert en.geo == ll.geo == frame


def test_a_metric_calibration_has_no_place_on_the_earth() -> None:
    built = scene({"image": IMAGE, "ground_m": [[0, 30], [7, 30], [7, 0], [0, 0]]})
    assert built.calibration is not None
    assert built.geo is None
    assert scene(None).geo is None


def test_an_image_point_outside_the_frame_is_a_config_error() -> None:
    """Negative pixels are the schema's; beyond the right or bottom edge needs the frame."""
    built = scene({"image": IMAGE, "origin": ORIGIN, "ground_en_m": EAST_NORTH})
    built.validate_frame(640, 360)
    with pytest.raises(AnalyticsConfigError) as caught:
        built.validate_frame(640, 320)
    assert str(caught.value) == (
        "calibration: image point 3 (640, 340) is outside the 640x320 frame "
        "(coordinates are the video's native pixels)"
    )
