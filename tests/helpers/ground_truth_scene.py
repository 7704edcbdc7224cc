"""The ground-truth scene: a virtual camera over the street clip's road, the road users cut
from that clip, and where and how fast each one drives (the truth the pipeline is scored on).

Why a virtual camera rather than four clicked points: the crops must be scaled by the same
perspective that places them, and the truth must hold exactly, so the scene owns one pinhole
camera (height, focal length, pitch, yaw) and everything follows from it: the homography
ground -> image, the four calibration points handed to the pipeline, the pixels per metre
a crop is scaled to. The camera was fitted by eye to the median frame of the street clip
(``street-2lane-640x352.mp4``, shown at 1280x720): the road's vanishing point (383, 216),
its near kerb through (600, 715) and its yellow centre line through (1280, 590); the height
then follows from the crops themselves (a car's front-oblique box is about 2.3 m wide), so
the camera stands 2.3 m above the road, like the porch camera that filmed the clip.

Ground frame: metres east (x) and north (y) of the pole, the camera at the pole; the road
runs north. The near lane (towards the camera) lies between the kerb at east 0.87 m and the
centre line at east 5.27 m; the far lane beyond it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

import numpy as np
from numpy.typing import NDArray

F64 = NDArray[np.float64]

WIDTH: Final = 1280
HEIGHT: Final = 720
FPS: Final = 25
#: The clip the background and the road users come from (in ``../shared/data/video/``).
CLIP: Final = "street-2lane-640x352.mp4"
#: Its frames are shown at 1280x720: 2.0 across, 720/352 down (2 % taller than square).
CLIP_SCALE: Final = (WIDTH / 640.0, HEIGHT / 352.0)

FOCAL_PX: Final = 1000.0
CAMERA_HEIGHT_M: Final = 2.3
_HORIZON_V, _VANISHING_U = 216.0, 383.0
PITCH: Final = math.atan((HEIGHT / 2 - _HORIZON_V) / FOCAL_PX)
YAW: Final = math.atan((WIDTH / 2 - _VANISHING_U) * math.cos(PITCH) / FOCAL_PX)

#: The pole's surveyed position (a site in Guangzhou's Huangpu demonstration zone; any
#: point would do): the RSM's lat/lon are relative to it.
ORIGIN_LAT: Final = 23.1066
ORIGIN_LON: Final = 113.4590

#: The pipeline is calibrated with these four ground points (east, north) and their pixels
#: (all inside the frame).
GROUND_QUAD: Final = ((0.0, 7.0), (7.0, 7.0), (7.0, 25.0), (0.0, 25.0))
#: Positions are scored up to this far north: beyond it one pixel of box edge is more than
#: 0.28 m of road at this camera height (``metres_per_pixel_north``), 0.7 m at 40 m.
FAR_M: Final = 25.0


def _ground_to_image() -> F64:
    """The homography taking (east, north, 1) on the road to image pixels (u, v, 1)."""
    cp, sp, cy, sy = math.cos(PITCH), math.sin(PITCH), math.cos(YAW), math.sin(YAW)
    forward = np.array([sy * cp, cy * cp, -sp])
    right = np.array([cy, -sy, 0.0])
    down = np.cross(forward, right)
    rotation = np.stack([right, down, forward])
    lift = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, -CAMERA_HEIGHT_M]])
    intrinsics = np.array(
        [[FOCAL_PX, 0.0, WIDTH / 2], [0.0, FOCAL_PX, HEIGHT / 2], [0.0, 0.0, 1.0]]
    )
    matrix: F64 = intrinsics @ rotation @ lift
    normalised: F64 = matrix / matrix[2, 2]
    return normalised


GROUND_TO_IMAGE: Final = _ground_to_image()
IMAGE_TO_GROUND: Final = np.linalg.inv(GROUND_TO_IMAGE)


def to_image(east_m: float, north_m: float) -> tuple[float, float]:
    """The pixel (u, v) of a ground point."""
    u, v, w = GROUND_TO_IMAGE @ np.array([east_m, north_m, 1.0])
    return (float(u / w), float(v / w))


def to_ground(u: float, v: float) -> tuple[float, float]:
    """The ground point (east, north) of a pixel below the horizon."""
    e, n, w = IMAGE_TO_GROUND @ np.array([u, v, 1.0])
    return (float(e / w), float(n / w))


def pixels_per_metre_across(east_m: float, north_m: float) -> float:
    """Image pixels per metre east at a ground point: what a crop's width is scaled by."""
    return to_image(east_m + 0.5, north_m)[0] - to_image(east_m - 0.5, north_m)[0]


