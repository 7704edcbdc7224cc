"""Four-point ground-plane calibration: image pixels to metres on the road, and speeds.

A camera looking down a road sees the road surface through a perspective, which is a
homography between the image and the (flat) ground plane. Four image points whose ground
positions are known (the corners of a lane marking, a measured rectangle) fix it. Objects
are located by the bottom-centre of their box, the point where they touch the road, so only
that point is mapped: a car's roof is not on the ground plane and would map wrongly.

The homography is the normalised DLT (Hartley): points are centred and scaled before the
SVD, so pixel and metre magnitudes do not spoil its conditioning. Both quadrilaterals must
be strictly convex with their points in the same order around them (four points in a row,
three on a line or a crossed "bow tie" from a mistyped order are configuration errors), and
the horizon must not cross the image quadrilateral.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from smartpole.models.errors import AnalyticsConfigError

Point = tuple[float, float]
F64 = NDArray[np.float64]

#: A corner whose sine is smaller than this (about 0.6 degrees) counts as straight.
_MIN_CORNER_SINE = 0.01
KMH_PER_MS = 3.6


class HasPoints(Protocol):
    """Anything with a track's ``points``: ``(t_s, x, y)`` bottom-centre samples."""

    @property
    def points(self) -> Sequence[tuple[float, float, float]]: ...


