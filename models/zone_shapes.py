"""Zone shapes: a named polygon on the image with a kind, checked when it is configured.

Kept apart from ``zones.ZoneMonitor`` (what happens inside the zones) so the scene and the
config can build and validate zones without the monitor, and the monitor stays small.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

from smartpole.models.errors import AnalyticsConfigError

Point = tuple[float, float]
ZoneKind = Literal["occupancy", "carriageway", "no_stopping", "queue"]


def polygon_area(points: Sequence[Point]) -> float:
    """Unsigned area (shoelace) of a simple polygon."""
    total = 0.0
    for i, (x0, y0) in enumerate(points):
        x1, y1 = points[(i + 1) % len(points)]
        total += x0 * y1 - x1 * y0
    return abs(total) / 2.0


def point_in_polygon(x: float, y: float, points: Sequence[Point]) -> bool:
    """Even-odd rule (ray casting to the right)."""
    inside = False
    j = len(points) - 1
    for i in range(len(points)):
        xi, yi = points[i]
        xj, yj = points[j]
        if (yi > y) != (yj > y) and x < (xj - xi) * (y - yi) / (yj - yi) + xi:
            inside = not inside
        j = i
    return inside


@dataclass
class Zone:
    """A named polygon (at least 3 points, non-zero area) with a kind; see the module doc."""

    name: str
    polygon: list[Point]
    kind: ZoneKind = "occupancy"
    direction: Point | None = None
    stop_line: tuple[Point, Point] | None = None

    def __post_init__(self) -> None:
        where = f"zone {self.name!r}"
        self.polygon = [(float(x), float(y)) for x, y in self.polygon]
        if len(self.polygon) < 3:
            raise AnalyticsConfigError(f"{where}: a polygon needs at least 3 points")
        if not all(math.isfinite(v) for p in self.polygon for v in p):
            raise AnalyticsConfigError(f"{where}: polygon points must be finite numbers")
        if polygon_area(self.polygon) < 1.0:
            raise AnalyticsConfigError(f"{where}: the polygon has zero area")
        if self.kind not in get_args(ZoneKind):
            raise AnalyticsConfigError(f"{where}: unknown kind {self.kind!r}")
        if self.direction is not None and math.hypot(*self.direction) == 0:
            raise AnalyticsConfigError(f"{where}: direction must be a non-zero (dx, dy)")
        if self.kind == "queue":
            if self.stop_line is None:
                raise AnalyticsConfigError(f"{where}: a queue zone needs a stop_line")
            (x1, y1), (x2, y2) = self.stop_line
            if math.hypot(x2 - x1, y2 - y1) == 0:
                raise AnalyticsConfigError(f"{where}: the stop line's ends are the same point")

    def validate(self, frame_w: int, frame_h: int) -> None:
        """Raise ``AnalyticsConfigError`` unless the zone (and stop line) lie in the frame."""
        points = list(self.polygon) + (list(self.stop_line) if self.stop_line else [])
        for x, y in points:
            if not (0 <= x <= frame_w and 0 <= y <= frame_h):
                raise AnalyticsConfigError(
                    f"zone {self.name!r}: point ({x:g}, {y:g}) is outside the "
                    f"{frame_w}x{frame_h} frame (coordinates are the video's native pixels)"
                )

    def contains(self, x: float, y: float) -> bool:
        return point_in_polygon(x, y, self.polygon)
