"""Metres east/north of the pole <-> WGS-84 latitude/longitude, exact on the ellipsoid.

Both processes need it: the config check converts a calibration's ``ground_latlon`` points
to metres to check their shape and their distance from the pole, and the camera worker
maps its participants back to latitude/longitude for the V2X messages. The same maths on
both sides means a calibration that passed the check is the one the worker uses. Hence
here, beside the schema, and in pure Python: the control process imports this module and
must stay free of the analytics' libraries (``smartpole.models.geo`` re-exports it).

Why the ellipsoid and not a sphere: at Guangzhou's latitude a sphere of mean radius is
wrong by 0.4 % in the north-south scale, 8 m at 2 km, while V2X wants the position
of a road user to well under a metre. The frame is the local tangent plane (ENU) at the
pole: a point's east/north are the components of its ECEF offset from the origin along the
origin's east and north axes. ``to_latlon`` is the exact inverse of ``to_en`` on the
surface at the origin's height (Newton's method, to well under a millimetre), so a round
trip returns the point; within 2 km the plane's own scale error (the curvature) is below
a millimetre.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Final

#: WGS-84 semi-major axis (m) and flattening.
A: Final = 6378137.0
F: Final = 1 / 298.257223563
E2: Final = F * (2 - F)
#: Origins closer to a geographic pole than this have no usable east/north directions.
MAX_ABS_LATITUDE: Final = 89.0
_ITERATIONS: Final = 8
_TOLERANCE_M: Final = 1e-9


def _ecef(lat_deg: float, lon_deg: float, height_m: float) -> tuple[float, float, float]:
    lat, lon = math.radians(lat_deg), math.radians(lon_deg)
    sin_lat, cos_lat = math.sin(lat), math.cos(lat)
    n = A / math.sqrt(1 - E2 * sin_lat * sin_lat)
    return (
        (n + height_m) * cos_lat * math.cos(lon),
        (n + height_m) * cos_lat * math.sin(lon),
        (n * (1 - E2) + height_m) * sin_lat,
    )


def _radii(lat_deg: float) -> tuple[float, float]:
    """Meridian (north-south) and prime-vertical (east-west) radii of curvature."""
    s = math.sin(math.radians(lat_deg))
    w = 1 - E2 * s * s
    return A * (1 - E2) / w**1.5, A / math.sqrt(w)


@dataclass(frozen=True)
class GeoFrame:
    """East/north metres on the tangent plane at a surveyed point (the pole's foot).

    ``height_m`` is the ground's height above the WGS-84 ellipsoid there (a GNSS survey's
    ellipsoidal height, not the height above sea level); ground points are taken to lie at
    that height. Leaving it 0 costs ``height/6371 km`` in scale: 1.6 cm at 2 km for a
    street 50 m up.
    """

    lat0: float
    lon0: float
    height_m: float = 0.0
    _origin: tuple[float, float, float] = field(init=False, repr=False, compare=False)
    _axes: tuple[tuple[float, float, float], tuple[float, float, float]] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        if not (math.isfinite(self.lat0) and abs(self.lat0) <= MAX_ABS_LATITUDE):
            raise ValueError(f"origin latitude must be within ±{MAX_ABS_LATITUDE:g} degrees")
        if not (math.isfinite(self.lon0) and -180 <= self.lon0 <= 180):
            raise ValueError("origin longitude must be within ±180 degrees")
        if not (math.isfinite(self.height_m) and abs(self.height_m) <= 10_000):
            raise ValueError("origin height must be within ±10 km of the ellipsoid")
        lat, lon = math.radians(self.lat0), math.radians(self.lon0)
        east = (-math.sin(lon), math.cos(lon), 0.0)
        north = (-math.sin(lat) * math.cos(lon), -math.sin(lat) * math.sin(lon), math.cos(lat))
        object.__setattr__(self, "_origin", _ecef(self.lat0, self.lon0, self.height_m))
        object.__setattr__(self, "_axes", (east, north))

    def to_en(self, lat: float, lon: float) -> tuple[float, float]:
        """Metres east and north of the origin of a point at ``lat``, ``lon`` (degrees)."""
        x, y, z = _ecef(lat, lon, self.height_m)
        x0, y0, z0 = self._origin
        d = (x - x0, y - y0, z - z0)
        east, north = self._axes
        return (
            east[0] * d[0] + east[1] * d[1],
            north[0] * d[0] + north[1] * d[1] + north[2] * d[2],
        )

    def to_latlon(self, east_m: float, north_m: float) -> tuple[float, float]:
        """Latitude and longitude (degrees, longitude within ±180) of a point ``east_m``,
        ``north_m`` from the origin; the exact inverse of ``to_en``."""
        lat, lon = self.lat0, self.lon0
        for _ in range(_ITERATIONS):
            e, n = self.to_en(lat, lon)
            de, dn = east_m - e, north_m - n
            if abs(de) < _TOLERANCE_M and abs(dn) < _TOLERANCE_M:
                break
            meridian, prime = _radii(lat)
            lat += math.degrees(dn / (meridian + self.height_m))
            lon += math.degrees(de / ((prime + self.height_m) * math.cos(math.radians(lat))))
        return lat, (lon + 180.0) % 360.0 - 180.0

    def distance_m(self, lat: float, lon: float) -> float:
        """Distance on the tangent plane from the origin to a point (degrees)."""
        return math.hypot(*self.to_en(lat, lon))
