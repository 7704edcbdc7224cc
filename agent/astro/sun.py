"""Sunrise, sunset and civil twilight, computed on the pole from its position alone.

The pole switches its light by astronomical clock (TALQ ``AstroClockTimeControl``) and
must go on doing so with no network, so the times come from the sun's position here and
not from a service. Standard library only: the edge box gets no new dependencies.

The sun's position is NOAA's solar position equations (those behind its Solar
Calculator, from Meeus, *Astronomical Algorithms*): the sun's declination and the
equation of time, good to about 0.01° for centuries either side of 2000. From them
comes the sun's elevation at any instant and place.

An event is the instant the centre of the sun crosses a fixed elevation:

* sunrise and sunset at -0.833°: 0.567° of standard atmospheric refraction at the
  horizon plus 0.266° for the sun's radius, so they mark the upper limb touching the
  horizon, as almanacs and timeanddate.com define them;
* civil dawn and dusk at -6°.

Closed-form hour angles around one noon estimate (the usual short-cut) break down
exactly where this module has to work: in polar regions, and where a time zone's clock
is hours away from solar time (western China keeps Beijing time, so solar noon there
is near 15:00 and a summer sunset can fall close to midnight). So the events of a local
calendar day are searched for over the instants that really make up that day (23, 24 or
25 hours across a clock change): the day is cut at the sun's transits, found by
iterating the equation of time to convergence, and at every hour; each piece with the
sun on different sides of the threshold at its ends holds a crossing, which bisection
pins to a hundredth of a second. Whatever the place and date, every event returned is a
real crossing inside the requested local date, and a day with none is polar day or
polar night.

The lighting engine is meant to switch on ``solar_elevation`` / ``is_dark`` rather than
on the event times: an elevation threshold needs no special case in polar regions or
across a clock change.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from itertools import pairwise
from typing import Final, Literal

__all__ = [
    "CIVIL_DEPRESSION_DEG",
    "SUNRISE_DEPRESSION_DEG",
    "SunState",
    "SunTimes",
    "is_dark",
    "solar_elevation",
    "sun_times",
]

SUNRISE_DEPRESSION_DEG: Final = 0.833
"""Depression of the sun's centre at sunrise and sunset: refraction 0.567° + radius 0.266°."""

CIVIL_DEPRESSION_DEG: Final = 6.0
"""Depression of the sun's centre at civil dawn and dusk."""

SunState = Literal["normal", "polar_day", "polar_night"]

_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_JD_UNIX_EPOCH: Final = 2440587.5  # Julian date of 1970-01-01T00:00Z
_JD_J2000: Final = 2451545.0
_DAY_S: Final = 86400.0
_STEP_S: Final = 3600.0  # hourly cuts, on top of the transits
_RESOLUTION_S: Final = 0.01  # bisection stops below this; times are then rounded to 1 s
_TRANSIT_ITERATIONS: Final = 3
# The day after the last and the day before the first must exist, in every zone.
_FIRST_DAY: Final = dt.date(1, 1, 2)
_LAST_DAY: Final = dt.date(9999, 12, 30)


@dataclass(frozen=True)
class SunTimes:
    """The sun's events on one local calendar day at one place.

    Every datetime is timezone-aware, in the zone the day was asked in, and falls on
    ``date`` in that zone. An event that does not happen on that date is None.

    ``state`` is about sunrise and sunset: ``polar_day`` when the sun stays above the
    sunrise/sunset elevation for the whole local day, ``polar_night`` when it stays
    below, ``normal`` otherwise. On a ``normal`` day one of the two can still be None:
    on the days around the start and end of polar day or night, and where the zone's
    clock is far from solar time, the matching crossing falls on the adjacent date.
    Civil dawn and dusk are None independently of ``state`` (e.g. in mid-December at
    Tromsø the sun does not rise, but civil twilight comes around noon).

    A date can hold two crossings of the same kind when the event falls near midnight
    (at Oslo on 9 July 2023 civil dusk comes at 00:00 and again at 23:58). The ones
    returned are those bounding the daylight around the date's solar noon: the last
    rise before it, the first set after it; failing that, the one the date has.
    """

    date: dt.date
    sunrise: dt.datetime | None
    sunset: dt.datetime | None
    dawn: dt.datetime | None
    dusk: dt.datetime | None
    state: SunState


