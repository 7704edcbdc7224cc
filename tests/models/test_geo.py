"""``GeoFrame``: metres east/north of the pole <-> WGS-84 latitude/longitude.

The round trips hold the conversion to its own inverse; the arc tests hold it to the
ellipsoid with formulas written here independently of the ECEF maths (a meridian arc
integrated numerically, a parallel's circle in closed form), which a sphere fails by
metres.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smartpole.models.geo import GeoFrame

# WGS-84, written out again on purpose: the test must not share the module's constants.
SEMI_MAJOR = 6378137.0
ECC2 = (1 / 298.257223563) * (2 - 1 / 298.257223563)

latitudes = st.floats(-80, 80)
longitudes = st.floats(-180, 180)
heights = st.floats(-100, 3000)
metres = st.floats(-2000, 2000)


def meridian_arc(lat1: float, lat2: float) -> float:
    """Length (m) of the meridian between two latitudes, by Simpson's rule on M(phi)."""

    def radius(phi: float) -> float:
        return SEMI_MAJOR * (1 - ECC2) / (1 - ECC2 * math.sin(phi) ** 2) ** 1.5

    a, b, n = math.radians(lat1), math.radians(lat2), 200
    h = (b - a) / n
    total = radius(a) + radius(b)
    total += sum((4 if i % 2 else 2) * radius(a + i * h) for i in range(1, n))
    return total * h / 3


@given(latitudes, longitudes, heights, metres, metres)
def test_to_en_undoes_to_latlon(
    lat0: float, lon0: float, height: float, east: float, north: float
) -> None:
    frame = GeoFrame(lat0, lon0, height)
    lat, lon = frame.to_latlon(east, north)
    assert -180 <= lon < 180
    back = frame.to_en(lat, lon)
    assert back == pytest.approx((east, north), abs=1e-6)


@given(latitudes, longitudes, heights, metres, metres)
def test_to_latlon_undoes_to_en(
    lat0: float, lon0: float, height: float, east: float, north: float
) -> None:
    frame = GeoFrame(lat0, lon0, height)
    # A point about (east, north) away, written in degrees as a survey would give it.
    lat = lat0 + north / 111_000
    lon = lon0 + east / (111_000 * math.cos(math.radians(lat0)))
    back_lat, back_lon = frame.to_latlon(*frame.to_en(lat, lon))
    assert back_lat == pytest.approx(lat, abs=1e-10)  # 1e-10 degree: about 0.01 mm
    assert (back_lon - lon + 180) % 360 - 180 == pytest.approx(0, abs=1e-10)


@given(latitudes, longitudes, st.floats(-0.018, 0.018))
def test_north_along_a_meridian_is_the_ellipsoids_meridian_arc(
    lat0: float, lon0: float, dlat: float
) -> None:
    """Within 2 km (0.018 degree) the plane's north is the arc to a millimetre: the chord
    and its projection differ by d^3 / 6R^2, 0.03 mm at 2 km."""
    east, north = GeoFrame(lat0, lon0).to_en(lat0 + dlat, lon0)
    assert north == pytest.approx(meridian_arc(lat0, lat0 + dlat), abs=1e-3)
    assert east == pytest.approx(0, abs=1e-6)


@given(latitudes, longitudes, st.floats(-0.018, 0.018))
def test_east_along_a_parallel_is_the_parallels_circle(
    lat0: float, lon0: float, dlon: float
) -> None:
    """A parallel is a circle of radius N cos(lat); the east axis takes the chord's
    component along the tangent, N cos(lat) sin(dlon), exactly."""
    prime = SEMI_MAJOR / math.sqrt(1 - ECC2 * math.sin(math.radians(lat0)) ** 2)
    east, _ = GeoFrame(lat0, lon0).to_en(lat0, lon0 + dlon)
    expected = prime * math.cos(math.radians(lat0)) * math.sin(math.radians(dlon))
    assert east == pytest.approx(expected, abs=1e-6)


def test_a_sphere_would_be_metres_off_at_guangzhou() -> None:
    """Why the ellipsoid: 2 km north of a pole in Guangzhou, a sphere of mean radius puts a
    road user 8 m away from where the ellipsoid does."""
    frame = GeoFrame(23.1291, 113.2644)
    lat, _ = frame.to_latlon(0, 2000)
    on_sphere = math.radians(lat - 23.1291) * 6371008.8
    assert on_sphere - 2000 > 7.5
    assert meridian_arc(23.1291, lat) == pytest.approx(2000, abs=1e-3)


def test_the_height_scales_the_plane() -> None:
    """A street 50 m above the ellipsoid is 50/6.4e6 larger: 1.6 cm at 2 km."""
    low, high = GeoFrame(23.1291, 113.2644), GeoFrame(23.1291, 113.2644, 50)
    _, north_low = low.to_en(*high.to_latlon(0, 2000))
    assert 2000 - north_low == pytest.approx(2000 * 50 / 6.34e6, rel=0.02)


def test_longitude_wraps_at_the_antimeridian() -> None:
    frame = GeoFrame(-17.7, 179.999)
    lat, lon = frame.to_latlon(1000, 0)
    assert -180 < lon < -179.99
    assert frame.to_en(lat, lon) == pytest.approx((1000, 0), abs=1e-6)


@pytest.mark.parametrize(
    ("lat0", "lon0", "height"),
    [(89.5, 0, 0), (-90, 0, 0), (math.nan, 0, 0), (0, 181, 0), (0, 0, 20_000), (0, 0, math.inf)],
)
def test_an_origin_without_east_and_north_is_refused(
    lat0: float, lon0: float, height: float
) -> None:
    with pytest.raises(ValueError, match="origin"):
        GeoFrame(lat0, lon0, height)