def _quad(points: Sequence[Sequence[float]], what: str) -> F64:
    array = np.asarray(points, dtype=np.float64)
    if array.shape != (4, 2):
        raise AnalyticsConfigError(f"{what}: expected 4 (x, y) points, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise AnalyticsConfigError(f"{what}: points must be finite numbers")
    turns = []
    for i in range(4):
        a, b, c = array[i], array[(i + 1) % 4], array[(i + 2) % 4]
        e1, e2 = b - a, c - b
        norm = float(np.linalg.norm(e1) * np.linalg.norm(e2))
        if norm == 0.0:
            raise AnalyticsConfigError(f"{what}: two of the 4 points are the same")
        turns.append(float(e1[0] * e2[1] - e1[1] * e2[0]) / norm)
    if min(abs(t) for t in turns) < _MIN_CORNER_SINE:
        raise AnalyticsConfigError(f"{what}: three of the 4 points are (nearly) on one line")
    if not (all(t > 0 for t in turns) or all(t < 0 for t in turns)):
        raise AnalyticsConfigError(
            f"{what}: the 4 points must go around a convex quadrilateral in order "
            "(the order given crosses itself or bends inwards)"
        )
    return array


def _normaliser(points: F64) -> F64:
    """Similarity moving the centroid to 0 and the mean distance to sqrt(2) (Hartley)."""
    centre = points.mean(axis=0)
    spread = float(np.mean(np.linalg.norm(points - centre, axis=1)))
    s = math.sqrt(2.0) / spread
    return np.array([[s, 0, -s * centre[0]], [0, s, -s * centre[1]], [0, 0, 1]])


def homography(src: F64, dst: F64) -> F64:
    """The 3x3 homography taking ``src`` (N>=4, 2) onto ``dst``, by normalised DLT."""
    t_src, t_dst = _normaliser(src), _normaliser(dst)
    a = _apply(t_src, src)
    b = _apply(t_dst, dst)
    rows = []
    for (x, y), (u, v) in zip(a, b, strict=True):
        rows.append([-x, -y, -1, 0, 0, 0, u * x, u * y, u])
        rows.append([0, 0, 0, -x, -y, -1, v * x, v * y, v])
    _, _, vt = np.linalg.svd(np.asarray(rows))
    h = vt[-1].reshape(3, 3)
    out: F64 = np.linalg.inv(t_dst) @ h @ t_src
    normalised: F64 = out / out[2, 2]
    return normalised


def _project(matrix: F64, points: F64) -> tuple[F64, F64]:
    """Map (N, 2) points through a homography: (mapped (N, 2), the homogeneous w (N,)).

    Written out per row of the matrix: for the few points of one track this is several
    times faster than stacking a column of ones and a matrix product.
    """
    x, y = points[:, 0], points[:, 1]
    w = matrix[2, 0] * x + matrix[2, 1] * y + matrix[2, 2]
    safe = np.where(np.abs(w) > 1e-12, w, np.nan)
    out = np.empty_like(points)
    out[:, 0] = (matrix[0, 0] * x + matrix[0, 1] * y + matrix[0, 2]) / safe
    out[:, 1] = (matrix[1, 0] * x + matrix[1, 1] * y + matrix[1, 2]) / safe
    return out, w


def _apply(matrix: F64, points: F64) -> F64:
    """Map (N, 2) points through a homography; NaN where they fall on the horizon."""
    return _project(matrix, points)[0]


class GroundCalibration:
    """Image pixels <-> ground metres for one camera, from 4 point pairs.

    ``image_points`` are pixel positions in the video's native resolution; ``ground_points_m``
    the same 4 points in metres in any right-angled frame on the road (e.g. x across, y
    along the road). Raises ``AnalyticsConfigError`` for degenerate or mismatched quads.
    """

    def __init__(
        self, image_points: Sequence[Sequence[float]], ground_points_m: Sequence[Sequence[float]]
    ) -> None:
        self._image = _quad(image_points, "calibration image_points")
        self._ground = _quad(ground_points_m, "calibration ground_points_m")
        matrix = homography(self._image, self._ground)
        w = np.hstack([self._image, np.ones((4, 1))]) @ matrix[2]
        if not np.isfinite(matrix).all() or not (np.all(w > 0) or np.all(w < 0)):
            raise AnalyticsConfigError(
                "calibration: the 4 point pairs do not describe a view of a plane "
                "(check that both lists go around the same quadrilateral in the same order)"
            )
        self._to_ground = matrix
        self._to_image: F64 = np.asarray(np.linalg.inv(matrix), dtype=np.float64)
        self._sign = 1.0 if w[0] > 0 else -1.0
        self._flat = tuple(float(v) for v in matrix.ravel())  # for one point at a time
        error = float(np.max(np.abs(_apply(matrix, self._image) - self._ground)))
        if not error < 1e-6 * max(1.0, float(np.abs(self._ground).max())):
            raise AnalyticsConfigError("calibration: the point pairs are numerically degenerate")

    @property
    def reach_m(self) -> float:
        """How far the four ground points lie from the ground frame's origin, the farthest:
        how far the calibration vouches for the road (for a geo-calibration, the origin is
        the pole)."""
        return float(np.max(np.hypot(self._ground[:, 0], self._ground[:, 1])))

    @property
    def matrix(self) -> F64:
        """The image-to-ground homography (3x3, normalised so that ``H[2, 2] == 1``)."""
        return self._to_ground.copy()

    def to_ground(self, points: Sequence[Sequence[float]] | F64) -> F64:
        """Ground metres of (N, 2) image points; NaN for points at or above the horizon."""
        array = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        out, w = _project(self._to_ground, array)
        out[w * self._sign <= 0] = np.nan
        return out

    def to_image(self, points: Sequence[Sequence[float]] | F64) -> F64:
        """Image pixels of (N, 2) ground points in metres."""
        return _apply(self._to_image, np.asarray(points, dtype=np.float64).reshape(-1, 2))

    def ground_point(self, x: float, y: float) -> Point | None:
        """One image point on the ground, or None if it lies at or above the horizon."""
        m = self._flat
        w = m[6] * x + m[7] * y + m[8]
        if w * self._sign <= 1e-12:
            return None
        return ((m[0] * x + m[1] * y + m[2]) / w, (m[3] * x + m[4] * y + m[5]) / w)

    def speed_kmh(
        self, track: HasPoints, *, window_s: float = 1.0, min_span_s: float = 0.5
    ) -> float | None:
        """Ground speed over the track's last ``window_s``, or None with less than min_span_s.

        The velocity is the least-squares slope of ground position over time of every point
        in the window, which averages the jitter of single boxes out instead of trusting two.
        """
        window = _window(track.points, window_s, min_span_s)
        if window is None:
            return None
        ground = self.to_ground(window[:, 1:3])
        if not np.isfinite(ground).all():
            return None
        vx, vy = _slope(window[:, 0], ground)
        return math.hypot(vx, vy) * KMH_PER_MS

    def ground_velocity(
        self, track: HasPoints, *, window_s: float = 1.0, min_span_s: float = 0.5
    ) -> Point | None:
        """Ground velocity (m/s, in the ground frame's axes) over the track's last window."""
        window = _window(track.points, window_s, min_span_s)
        if window is None:
            return None
        ground = self.to_ground(window[:, 1:3])
        if not np.isfinite(ground).all():
            return None
        return _slope(window[:, 0], ground)

    def distance_to_line_m(self, point: Point, p1: Point, p2: Point) -> float | None:
        """Ground distance in metres from an image point to the ground line through p1, p2."""
        mapped = self.to_ground([point, p1, p2])
        if not np.isfinite(mapped).all():
            return None
        return _point_line_distance(mapped[0], mapped[1], mapped[2])


def _window(
    points: Sequence[tuple[float, float, float]], window_s: float, min_span_s: float
) -> F64 | None:
    """The points of the last ``window_s`` as an (N, 3) array, or None if they span too little."""
    if len(points) < 2:
        return None
    t_last = points[-1][0]
    start = len(points) - 1
    while start > 0 and points[start - 1][0] >= t_last - window_s - 1e-9:
        start -= 1
    window = np.asarray(points[start:], dtype=np.float64)
    if window[-1, 0] - window[0, 0] < min_span_s - 1e-9:
        return None
    return window


def _slope(t: F64, xy: F64) -> Point:
    """Least-squares d(xy)/dt."""
    tc = t - t.mean()
    denominator = float(np.dot(tc, tc))
    if denominator <= 0:
        return (0.0, 0.0)
    centred = xy - xy.mean(axis=0)
    return (
        float(np.dot(tc, centred[:, 0]) / denominator),
        float(np.dot(tc, centred[:, 1]) / denominator),
    )


def _point_line_distance(p: F64, a: F64, b: F64) -> float:
    d = b - a
    length = float(np.hypot(d[0], d[1]))
    if length == 0:
        return float(np.hypot(*(p - a)))
    return abs(float(d[0] * (p[1] - a[1]) - d[1] * (p[0] - a[0]))) / length


def image_velocity(
    track: HasPoints, *, window_s: float = 1.0, min_span_s: float = 0.5
) -> Point | None:
    """Image velocity (px/s) of the bottom-centre over the last window, for uncalibrated use."""
    window = _window(track.points, window_s, min_span_s)
    if window is None:
        return None
    return _slope(window[:, 0], window[:, 1:3])


def point_line_distance_px(point: Point, p1: Point, p2: Point) -> float:
    """Pixel distance from ``point`` to the infinite line through ``p1`` and ``p2``."""
    return _point_line_distance(np.asarray(point), np.asarray(p1), np.asarray(p2))