def _check_position(latitude: float, longitude: float) -> None:
    # Written so that NaN fails too: every comparison with NaN is false.
    if not -90.0 <= latitude <= 90.0:
        raise ValueError(f"latitude must be within [-90, 90] degrees, got {latitude!r}")
    if not -180.0 <= longitude <= 180.0:
        raise ValueError(f"longitude must be within [-180, 180] degrees, got {longitude!r}")


def _instant(at: dt.datetime) -> float:
    """Seconds since 1970-01-01T00:00Z of an aware datetime."""
    if at.utcoffset() is None:
        # A naive wall-clock time is ambiguous or missing around clock changes, the
        # very moments the lighting engine must get right.
        raise ValueError(f"a timezone-aware datetime is needed, got naive {at.isoformat()}")
    return (at - _EPOCH).total_seconds()


def _declination_and_equation_of_time(t: float) -> tuple[float, float]:
    """The sun's apparent declination (radians) and the equation of time (minutes).

    NOAA's solar position equations, term for term, at ``t`` seconds since the Unix
    epoch. Universal time is used where the theory wants terrestrial time: the
    difference (about 70 s now) moves the sun by 0.001°.
    """
    jc = (t / _DAY_S + _JD_UNIX_EPOCH - _JD_J2000) / 36525.0  # Julian centuries from J2000
    mean_longitude = (280.46646 + jc * (36000.76983 + jc * 0.0003032)) % 360.0
    mean_anomaly = math.radians(357.52911 + jc * (35999.05029 - 0.0001537 * jc))
    eccentricity = 0.016708634 - jc * (0.000042037 + 0.0000001267 * jc)
    centre = (
        math.sin(mean_anomaly) * (1.914602 - jc * (0.004817 + 0.000014 * jc))
        + math.sin(2.0 * mean_anomaly) * (0.019993 - 0.000101 * jc)
        + math.sin(3.0 * mean_anomaly) * 0.000289
    )
    node = math.radians(125.04 - 1934.136 * jc)  # moon's ascending node: nutation
    apparent_longitude = math.radians(mean_longitude + centre - 0.00569 - 0.00478 * math.sin(node))
    mean_obliquity = (
        23.0 + (26.0 + (21.448 - jc * (46.815 + jc * (0.00059 - jc * 0.001813))) / 60.0) / 60.0
    )
    obliquity = math.radians(mean_obliquity + 0.00256 * math.cos(node))
    declination = math.asin(math.sin(obliquity) * math.sin(apparent_longitude))

    l0 = math.radians(mean_longitude)
    y = math.tan(obliquity / 2.0) ** 2
    equation_of_time = 4.0 * math.degrees(
        y * math.sin(2.0 * l0)
        - 2.0 * eccentricity * math.sin(mean_anomaly)
        + 4.0 * eccentricity * y * math.sin(mean_anomaly) * math.cos(2.0 * l0)
        - 0.5 * y * y * math.sin(4.0 * l0)
        - 1.25 * eccentricity * eccentricity * math.sin(2.0 * mean_anomaly)
    )
    return declination, equation_of_time


def _elevation(t: float, sin_lat: float, cos_lat: float, longitude: float) -> float:
    """Geometric elevation of the sun's centre in degrees, at ``t`` seconds since the epoch."""
    declination, equation_of_time = _declination_and_equation_of_time(t)
    # True solar time in degrees of rotation: UT + equation of time + longitude.
    hour_angle = math.radians((t % _DAY_S) / 240.0 + equation_of_time / 4.0 + longitude - 180.0)
    sine = sin_lat * math.sin(declination) + cos_lat * math.cos(declination) * math.cos(hour_angle)
    return math.degrees(math.asin(max(-1.0, min(1.0, sine))))


