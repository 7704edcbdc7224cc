"""A camera's ``calibration:``: four image points and where they lie on the road.

The ground positions come in one of three kinds:

* ``ground_m``: metres in any right-angled frame on the road (x across, y along it):
  enough for speeds and lengths, but not for V2X, which needs the earth;
* ``ground_en_m``: metres east and north of the pole (``origin``);
* ``ground_latlon``: WGS-84 ``[latitude, longitude]`` in degrees, from a survey or a map.

The geo kinds need ``origin``, the pole's surveyed position, which anchors the local
east/north frame the analytics work in (``geodesy.GeoFrame``).

Every check here is pure Python and runs in both processes, so the config check reports a
bad calibration with its file, line and key, and the worker refuses what the check
refused: points that are negative pixels, repeated, three on a line, in a crossed ("bow
tie") or inward-bent order; a ground quadrilateral too small to measure anything; geo
points farther than 2 km from the origin (the tangent plane is exact to millimetres there,
and no camera resolves a road user that far); and geo points that go around their
quadrilateral the other way than the image points, which no camera looking down at the
road sees (east and north swapped, or the two lists in different orders). Whether the
image points lie inside the frame needs the video and is the worker's check
(``Scene.validate_frame``); so is the homography's own numerical check.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Annotated, Final, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    ValidationInfo,
    field_validator,
    model_validator,
)

from smartpole.agent.config.geodesy import MAX_ABS_LATITUDE, GeoFrame

Point = tuple[float, float]
GroundKind = Literal["ground_m", "ground_en_m", "ground_latlon"]
GROUND_KINDS: Final[tuple[GroundKind, ...]] = ("ground_m", "ground_en_m", "ground_latlon")

#: Geo points farther from the origin than this are refused (metres).
MAX_GEO_DISTANCE_M: Final = 2000.0
#: A corner whose sine is smaller than this (about 0.6 degrees) counts as straight; the
#: worker's homography (``models/calibration.py``) uses the same bound.
MIN_CORNER_SINE: Final = 0.01
#: A ground quadrilateral smaller than this (square metres) measures nothing: a typo.
MIN_GROUND_AREA_M2: Final = 1.0


class _Strict(BaseModel):
    model_config = ConfigDict(
        extra="forbid", frozen=True, populate_by_name=True, allow_inf_nan=False, strict=True
    )


def _pixel(point: Point) -> Point:
    if point[0] < 0 or point[1] < 0:
        raise ValueError(
            f"{_show(point)} is not in the image: pixels count from its top-left corner, "
            "x to the right and y down, from 0"
        )
    return point


def _near_origin(point: Point) -> Point:
    distance = math.hypot(*point)
    if distance > MAX_GEO_DISTANCE_M:
        raise ValueError(_too_far(point, distance))
    return point


def _on_earth(point: Point, info: ValidationInfo) -> Point:
    lat, lon = point
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        hint = " ([latitude, longitude] swapped?)" if -90 <= lon <= 90 else ""
        raise ValueError(
            f"{_show(point)} is not a [latitude, longitude] in degrees: latitude is -90 to 90, "
            f"longitude -180 to 180{hint}"
        )
    origin = info.data.get("origin")
    if isinstance(origin, OriginConfig):
        distance = origin.frame().distance_m(lat, lon)
        if distance > MAX_GEO_DISTANCE_M:
            raise ValueError(_too_far(point, distance))
    return point


def _too_far(point: Point, distance: float) -> str:
    return (
        f"{_show(point)} is {distance / 1000:.1f} km from the origin; a geo-calibration's "
        f"points lie within {MAX_GEO_DISTANCE_M / 1000:g} km of the pole (a mistyped digit?)"
    )


def _show(point: Point) -> str:
    return f"[{point[0]:g}, {point[1]:g}]"


# YAML and JSON spell a tuple as a list: only that conversion is lax, the numbers are strict.
_Lax = Strict(False)
Pixel = Annotated[Point, _Lax, AfterValidator(_pixel)]
GroundPoint = Annotated[Point, _Lax]
EastNorth = Annotated[Point, _Lax, AfterValidator(_near_origin)]
LatLon = Annotated[Point, _Lax, AfterValidator(_on_earth)]
_Four = Field(min_length=4, max_length=4)


class OriginConfig(_Strict):
    """The pole's surveyed WGS-84 position: the origin of the east/north frame."""

    latitude: float = Field(
        ge=-MAX_ABS_LATITUDE, le=MAX_ABS_LATITUDE, description="degrees north (south negative)"
    )
    longitude: float = Field(ge=-180, le=180, description="degrees east (west negative)")
    height_m: float = Field(
        0.0,
        ge=-500,
        le=9000,
        description="ground height above the WGS-84 ellipsoid (a GNSS survey's ellipsoidal "
        "height, not above sea level); 0 costs 1.6 cm at 2 km for a street 50 m up",
    )

    def frame(self) -> GeoFrame:
        return GeoFrame(self.latitude, self.longitude, self.height_m)


