"""The sun at the site: night windows, local wall times and astro events as UTC instants.

Both the lighting config's checks (``config/lighting_checks.py``, which lay each profile on a
year of real nights) and the evaluator (``control/program.py``'s ``LightingPlan``) need the
same answer to "when does this step happen on this night here", and neither
should own the other. It knows the astro anchors a step can hang on (their order in a
night and the sun's elevation that defines each), turns a step into an instant in one
night, and says why an anchor has none (``Sky``: polar night or polar day). The rules it
follows (the 12:00-to-12:00 night, skipped and repeated wall times, polar nights) are
described in ``control/program.py``. Pure apart from its caches: no I/O, no wall clock.
"""

from __future__ import annotations

import enum
import math
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Final, Literal, Protocol

from smartpole.agent.astro.sun import (
    CIVIL_DEPRESSION_DEG,
    SUNRISE_DEPRESSION_DEG,
    SunTimes,
    solar_elevation,
    sun_times,
)

__all__ = [
    "ANCHORS",
    "EVENING",
    "NIGHT_STARTS",
    "RANK",
    "THRESHOLD",
    "Anchor",
    "Moment",
    "Place",
    "Resolved",
    "Site",
    "Sky",
]

NIGHT_STARTS: Final = time(12, 0)

Anchor = Literal["sunset", "dusk", "dawn", "sunrise"]
EVENING: Final[tuple[Anchor, ...]] = ("sunset", "dusk")
ANCHORS: Final[tuple[Anchor, ...]] = ("sunset", "dusk", "dawn", "sunrise")
RANK: Final = {anchor: rank for rank, anchor in enumerate(ANCHORS)}  # order in a night
THRESHOLD: Final = {
    "sunset": -SUNRISE_DEPRESSION_DEG,
    "sunrise": -SUNRISE_DEPRESSION_DEG,
    "dusk": -CIVIL_DEPRESSION_DEG,
    "dawn": -CIVIL_DEPRESSION_DEG,
}


class Place(Protocol):
    """Where the pole stands (the config's ``site:``)."""

    @property
    def latitude(self) -> float: ...
    @property
    def longitude(self) -> float: ...
    @property
    def zone(self) -> tzinfo: ...


class Moment(Protocol):
    """When a step of a lighting profile happens (the config's ``Step``)."""

    @property
    def clock(self) -> time | None: ...
    @property
    def anchor(self) -> Anchor | None: ...
    @property
    def offset_min(self) -> int: ...


class Sky(enum.Enum):
    """Why an astro anchor has no instant in its half of a night."""

    DARK = "dark"  # the sun stays below the anchor's elevation: polar night for it
    LIGHT = "light"  # it stays above: polar day, or a white night without civil dusk


Resolved = datetime | Sky