def _transits(start: float, end: float, longitude: float) -> tuple[list[float], list[float]]:
    """The sun's upper and lower transits (hour angle 0° and 180°) strictly inside (start, end).

    Between an upper and a lower transit the elevation rises or falls monotonically
    (except within about a tenth of a degree of a pole, where the declination's own
    drift competes with the daily swing and the hourly cuts have to do), so cutting the
    day there gives each piece at most one crossing, and a sun that only grazes the
    threshold at noon or midnight is still caught. The equation of time depends on the
    instant being solved for, so each transit is iterated: it changes by at most half a
    minute a day, so every round shrinks the error some three-thousandfold.
    """
    upper: list[float] = []
    lower: list[float] = []
    for day in range(math.floor(start / _DAY_S) - 1, math.floor(end / _DAY_S) + 2):
        midnight = day * _DAY_S
        for hour_angle, found in ((0.0, upper), (180.0, lower)):
            # Degrees the earth turns after 0h UT before the sun reaches that hour angle.
            turn = (hour_angle + 180.0 - longitude) % 360.0
            t = midnight + 240.0 * turn
            for _ in range(_TRANSIT_ITERATIONS):
                _, equation_of_time = _declination_and_equation_of_time(t)
                t = midnight + 240.0 * (turn - equation_of_time / 4.0)
            if start < t < end:
                found.append(t)
    return upper, lower


def _local_midnight(day: dt.date, tz: dt.tzinfo) -> float:
    """The instant ``day`` begins in ``tz``, also where midnight is skipped or repeated.

    ``fold=0`` reads a wall time in a clock-change gap with the offset from before the
    change, which is the instant the clocks jumped, i.e. the first instant of the day;
    and a repeated midnight as its first occurrence.
    """
    return _instant(dt.datetime.combine(day, dt.time(0), tzinfo=tz))


class _ElevationAt:
    """The elevation at one place as a function of the instant, for the root search."""

    def __init__(self, latitude: float, longitude: float) -> None:
        self._sin_lat = math.sin(math.radians(latitude))
        self._cos_lat = math.cos(math.radians(latitude))
        self._longitude = longitude

    def __call__(self, t: float) -> float:
        return _elevation(t, self._sin_lat, self._cos_lat, self._longitude)


def _crossings(
    cuts: list[float], elevations: list[float], threshold: float, elevation_at: _ElevationAt
) -> tuple[list[float], list[float]]:
    """Upward and downward crossings of ``threshold`` between consecutive cuts, by bisection."""
    rising: list[float] = []
    setting: list[float] = []
    for (a, elev_a), (b, elev_b) in pairwise(zip(cuts, elevations, strict=True)):
        above_a = elev_a > threshold
        if above_a == (elev_b > threshold):
            continue
        low, high = a, b
        while high - low > _RESOLUTION_S:
            middle = (low + high) / 2.0
            if (elevation_at(middle) > threshold) == above_a:
                low = middle
            else:
                high = middle
        (setting if above_a else rising).append((low + high) / 2.0)
    return rising, setting


def _rise(candidates: list[float], noon: float) -> float | None:
    before = [t for t in candidates if t <= noon]
    if before:
        return max(before)
    return min(candidates, default=None)


def _set(candidates: list[float], noon: float) -> float | None:
    after = [t for t in candidates if t >= noon]
    if after:
        return min(after)
    return max(candidates, default=None)