def metres_per_pixel_north(east_m: float, north_m: float) -> float:
    """Metres of road per image row at a ground point (the depth error of one pixel)."""
    return 1.0 / (to_image(east_m, north_m - 0.5)[1] - to_image(east_m, north_m + 0.5)[1])


def calibration_points() -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
    """The four (image, ground east/north) point pairs the pipeline is calibrated with."""
    image = [to_image(e, n) for e, n in GROUND_QUAD]
    return [(round(u, 2), round(v, 2)) for u, v in image], [(e, n) for e, n in GROUND_QUAD]


#: The clip with the one clean heavy vehicle of the shared data (a box truck, head-on).
TRUCK_CLIP: Final = "arterial-overpass-320x240-60fps.avi"


@dataclass(frozen=True)
class CropSource:
    """A road user in a clip: its frame, its box there (clip pixels; YOLOX-nano's at score
    >= 0.83 for the cars, checked by eye: whole, unoccluded, inside the frame), the box's
    real width (a front-oblique view of a car shows its front and some of its side, about
    2.3 m) and how much taller than wide a clip pixel is shown (the street clip's 2 %)."""

    name: str
    class_name: str
    frame: int
    box: tuple[float, float, float, float]
    width_m: float = 2.3
    clip: str = CLIP
    stretch: float = CLIP_SCALE[1] / CLIP_SCALE[0]


CROPS: Final = {
    c.name: c
    for c in (
        CropSource("red-hatchback", "car", 74, (261.7, 156.2, 379.3, 233.9)),
        CropSource("grey-sedan", "car", 134, (316.2, 175.2, 496.6, 300.4)),
        CropSource("white-pickup", "car", 179, (259.3, 144.7, 417.3, 257.4), width_m=2.5),
        CropSource("white-suv", "car", 239, (292.5, 155.0, 436.8, 248.2)),
        CropSource("black-suv", "car", 419, (274.0, 140.0, 414.5, 244.0)),
        CropSource("black-sedan", "car", 479, (286.7, 162.3, 437.8, 265.7)),
        CropSource("grey-suv", "car", 719, (314.5, 159.4, 499.8, 306.1)),
        # Boxed by eye: YOLOX-nano's box there also takes in the car alongside.
        CropSource("box-truck", "truck", 262, (166.0, 81.0, 239.0, 183.0), 2.4, TRUCK_CLIP, 1.0),
    )
}


@dataclass(frozen=True)
class Trajectory:
    """One road user driving a straight line at a constant speed, from ``start_t_s`` at
    (``east_m``, ``start_north_m``) until ``end_north_m``; it exists only in between.
    ``speed_ms`` is positive northwards (away from the camera), negative towards it."""

    participant: int
    crop: str
    start_t_s: float
    east_m: float
    start_north_m: float
    speed_ms: float
    end_north_m: float = 3.0

    @property
    def end_t_s(self) -> float:
        return self.start_t_s + (self.end_north_m - self.start_north_m) / self.speed_ms

    def at(self, t_s: float) -> tuple[float, float] | None:
        """(east, north) at ``t_s``, or None when the road user is not on the road."""
        if not self.start_t_s <= t_s <= self.end_t_s:
            return None
        return (self.east_m, self.start_north_m + self.speed_ms * (t_s - self.start_t_s))

    @property
    def heading_deg(self) -> float:
        return 0.0 if self.speed_ms > 0 else 180.0


#: Sixteen seconds of traffic at 18-36 km/h, all towards the camera (the clip shows only
#: fronts), one road user per lane at a time so that none drives through another: the near
#: lane at east about 3 m, the far lane at about 7.2 m (a wrong-way driver, for V2X). Each
#: starts beyond the scored zone, so its track exists before it is scored.
SCENARIO: Final = (
    Trajectory(1, "red-hatchback", 0.0, 3.0, 32.0, -8.0),
    Trajectory(2, "grey-sedan", 0.5, 7.2, 30.0, -5.0),
    Trajectory(3, "white-pickup", 2.4, 2.8, 38.0, -10.0),
    Trajectory(4, "white-suv", 5.0, 7.0, 34.0, -9.0),
    Trajectory(5, "black-suv", 4.8, 3.2, 36.0, -6.0),
    Trajectory(6, "black-sedan", 8.0, 7.3, 32.0, -6.0),
    Trajectory(7, "grey-suv", 9.0, 3.0, 36.0, -7.0),
    Trajectory(8, "box-truck", 11.6, 7.0, 30.0, -5.5),
)
DURATION_S: Final = 16.0