class Site:
    """Night windows, wall times and sun events at one site; caches the sun."""

    _CACHE_LIMIT: Final = 4096

    def __init__(self, site: Place) -> None:
        self.latitude = site.latitude
        self.longitude = site.longitude
        self.zone: tzinfo = site.zone
        self._days: dict[date, SunTimes | None] = {}
        self._events: dict[tuple[Anchor, date], Resolved] = {}

    def wall(self, day: date, clock: time) -> datetime:
        """A local wall time as a UTC instant (a skipped time moves forward by the gap,
        a repeated one is its first occurrence: ``fold=0``)."""
        return datetime.combine(day, clock, tzinfo=self.zone).astimezone(UTC)

    def window(self, day: date) -> tuple[datetime, datetime]:
        return self.wall(day, NIGHT_STARTS), self.wall(day + timedelta(days=1), NIGHT_STARTS)

    def night_of(self, at: datetime) -> date:
        day = at.astimezone(self.zone).date()
        return day if at >= self.wall(day, NIGHT_STARTS) else day - timedelta(days=1)

    def local(self, at: datetime) -> str:
        return at.astimezone(self.zone).strftime("%H:%M %Z")

    def resolve(self, step: Moment, day: date) -> Resolved:
        """The step's instant in the night of ``day`` before any ordering, or why none."""
        clock = step.clock
        if clock is not None:
            on = day if clock >= NIGHT_STARTS else day + timedelta(days=1)
            return self.wall(on, clock) + timedelta(minutes=step.offset_min)
        assert step.anchor is not None
        event = self.event(step.anchor, day)
        if isinstance(event, Sky):
            return event
        return event + timedelta(minutes=step.offset_min)

    def event(self, anchor: Anchor, day: date) -> Resolved:
        key = (anchor, day)
        found = self._events.get(key)
        if found is None:
            if len(self._events) > self._CACHE_LIMIT:
                self._events.clear()
            found = self._events[key] = self._find_event(anchor, day)
        return found

    def _find_event(self, anchor: Anchor, day: date) -> Resolved:
        noon, next_noon = self._solar_noon(day), self._solar_noon(day + timedelta(days=1))
        midnight = noon + (next_noon - noon) / 2
        evening = anchor in EVENING
        low, high = (noon, midnight) if evening else (midnight, next_noon)
        candidates: list[datetime] = []
        for offset in (-1, 0, 1, 2):
            times = self._sun(day + timedelta(days=offset))
            event: datetime | None = None if times is None else getattr(times, anchor)
            if event is not None:
                candidates.append(event.astimezone(UTC))
        inside = sorted(t for t in candidates if low <= t < high)
        if inside:
            return inside[0]
        # sun.py files events by calendar day and keeps one of each kind per day; the half
        # night may have none, or one filed under a day that also had another.
        threshold = THRESHOLD[anchor]
        above_low = self._elevation(low) > threshold
        above_high = self._elevation(high) > threshold
        if evening:
            if not above_low:
                return Sky.DARK
            if above_high:
                return Sky.LIGHT
        else:
            if not above_high:
                return Sky.DARK
            if above_low:
                return Sky.LIGHT
        return self._crossing(low, high, threshold, above_low)

    def _crossing(self, low: datetime, high: datetime, threshold: float, above: bool) -> datetime:
        while high - low > timedelta(seconds=0.5):
            middle = low + (high - low) / 2
            if (self._elevation(middle) > threshold) == above:
                low = middle
            else:
                high = middle
        middle = low + (high - low) / 2
        return middle.replace(microsecond=0) + timedelta(seconds=round(middle.microsecond / 1e6))

    def _elevation(self, at: datetime) -> float:
        return solar_elevation(at, self.latitude, self.longitude)

    def _sun(self, day: date) -> SunTimes | None:
        """The day's events; None for a date the zone skipped (Samoa left out 2011-12-30):
        the elevation then decides alone."""
        if day not in self._days:
            if len(self._days) > self._CACHE_LIMIT:
                self._days.clear()
            try:
                found = sun_times(day, self.latitude, self.longitude, self.zone)
            except ValueError:
                found = None
            self._days[day] = found
        return self._days[day]

    def _solar_noon(self, day: date) -> datetime:
        """The sun's transit nearest 12:00 local on ``day`` (NOAA's short equation of time,
        good to a minute: it only splits a night into its evening and morning halves)."""
        local_noon = self.wall(day, NIGHT_STARTS)
        gamma = 2 * math.pi / 365 * (local_noon.timetuple().tm_yday - 1)
        equation_of_time = 229.18 * (
            0.000075
            + 0.001868 * math.cos(gamma)
            - 0.032077 * math.sin(gamma)
            - 0.014615 * math.cos(2 * gamma)
            - 0.040849 * math.sin(2 * gamma)
        )
        noon = datetime.combine(local_noon.date(), time(0), tzinfo=UTC) + timedelta(
            minutes=720 - 4 * self.longitude - equation_of_time
        )
        days = round((local_noon - noon) / timedelta(days=1))
        return noon + timedelta(days=days)