class CalibrationConfig(_Strict):
    """Four image points and where they lie on the road: one of ``ground_m``,
    ``ground_en_m`` or ``ground_latlon`` (the last two with ``origin``). See the module
    docstring for the kinds and the checks."""

    # Order matters: the ground points' checks read the image points and the origin.
    image: list[Pixel] = Field(
        min_length=4, max_length=4, description="4 points in the video's native pixels"
    )
    origin: OriginConfig | None = Field(
        None, description="the pole's surveyed position; needed by ground_en_m, ground_latlon"
    )
    ground_m: list[GroundPoint] | None = Field(
        None, min_length=4, max_length=4, description="metres in any right-angled road frame"
    )
    ground_en_m: list[EastNorth] | None = Field(
        None, min_length=4, max_length=4, description="[east, north] metres from the origin"
    )
    ground_latlon: list[LatLon] | None = Field(
        None, min_length=4, max_length=4, description="[latitude, longitude] degrees, WGS-84"
    )

    @field_validator("image")
    @classmethod
    def _image_quad(cls, points: list[Point]) -> list[Point]:
        _raise_if(quad_problem(points))
        return points

    @field_validator("ground_m")
    @classmethod
    def _metric_quad(cls, points: list[Point] | None) -> list[Point] | None:
        if points is not None:
            _raise_if(quad_problem(points) or _area_problem(points))
        return points

    @field_validator("ground_en_m")
    @classmethod
    def _en_quad(cls, points: list[Point] | None, info: ValidationInfo) -> list[Point] | None:
        if points is not None:
            _raise_if(_geo_quad_problem(points, info.data.get("image")))
        return points

    @field_validator("ground_latlon")
    @classmethod
    def _latlon_quad(cls, points: list[Point] | None, info: ValidationInfo) -> list[Point] | None:
        origin = info.data.get("origin")
        if points is not None and isinstance(origin, OriginConfig):
            frame = origin.frame()
            en = [frame.to_en(lat, lon) for lat, lon in points]
            _raise_if(_geo_quad_problem(en, info.data.get("image")))
        return points

    @model_validator(mode="after")
    def _one_kind(self) -> Self:
        given = [kind for kind in GROUND_KINDS if getattr(self, kind) is not None]
        if not given:
            raise ValueError(
                "where the image points lie on the road is missing: give one of ground_m "
                "(metres, any frame: speeds only), ground_en_m (metres east/north of the "
                "pole) or ground_latlon ([latitude, longitude])"
            )
        if len(given) > 1:
            raise ValueError(f"give one of {', '.join(given)}, not {len(given)}")
        if given[0] != "ground_m" and self.origin is None:
            raise ValueError(
                f"{given[0]} needs origin: {{latitude, longitude}}, the pole's surveyed position"
            )
        if given[0] == "ground_m" and self.origin is not None:
            raise ValueError(
                "origin places ground_en_m or ground_latlon on the earth; ground_m is any "
                "road frame and takes none (write the points as ground_en_m to geo-calibrate)"
            )
        return self

    @property
    def kind(self) -> GroundKind:
        return next(kind for kind in GROUND_KINDS if getattr(self, kind) is not None)

    def geo_frame(self) -> GeoFrame | None:
        """The east/north frame of a geo-calibration; None for ``ground_m``."""
        return self.origin.frame() if self.origin is not None else None

    def ground_points(self) -> list[Point]:
        """The ground points in metres: in the road frame of ``ground_m``, or east/north
        of the origin for the geo kinds (``ground_latlon`` converted on the ellipsoid)."""
        if self.ground_latlon is not None and self.origin is not None:
            frame = self.origin.frame()
            return [frame.to_en(lat, lon) for lat, lon in self.ground_latlon]
        points = self.ground_m or self.ground_en_m
        if points is None:  # the validator guarantees one kind
            raise ValueError("calibration without ground points")
        return list(points)


def _raise_if(problem: str | None) -> None:
    if problem is not None:
        raise ValueError(problem)


def quad_problem(points: Sequence[Point]) -> str | None:
    """What makes four points unfit to fix a homography, or None: a repeated point, three
    on a line, an order that crosses itself or bends inwards."""
    turns = []
    for i in range(4):
        (ax, ay), (bx, by), (cx, cy) = points[i], points[(i + 1) % 4], points[(i + 2) % 4]
        e1, e2 = (bx - ax, by - ay), (cx - bx, cy - by)
        norm = math.hypot(*e1) * math.hypot(*e2)
        if norm == 0.0:
            return "two of the 4 points are the same"
        turns.append((e1[0] * e2[1] - e1[1] * e2[0]) / norm)
    if min(abs(t) for t in turns) < MIN_CORNER_SINE:
        return "three of the 4 points are (nearly) on one line"
    if not (all(t > 0 for t in turns) or all(t < 0 for t in turns)):
        return (
            "the 4 points must go around a convex quadrilateral in order (the order given "
            "crosses itself, a 'bow tie', or bends inwards)"
        )
    return None


def signed_area(points: Sequence[Point]) -> float:
    """Shoelace area, positive when the points turn from +x towards +y."""
    pairs = zip(points, [*points[1:], points[0]], strict=True)
    return sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in pairs) / 2


def _area_problem(points: Sequence[Point]) -> str | None:
    area = abs(signed_area(points))
    if area < MIN_GROUND_AREA_M2:
        return (
            f"the ground quadrilateral covers {area:.2g} m², less than "
            f"{MIN_GROUND_AREA_M2:g} m²: it cannot measure a road user (metres, not km?)"
        )
    return None


def _geo_quad_problem(en: Sequence[Point], image: object) -> str | None:
    """Shape and area in east/north metres, and the same turning sense as the image."""
    problem = quad_problem(en) or _area_problem(en)
    if problem is not None or not isinstance(image, list):
        return problem
    # The image's y grows downwards and north grows upwards: a camera looking down at the
    # road sees the points go around the other way in (x, y) than in (east, north).
    if signed_area(image) * signed_area(en) > 0:
        return (
            "the ground points go around the other way than the image points, as in a "
            "mirror: list both in the same order around the same four marks, each ground "
            "point east before north (or latitude before longitude); a camera set to mirror "
            "its image must have that setting turned off"
        )
    return None
