"""A geo-calibration of the shared street clip, for the V2X test and bench.

Nobody surveyed that street, so the numbers are plausible rather than true: the two-lane
road seen from a pole on its west side looking north, 7 m wide, the quadrilateral's far
edge 40 m and its near edge 8 m north of the pole. Good enough for messages that must
flow at the right rate and follow the schema; position accuracy is tested on the
composited ground-truth video instead, whose geometry is known exactly.
"""

from __future__ import annotations

from typing import Any

#: The pole's (made-up) surveyed position: a street in Huangpu, Guangzhou.
ORIGIN = {"latitude": 23.1066805, "longitude": 113.4592718}
#: Far-left, far-right, near-right, near-left kerb corners in the 640x352 clip.
IMAGE_640 = [(222.0, 160.0), (300.0, 160.0), (600.0, 352.0), (262.0, 352.0)]
GROUND_EN_M = [(-3.5, 40.0), (3.5, 40.0), (3.5, 8.0), (-3.5, 8.0)]


def image_points(width: int, height: int) -> list[list[float]]:
    """The calibration's image points in a copy of the clip scaled to width x height."""
    return [[x * width / 640, y * height / 352] for x, y in IMAGE_640]


def calibration(width: int = 640, height: int = 352) -> dict[str, Any]:
    """The camera's ``calibration:`` section for the clip at width x height."""
    return {
        "image": image_points(width, height),
        "ground_en_m": [list(p) for p in GROUND_EN_M],
        "origin": dict(ORIGIN),
    }


def wrong_way_zone(width: int = 640, height: int = 352) -> dict[str, Any]:
    """A zone over the whole road whose allowed direction is up the image (away from the
    camera): every vehicle driving towards the camera is a wrong-way driver, which gives
    the clip RSI events that start and end."""
    sx, sy = width / 640, height / 352
    polygon = [
        [210 * sx, 150 * sy],
        [330 * sx, 150 * sy],
        [639 * sx, 300 * sy],
        [639 * sx, 351 * sy],
        [250 * sx, 351 * sy],
    ]
    return {"polygon": polygon, "kind": "occupancy", "direction": [0.0, -1.0]}
