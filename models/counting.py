"""Counting lines: road users crossing a line, by direction and class, each crossing once.

Direction convention (the README quotes this). Points are image pixels, x to the right and
y down. For a line from ``p1`` to ``p2`` the side of a point ``p`` is the sign of
``cross(p2 - p1, p - p1) = (x2 - x1) * (y - y1) - (y2 - y1) * (x - x1)``. A crossing **"in"**
goes from the side where that is negative to the side where it is positive; **"out"** is the
reverse. For a horizontal line drawn left to right (``p1`` left of ``p2``), "in" means moving
down the image: toward a camera that looks down the road. Swap ``p1`` and ``p2`` to swap
the directions.

Each track is followed by its bottom-centre (where it touches the road). Why a band: a box
jitters by a few pixels from frame to frame, so a car standing on the line would flip sides
many times. A side is only *committed* when the point is more than ``band_px`` from the
line; a crossing is the change of committed side. A crossing counts only if the track's path
crosses the line within the segment (give or take ``band_px``), so traffic on a parallel
road beyond the segment's ends is not counted, and each track counts at most once per
direction per line: a vehicle that turns back counts "in" then "out", never more.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from smartpole.models.calibration import GroundCalibration
from smartpole.models.errors import AnalyticsConfigError
from smartpole.models.tracker import Track

Direction = Literal["in", "out"]
Point = tuple[float, float]


@dataclass(frozen=True)
class CountingLine:
    """A named counting line from ``p1`` to ``p2`` in image pixels (see the module doc)."""

    name: str
    p1: Point
    p2: Point

    def __post_init__(self) -> None:
        coords = (*self.p1, *self.p2)
        if len(self.p1) != 2 or len(self.p2) != 2 or not all(map(math.isfinite, coords)):
            raise AnalyticsConfigError(f"line {self.name!r}: ends must be finite (x, y) points")
        if self.length < 1e-9:
            raise AnalyticsConfigError(f"line {self.name!r}: both ends are the same point")

    @property
    def length(self) -> float:
        return math.hypot(self.p2[0] - self.p1[0], self.p2[1] - self.p1[1])

    def validate(self, frame_w: int, frame_h: int) -> None:
        """Raise ``AnalyticsConfigError`` unless both ends lie inside a frame of this size."""
        for end, (x, y) in (("p1", self.p1), ("p2", self.p2)):
            if not (0 <= x <= frame_w and 0 <= y <= frame_h):
                raise AnalyticsConfigError(
                    f"line {self.name!r}: {end} ({x:g}, {y:g}) is outside the "
                    f"{frame_w}x{frame_h} frame (coordinates are the video's native pixels)"
                )

    def signed_distance(self, x: float, y: float) -> float:
        """Distance in pixels from the line, positive on the "in" side, negative on the other."""
        (x1, y1), (x2, y2) = self.p1, self.p2
        return ((x2 - x1) * (y - y1) - (y2 - y1) * (x - x1)) / self.length

    def position(self, x: float, y: float) -> float:
        """Where the point projects along the segment, in pixels from ``p1`` (0..length)."""
        (x1, y1), (x2, y2) = self.p1, self.p2
        return ((x - x1) * (x2 - x1) + (y - y1) * (y2 - y1)) / self.length


@dataclass(frozen=True)
class Crossing:
    """One counted crossing of a line by a track, at stream time ``t_s`` (interpolated)."""

    line: str
    direction: Direction
    class_name: str
    track_id: int
    t_s: float
    speed_kmh: float | None

    def to_dict(self) -> dict[str, object]:
        return {
            "line": self.line,
            "direction": self.direction,
            "class": self.class_name,
            "track_id": self.track_id,
            "t_s": self.t_s,
            "speed_kmh": self.speed_kmh,
        }


@dataclass
class _LineState:
    side: int = 0  # committed side: -1, +1, or 0 before the track first leaves the band
    anchor: tuple[float, float, float] | None = None  # last point on the committed side
    last_t: float = -math.inf  # newest point already processed
    counted: set[str] = field(default_factory=set)


class LineCounter:
    """Counts the crossings of one ``CountingLine`` by tracks (see the module docstring).

    Call ``update(tracks)`` after each tracker step with the confirmed tracks; it processes
    each track's points it has not seen yet and returns the new crossings. With a
    ``calibration``, each crossing carries the track's ground speed at that moment (over up
    to the last second; None if the track is younger than half a second).
    ``forget(ids)`` drops the state of tracks that ended.
    """

    def __init__(
        self,
        line: CountingLine,
        *,
        band_px: float = 6.0,
        calibration: GroundCalibration | None = None,
    ) -> None:
        if band_px < 0 or not math.isfinite(band_px):
            raise AnalyticsConfigError(f"line {line.name!r}: band_px must be >= 0")
        self.line = line
        self.band_px = band_px
        self.calibration = calibration
        self._states: dict[int, _LineState] = {}

    def update(self, tracks: Iterable[Track]) -> list[Crossing]:
        crossings: list[Crossing] = []
        for track in tracks:
            state = self._states.setdefault(track.id, _LineState())
            new = _newer(track.points, state.last_t)
            for point in new:
                crossing = self._step(track, state, point)
                if crossing is not None:
                    crossings.append(crossing)
            if new:
                state.last_t = new[-1][0]
        return crossings

    def forget(self, track_ids: Iterable[int]) -> None:
        """Drop the per-track state of tracks that ended."""
        for track_id in track_ids:
            self._states.pop(track_id, None)

    def _step(
        self, track: Track, state: _LineState, point: tuple[float, float, float]
    ) -> Crossing | None:
        t, x, y = point
        distance = self.line.signed_distance(x, y)
        if abs(distance) <= self.band_px:
            return None
        side = 1 if distance > 0 else -1
        if state.side == 0 or state.anchor is None:
            state.side, state.anchor = side, point
            return None
        if side == state.side:
            state.anchor = point
            return None
        anchor = state.anchor
        state.side, state.anchor = side, point
        d0 = self.line.signed_distance(anchor[1], anchor[2])
        share = d0 / (d0 - distance)  # where the path from anchor to point meets the line
        cx = anchor[1] + share * (x - anchor[1])
        cy = anchor[2] + share * (y - anchor[2])
        along = self.line.position(cx, cy)
        if not -self.band_px <= along <= self.line.length + self.band_px:
            return None
        direction: Direction = "in" if side > 0 else "out"
        if direction in state.counted:
            return None
        state.counted.add(direction)
        speed = self.calibration.speed_kmh(track) if self.calibration is not None else None
        return Crossing(
            line=self.line.name,
            direction=direction,
            class_name=track.class_name,
            track_id=track.id,
            t_s=anchor[0] + share * (t - anchor[0]),
            speed_kmh=speed,
        )


def _newer(
    points: list[tuple[float, float, float]], after_t: float
) -> list[tuple[float, float, float]]:
    """The points later than ``after_t`` (the list is in time order), oldest first."""
    start = len(points)
    while start > 0 and points[start - 1][0] > after_t:
        start -= 1
    return points[start:]