def sun_times(day: dt.date, latitude: float, longitude: float, tz: dt.tzinfo) -> SunTimes:
    """Sunrise, sunset and civil dawn and dusk on the local calendar ``day`` at a place.

    ``latitude`` is degrees north (-90..90), ``longitude`` degrees east (-180..180) and
    ``tz`` the site's zone, normally a ``zoneinfo.ZoneInfo`` (its rules decide when the
    local day begins and ends, DST included). Any date from 0001-01-02 to 9999-12-30 is
    accepted; the solar theory is at its best within a few centuries of 2000.

    Raises ValueError for a position out of range, a date outside those bounds or a
    date the zone left out of its calendar.
    """
    if isinstance(day, dt.datetime):
        raise TypeError("day must be a date, not a datetime: a datetime carries its own zone")
    _check_position(latitude, longitude)
    if not _FIRST_DAY <= day <= _LAST_DAY:
        raise ValueError(f"day must be between {_FIRST_DAY} and {_LAST_DAY}, got {day}")

    start = _local_midnight(day, tz)
    end = _local_midnight(day + dt.timedelta(days=1), tz)
    if end <= start:
        # Samoa went from UTC-10 to UTC+14 by leaving out 2011-12-30 altogether.
        raise ValueError(f"{day} does not exist in time zone {tz}: its clocks skipped it")
    elevation_at = _ElevationAt(latitude, longitude)
    upper, lower = _transits(start, end, longitude)
    hourly = (start + k * _STEP_S for k in range(1, math.ceil((end - start) / _STEP_S)))
    cuts = sorted({start, end, *upper, *lower, *hourly})
    elevations = [elevation_at(t) for t in cuts]

    # The solar noon the date's events are grouped around; a 23-hour day in a zone far
    # from solar time may hold none, and then the middle of the day stands in.
    middle = (start + end) / 2.0
    noon = min(upper, key=lambda t: abs(t - middle), default=middle)

    rises, sets = _crossings(cuts, elevations, -SUNRISE_DEPRESSION_DEG, elevation_at)
    dawns, dusks = _crossings(cuts, elevations, -CIVIL_DEPRESSION_DEG, elevation_at)
    state: SunState
    if rises or sets:
        state = "normal"
    elif elevations[0] > -SUNRISE_DEPRESSION_DEG:
        state = "polar_day"
    else:
        state = "polar_night"

    def local(t: float | None) -> dt.datetime | None:
        if t is None:
            return None
        # Whole seconds, kept inside [start, end) so rounding cannot change the date.
        second = min(max(round(t), math.ceil(start)), math.ceil(end) - 1)
        return (_EPOCH + dt.timedelta(seconds=second)).astimezone(tz)

    return SunTimes(
        date=day,
        sunrise=local(_rise(rises, noon)),
        sunset=local(_set(sets, noon)),
        dawn=local(_rise(dawns, noon)),
        dusk=local(_set(dusks, noon)),
        state=state,
    )


def solar_elevation(at: dt.datetime, latitude: float, longitude: float) -> float:
    """Elevation of the sun's centre above the horizon at instant ``at``, in degrees.

    Geometric, i.e. without refraction: the sun is at -0.833° at sunrise and sunset
    and at -6° at civil dawn and dusk. ``at`` must be timezone-aware (any zone: only
    the instant matters), so no clock change can make it ambiguous.
    """
    _check_position(latitude, longitude)
    return _ElevationAt(latitude, longitude)(_instant(at))


def is_dark(
    at: dt.datetime,
    latitude: float,
    longitude: float,
    *,
    depression_deg: float = SUNRISE_DEPRESSION_DEG,
) -> bool:
    """Whether the sun's centre is more than ``depression_deg`` below the horizon at ``at``.

    The default is dark between sunset and sunrise; pass ``CIVIL_DEPRESSION_DEG`` for
    dark between civil dusk and dawn. Deciding on the elevation needs no special case
    for polar day or night or for clock changes, unlike comparing with event times.
    """
    if not math.isfinite(depression_deg):
        raise ValueError(
            f"depression_deg must be a finite number of degrees, got {depression_deg!r}"
        )
    return solar_elevation(at, latitude, longitude) < -depression_deg
