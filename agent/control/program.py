"""The lighting program: which level each lamp should have at any instant, as pure functions.

Two parts, both free of I/O and of the wall clock (time is passed in; only
``cross_check``'s default first night, today at the site, reads the clock):

* the typed config sections ``site:`` (``SiteConfig``) and ``lighting:`` (``LightingConfig``),
  with ``LightingConfig.cross_check`` listing every problem between keys, located by key
  path, the way the loader reports a profile's ``cross_check``;
* ``LightingPlan``, which answers ``level_at(lamp, at)`` and ``timeline(lamp, start, end)``.

In the terms of TALQ: a ``Program`` is a Calendar choosing one dimming profile per night
(FixedTimeControl steps at "HH:MM", AstroClockTimeControl steps at dusk/dawn/sunset/sunrise
with offsets), and ``default_level`` is the ``defaultLightState`` a lamp without a program
gets (100 %).

Rules:

* **The night.** The night of day D runs from 12:00 on D to 12:00 on D+1, local wall time.
  Its profile is the one the calendar chooses for D, the day the night *started*: at 01:00
  on Saturday the lamps still follow Friday's profile. A step "HH:MM" from 12:00 on is on
  D, one before 12:00 on D+1. Dusk and sunset are the evening's (D), dawn and sunrise the
  morning's (D+1): the crossings between the site's solar noon on D and solar midnight,
  and between solar midnight and solar noon on D+1. Offsets are minutes of elapsed time
  added to the step's instant. The lamp keeps the level of the last step passed, so during
  the day it keeps the profile's last level (0: off).
* **Clock changes.** Steps are local wall time in the site's zone. A wall time the clocks
  skip (02:30 on the spring-forward night) is read with the offset from before the jump,
  i.e. moved forward by the length of the gap (02:30 -> 03:30 CEST); a wall time that
  happens twice (02:30 on the fall-back night) is its first occurrence (CEST). All
  instants are compared in UTC; every datetime this module returns is in UTC.
* **Polar night and polar day.** An astro anchor that does not happen in its half of the
  night is resolved by the sun's elevation (``sun.py``'s thresholds: -0.833° for sunrise
  and sunset, -6° for civil dawn and dusk). If the sun stays *below* the threshold (polar
  night for that anchor), an evening step takes effect at the start of the night and a
  morning step never comes: the lamp stays on day and night at the profile's night level
  (fixed-time dimming steps still apply at their times). If the sun stays *above* it
  (polar day, or a white night with no civil dusk), that whole night is skipped: the lamp
  stays off.
* **Order.** Steps must come in the listed order every night at the site;
  ``cross_check(site=...)`` checks it on the next 366 nights. Should a night still bring a step
  earlier than the one before it, it takes effect together with that one (the later step in
  the list wins at one instant), and a step is never moved out of its night's window: the
  lamp always gets a level, and what the list says last wins.
* **Answers.** ``timeline`` lists changes of level only (several steps at one instant count
  once, with the last one's level); ``Decision.next_change`` is the next such change, or
  None if none comes within 370 nights (a lamp in a long polar night).
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from itertools import groupby, pairwise
from typing import Annotated, Any, Final, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
)

from smartpole.agent.control.sun import (
    CIVIL_DEPRESSION_DEG,
    SUNRISE_DEPRESSION_DEG,
    SunTimes,
    solar_elevation,
    sun_times,
)

__all__ = [
    "CalendarRule",
    "Change",
    "DaySpec",
    "Decision",
    "LightingConfig",
    "LightingPlan",
    "Location",
    "Photocell",
    "Program",
    "SiteConfig",
    "Step",
    "lamp_programs",
]

Location = tuple[str | int, ...]
# The same pattern as pole.py's Name; not imported from there because pole.py will import
# this module to place the sections (a cycle).
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=64)]

MAX_OFFSET_MIN: Final = 720
NIGHT_STARTS: Final = time(12, 0)
CHECKED_NIGHTS: Final = 366
CHANGE_HORIZON_NIGHTS: Final = 370  # how far next_change looks (polar night lasts months)

Anchor = Literal["sunset", "dusk", "dawn", "sunrise"]
EVENING: Final[tuple[Anchor, ...]] = ("sunset", "dusk")
ANCHORS: Final[tuple[Anchor, ...]] = ("sunset", "dusk", "dawn", "sunrise")
_RANK: Final = {anchor: rank for rank, anchor in enumerate(ANCHORS)}  # order in a night
_THRESHOLD: Final = {
    "sunset": -SUNRISE_DEPRESSION_DEG,
    "sunrise": -SUNRISE_DEPRESSION_DEG,
    "dusk": -CIVIL_DEPRESSION_DEG,
    "dawn": -CIVIL_DEPRESSION_DEG,
}
_CLOCK = re.compile(r"^([0-9]{1,2}):([0-9]{2})$")
_ISO_DATE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
WEEKDAYS: Final = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_WEEKDAY_NAMES: Final = {
    **{name: number for number, name in enumerate(WEEKDAYS)},
    **{
        name: number
        for number, name in enumerate(
            ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
        )
    },
}
_DAY_HELP: Final = (
    "expected a weekday (mon … sun), a weekday range (mon..fri), an ISO date (2026-10-01) "
    "or a date range (2026-10-01..2026-10-07)"
)
_TICK: Final = timedelta(microseconds=1)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ----- site -----


class SiteConfig(_Strict):
    """Where the pole stands: all astro times are computed from this, with no network."""

    latitude: float = Field(ge=-90, le=90, description="degrees north (south is negative)")
    longitude: float = Field(ge=-180, le=180, description="degrees east (west is negative)")
    timezone: str = Field(description="IANA zone, e.g. Asia/Shanghai; steps are its wall time")

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


# ----- calendar days -----


@dataclass(frozen=True)
class DaySpec:
    """One entry of a calendar rule's ``days``: weekdays, or an inclusive range of dates."""

    text: str
    weekdays: frozenset[int] = frozenset()
    first: date | None = None
    last: date | None = None

    def matches(self, day: date) -> bool:
        if self.first is not None and self.last is not None:
            return self.first <= day <= self.last
        return day.weekday() in self.weekdays

    def __str__(self) -> str:
        return self.text


def _iso_date(text: str) -> date:
    if not _ISO_DATE.match(text):
        raise ValueError(f"unknown day {text!r}: {_DAY_HELP}")
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"no such date {text!r}") from None


def _parse_day(value: object) -> DaySpec:
    if isinstance(value, datetime):
        raise ValueError(f"a day is a date without a time of day (got {value.isoformat()!r})")
    if isinstance(value, date):  # YAML reads an unquoted 2026-10-01 as a date
        return DaySpec(value.isoformat(), first=value, last=value)
    if not isinstance(value, str):
        raise ValueError(f"unknown day {value!r}: {_DAY_HELP}")
    text = value.strip().lower()
    if text in _WEEKDAY_NAMES:
        return DaySpec(text, weekdays=frozenset({_WEEKDAY_NAMES[text]}))
    if ".." in text:
        begin, _, finish = (part.strip() for part in text.partition(".."))
        if begin in _WEEKDAY_NAMES and finish in _WEEKDAY_NAMES:
            first_day, last_day = _WEEKDAY_NAMES[begin], _WEEKDAY_NAMES[finish]
            span = (last_day - first_day) % 7  # fri..mon wraps over the weekend
            days = frozenset((first_day + k) % 7 for k in range(span + 1))
            return DaySpec(text, weekdays=days)
        if _ISO_DATE.match(begin) and _ISO_DATE.match(finish):
            first, last = _iso_date(begin), _iso_date(finish)
            if last < first:
                raise ValueError(f"date range {text!r} ends before it starts")
            return DaySpec(text, first=first, last=last)
        raise ValueError(f"bad range {value!r}: {_DAY_HELP}")
    if _ISO_DATE.match(text):
        day = _iso_date(text)
        return DaySpec(text, first=day, last=day)
    raise ValueError(f"unknown day {value!r}: {_DAY_HELP}")


Day = Annotated[
    DaySpec,
    PlainValidator(_parse_day),
    PlainSerializer(str, return_type=str),
    WithJsonSchema({"type": "string"}),
]


class CalendarRule(_Strict):
    """Nights starting on any of ``days`` use ``profile``; the first matching rule wins."""

    days: list[Day] = Field(min_length=1)
    profile: Name

    def matches(self, day: date) -> bool:
        return any(spec.matches(day) for spec in self.days)

    def describe(self) -> str:
        return ", ".join(str(spec) for spec in self.days)


# ----- steps and programs -----


class Step(_Strict):
    """From ``at`` + ``offset_min`` on, the lamp is at ``level`` % (0 = off)."""

    at: str = Field(description='dusk, dawn, sunset, sunrise or local wall time "HH:MM"')
    offset_min: int = Field(0, ge=-MAX_OFFSET_MIN, le=MAX_OFFSET_MIN, strict=True)
    level: int = Field(ge=0, le=100, strict=True)

    @field_validator("at", mode="before")
    @classmethod
    def _anchor_or_clock(cls, value: object) -> object:
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 1440:
            # YAML 1.1 reads an unquoted 23:00 as the base-60 number 1380.
            hours, minutes = divmod(value, 60)
            raise ValueError(
                f'write the time in quotes: at: "{hours:02d}:{minutes:02d}" '
                f"(YAML reads an unquoted {hours}:{minutes:02d} as the number {value})"
            )
        if not isinstance(value, str):
            raise ValueError(f'expected dusk, dawn, sunset, sunrise or "HH:MM" (got {value!r})')
        text = value.strip().lower()
        if text in _RANK:
            return text
        match = _CLOCK.match(text)
        if match is None or int(match[1]) > 23 or int(match[2]) > 59:
            raise ValueError(f'expected dusk, dawn, sunset, sunrise or "HH:MM" (got {value!r})')
        return f"{int(match[1]):02d}:{match[2]}"

    @property
    def anchor(self) -> Anchor | None:
        """The astro event the step hangs on, None for a wall-clock step."""
        for anchor in ANCHORS:
            if self.at == anchor:
                return anchor
        return None

    @property
    def clock(self) -> time | None:
        if self.anchor is not None:
            return None
        hours, minutes = self.at.split(":")
        return time(int(hours), int(minutes))

    @property
    def is_evening(self) -> bool:
        return self.anchor in EVENING

    def night_minute(self) -> int | None:
        """A wall-clock step's minute in the night counted from 12:00, offset included."""
        clock = self.clock
        if clock is None:
            return None
        return (clock.hour * 60 + clock.minute - 720) % 1440 + self.offset_min

    def describe(self) -> str:
        if self.offset_min == 0:
            return self.at
        return f"{self.at}{self.offset_min:+d}"


Profile = Annotated[list[Step], Field(description="steps of one night, in time order")]


class Program(_Strict):
    """A calendar of rules choosing one dimming profile per night, with a default."""

    calendar: list[CalendarRule] = Field(default_factory=list)
    default: Name = Field(description="profile of nights no calendar rule matches")
    profiles: dict[Name, Profile] = Field(min_length=1)

    def profile_for(self, day: date) -> tuple[str, str]:
        """The profile of the night that starts on ``day``, and why."""
        for number, rule in enumerate(self.calendar):
            if rule.matches(day):
                return rule.profile, f"calendar[{number}] {rule.describe()}"
        return self.default, "default"


class Photocell(_Strict):
    """The light sensor the controller falls back to when the clock is not trusted."""

    device: Name
    point: Name
    dark_below_lux: float = Field(gt=0, description="switch on below this illuminance")
    light_above_lux: float = Field(gt=0, description="switch off above this illuminance")

    @field_validator("light_above_lux")
    @classmethod
    def _hysteresis(cls, value: float, info: ValidationInfo) -> float:
        dark = info.data.get("dark_below_lux")
        if dark is not None and value <= dark:
            raise ValueError(
                f"light_above_lux ({value:g}) must be above dark_below_lux ({dark:g}) so the "
                "lamps do not flicker at twilight"
            )
        return value


class LightingConfig(_Strict):
    """The ``lighting:`` section: groups of lamps, programs and who follows which."""

    default_level: int = Field(
        100, ge=1, le=100, description="TALQ defaultLightState: level of a lamp with no program"
    )
    lease_s: int = Field(
        300, ge=10, le=86400, description="how long a pushed level holds in the controller"
    )
    refresh_s: float = Field(60.0, ge=1, description="how often a level is pushed again")
    photocell: Photocell | None = None
    groups: dict[Name, list[Name]] = Field(default_factory=dict)
    programs: dict[Name, Program] = Field(default_factory=dict)
    assignments: dict[Name, Name] = Field(
        default_factory=dict, description="group or lamp -> program"
    )

    @field_validator("groups")
    @classmethod
    def _groups_not_empty(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for name, members in value.items():
            if not members:
                raise ValueError(f"group {name!r} has no lamps")
        return value

    @field_validator("refresh_s")
    @classmethod
    def _refresh_within_lease(cls, value: float, info: ValidationInfo) -> float:
        lease = info.data.get("lease_s")
        if lease is not None and not value < lease / 2:
            raise ValueError(
                f"refresh_s ({value:g}) must be less than half of lease_s ({lease}) so one "
                "lost push does not let the lease run out"
            )
        return value

    # ----- checks between keys -----

    def problems(self, prefix: Location = ("lighting",)) -> list[tuple[Location, str]]:
        """Problems inside the section alone: profiles, calendars, program names.

        ``LightingPlan`` refuses a section with any of these.
        """
        found: list[tuple[Location, str]] = []
        for name, program in self.programs.items():
            found += _program_problems(program, (*prefix, "programs", name))
        known = ", ".join(self.programs) or "none"
        for key, program_name in self.assignments.items():
            if program_name not in self.programs:
                found.append(
                    ((*prefix, "assignments", key), f"no program {program_name!r} ({known})")
                )
        return found

    def cross_check(
        self,
        lamps: Collection[str],
        *,
        site: SiteConfig | None = None,
        devices: Collection[str] | None = None,
        first_night: date | None = None,
        nights: int = CHECKED_NIGHTS,
        prefix: Location = ("lighting",),
    ) -> list[tuple[Location, str]]:
        """Every problem between keys, each with its key path (under ``prefix``).

        ``lamps`` are the pole's lamp device names: groups may only name them, and each must
        get its program from exactly one assignment (itself or one group). ``devices``, when
        given, are all device names (for the photocell). With ``site``, each profile is also
        laid on the real sun at the site for ``nights`` nights from ``first_night`` (default:
        today there), on the nights its calendar gives it: its steps must come in order and
        stay inside their night.
        """
        found = self.problems(prefix)
        found += self._lamp_problems(set(lamps), prefix)
        photocell = self.photocell
        if devices is not None and photocell is not None and photocell.device not in devices:
            found.append(
                ((*prefix, "photocell", "device"), f"no device named {photocell.device!r}")
            )
        if site is not None:
            place = _Site(site)
            start = first_night or datetime.now(place.zone).date()
            for name, program in self.programs.items():
                where = (*prefix, "programs", name)
                if not _program_problems(program, where):
                    found += _night_problems(program, place, start, nights, where)
        return found

    def _lamp_problems(self, lamps: set[str], prefix: Location) -> list[tuple[Location, str]]:
        found: list[tuple[Location, str]] = []
        known = ", ".join(sorted(lamps)) or "none"
        for group, members in self.groups.items():
            if group in lamps:
                found.append(
                    (
                        (*prefix, "groups", group),
                        f"group {group!r} has a lamp's name: an assignment could not tell "
                        "them apart",
                    )
                )
            seen: set[str] = set()
            for index, lamp in enumerate(members):
                if lamp not in lamps:
                    found.append(
                        ((*prefix, "groups", group, index), f"no lamp named {lamp!r} ({known})")
                    )
                elif lamp in seen:
                    found.append(
                        ((*prefix, "groups", group, index), f"lamp {lamp!r} is listed twice")
                    )
                seen.add(lamp)
        given_by: dict[str, str] = {}
        for key in self.assignments:
            if key in self.groups:
                members = list(dict.fromkeys(self.groups[key]))
            elif key in lamps:
                members = [key]
            else:
                found.append(((*prefix, "assignments", key), f"no group or lamp named {key!r}"))
                continue
            for lamp in members:
                if lamp not in lamps:
                    continue  # reported at the group
                earlier = given_by.setdefault(lamp, key)
                if earlier != key:
                    found.append(
                        (
                            (*prefix, "assignments", key),
                            f"lamp {lamp!r} already gets its program from {earlier!r}; a lamp "
                            "follows exactly one assignment",
                        )
                    )
        for lamp in sorted(lamps - set(given_by)):
            found.append(
                (
                    (*prefix, "assignments"),
                    f"lamp {lamp!r} has no program: assign it or a group that holds it "
                    f"(it would burn at {self.default_level} % day and night)",
                )
            )
        return found


def _program_problems(program: Program, where: Location) -> list[tuple[Location, str]]:
    found: list[tuple[Location, str]] = []
    known = ", ".join(program.profiles)
    if program.default not in program.profiles:
        found.append(((*where, "default"), f"no profile {program.default!r} ({known})"))
    for number, rule in enumerate(program.calendar):
        if rule.profile not in program.profiles:
            found.append(
                ((*where, "calendar", number, "profile"), f"no profile {rule.profile!r} ({known})")
            )
    for name, steps in program.profiles.items():
        found += _profile_problems(steps, (*where, "profiles", name))
    return found


def _profile_problems(steps: list[Step], where: Location) -> list[tuple[Location, str]]:
    """What is wrong with a profile wherever the pole stands."""
    if len(steps) < 2:
        return [(where, "a profile needs an 'on' step (level above 0) and a last 'off' step")]
    found: list[tuple[Location, str]] = []
    if steps[0].level == 0:
        found.append(
            (
                (*where, 0, "level"),
                "a profile starts with an 'on' step: level above 0 (it is 0 here)",
            )
        )
    if steps[-1].level != 0:
        found.append(
            (
                (*where, len(steps) - 1, "level"),
                f"missing 'off' step: a profile ends with level 0 so the lamps go off in the "
                f"morning (the last step, {steps[-1].describe()}, sets {steps[-1].level} %)",
            )
        )
    for index, step in enumerate(steps):
        minute = step.night_minute()
        if minute is not None and not 0 <= minute < 1440:
            found.append(
                (
                    (*where, index),
                    f"{step.describe()} falls outside its night (a night runs from 12:00 to "
                    "12:00 the next day; a time before 12:00 is the next morning)",
                )
            )
    for later in range(1, len(steps)):
        for earlier in range(later):
            relation = _definite_order(steps[earlier], steps[later])
            if relation is None or relation < 0:
                continue
            a, b = steps[earlier], steps[later]
            message = (
                f"{b.describe()} happens at the same time as step [{earlier}] {a.describe()}: "
                "steps overlap"
                if relation == 0
                else f"{b.describe()} comes before step [{earlier}] {a.describe()}: steps are "
                "listed in time order, from evening to morning"
            )
            found.append(((*where, later), message))
            break
    return found


def _definite_order(a: Step, b: Step) -> int | None:
    """-1 if ``a`` comes before ``b`` every night anywhere, 0 same instant, 1 after; None
    when it depends on the site and the date."""
    minute_a, minute_b = a.night_minute(), b.night_minute()
    if minute_a is not None and minute_b is not None:
        return (minute_a > minute_b) - (minute_a < minute_b)
    if a.anchor is not None and b.anchor is not None:
        if a.anchor == b.anchor:
            return (a.offset_min > b.offset_min) - (a.offset_min < b.offset_min)
        if a.offset_min == b.offset_min:
            return 1 if _RANK[a.anchor] > _RANK[b.anchor] else -1
    return None


# ----- the sun at the site -----


class _Sky(enum.Enum):
    """Why an astro anchor has no instant in its half of a night."""

    DARK = "dark"  # the sun stays below the anchor's elevation: polar night for it
    LIGHT = "light"  # it stays above: polar day, or a white night without civil dusk


Resolved = datetime | _Sky


class _Site:
    """Night windows, wall times and sun events at one site; caches the sun."""

    _CACHE_LIMIT: Final = 4096

    def __init__(self, site: SiteConfig) -> None:
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

    def resolve(self, step: Step, day: date) -> Resolved:
        """The step's instant in the night of ``day`` before any ordering, or why none."""
        clock = step.clock
        if clock is not None:
            on = day if clock >= NIGHT_STARTS else day + timedelta(days=1)
            return self.wall(on, clock) + timedelta(minutes=step.offset_min)
        assert step.anchor is not None
        event = self.event(step.anchor, day)
        if isinstance(event, _Sky):
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
        threshold = _THRESHOLD[anchor]
        above_low = self._elevation(low) > threshold
        above_high = self._elevation(high) > threshold
        if evening:
            if not above_low:
                return _Sky.DARK
            if above_high:
                return _Sky.LIGHT
        else:
            if not above_high:
                return _Sky.DARK
            if above_low:
                return _Sky.LIGHT
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


# ----- nights -----


@dataclass(frozen=True)
class _Event:
    at: datetime  # UTC
    level: int
    reason: str


@dataclass(frozen=True)
class Decision:
    """The program's answer for one lamp at one instant."""

    level: int
    reason: str
    source: Literal["program", "default"]
    next_change: datetime | None  # UTC; None: no change within CHANGE_HORIZON_NIGHTS


Change = tuple[datetime, int, str]


def _night_problems(
    program: Program, place: _Site, first: date, nights: int, where: Location
) -> list[tuple[Location, str]]:
    """Lay each profile on the real nights it is chosen for; report each step once, with
    the first night that goes wrong and how many do."""
    seen: dict[Location, list[Any]] = {}  # path -> [count, first night, what happens, hint]

    def note(path: Location, day: date, what: str, hint: str) -> None:
        entry = seen.setdefault((*where, *path), [0, day, what, hint])
        entry[0] += 1

    for number in range(nights):
        day = first + timedelta(days=number)
        name, _ = program.profile_for(day)
        steps = program.profiles[name]
        start, end = place.window(day)
        times = [place.resolve(step, day) for step in steps]
        if any(t is _Sky.LIGHT for t in times):
            continue  # a night the sun skips: nothing to order
        placed = [(i, t) for i, t in enumerate(times) if isinstance(t, datetime)]
        for index, t in placed:
            if not start <= t < end and (steps[index].anchor is None or steps[index].offset_min):
                # An astro step without an offset is where the sun puts it (solar noon can
                # come before 12:00 in polar regions); only an offset or a time is wrong.
                what = f"{steps[index].describe()} comes at {place.local(t)}"
                note(_blame(name, steps, index), day, what, "outside its night (12:00 to 12:00)")
        for (i, t_i), (j, t_j) in pairwise(placed):
            if t_j > t_i:
                continue
            a, b = steps[i], steps[j]
            when = "at the same time as" if t_j == t_i else "before"
            if a.anchor is not None and a.offset_min:
                path = _blame(name, steps, i)
                what = (
                    f"the offset moves {a.describe()} ({place.local(t_i)}) past the next step "
                    f"[{j}] {b.describe()} ({place.local(t_j)})"
                )
            else:
                path = _blame(name, steps, j)
                what = (
                    f"{b.describe()} ({place.local(t_j)}) comes {when} step [{i}] "
                    f"{a.describe()} ({place.local(t_i)})"
                )
            note(path, day, what, "steps must keep their listed order every night here")
    return [
        (
            path,
            f"{what} on the night of {day:%a %Y-%m-%d} ({count} of the {nights} nights checked "
            f"from {first}): {hint}",
        )
        for path, (count, day, what, hint) in seen.items()
    ]


def _blame(profile: str, steps: list[Step], index: int) -> Location:
    """Where a step that lands in the wrong place is reported: its offset if it has one."""
    step = steps[index]
    tail: Location = ("offset_min",) if step.anchor is not None and step.offset_min else ()
    return ("profiles", profile, index, *tail)


class LightingPlan:
    """The lighting program of one pole, evaluated at instants given by the caller."""

    def __init__(self, site: SiteConfig, lighting: LightingConfig) -> None:
        problems = lighting.problems()
        if problems:
            listed = "; ".join(f"{'.'.join(map(str, path))}: {msg}" for path, msg in problems)
            raise ValueError(f"the lighting section has problems: {listed}")
        self.site = site
        self.lighting = lighting
        self._place = _Site(site)
        self._programs = dict(lamp_programs(lighting))
        self._nights: dict[tuple[str, date], tuple[_Event, ...]] = {}

    def program_of(self, lamp: str) -> str | None:
        """The program a lamp follows: its own assignment, else its first assigned group."""
        return self._programs.get(lamp)

    def night_of(self, at: datetime) -> date:
        """The day whose night ``at`` belongs to (12:00 to 12:00 local)."""
        return self._place.night_of(_aware(at))

    def level_at(self, lamp: str, at: datetime) -> Decision:
        at = _aware(at)
        program = self._programs.get(lamp)
        if program is None:
            level = self.lighting.default_level
            reason = f"lamp {lamp!r} has no lighting program: default light state {level} %"
            return Decision(level, reason, "default", None)
        night = self._place.night_of(at)
        current = self._last_event(program, night, at)
        changes = self._changes(program, night, at, current.level)
        next_change = next((moment for moment, _, _ in changes), None)
        return Decision(current.level, current.reason, "program", next_change)

    def timeline(self, lamp: str, start: datetime, end: datetime) -> list[Change]:
        """Every change of level in [start, end): (instant in UTC, level, reason)."""
        start, end = _aware(start), _aware(end)
        program = self._programs.get(lamp)
        if program is None or end <= start:
            return []
        before = start - _TICK  # a change at ``start`` itself is in the window
        night = self._place.night_of(before)
        initial = self._last_event(program, night, before).level
        out: list[Change] = []
        last = self._place.night_of(end)
        for change in self._changes(program, night, before, initial, last):
            if change[0] >= end:
                break
            out.append(change)
        return out

    # ----- internals -----

    def _last_event(self, program: str, night: date, at: datetime) -> _Event:
        passed = [e for e in self._events(program, night) if e.at <= at]
        if passed:
            return passed[-1]
        return self._events(program, night - timedelta(days=1))[-1]

    def _changes(
        self,
        program: str,
        night: date,
        after: datetime,
        level: int,
        last_night: date | None = None,
    ) -> Iterator[Change]:
        """Changes of level later than ``after``, starting from ``level`` then."""
        final = last_night or night + timedelta(days=CHANGE_HORIZON_NIGHTS)
        day = night
        while day <= final:
            events = [e for e in self._events(program, day) if e.at > after]
            for moment, group in groupby(events, key=lambda e: e.at):
                winner = list(group)[-1]  # several steps at one instant: the last listed wins
                if winner.level != level:
                    level = winner.level
                    yield moment, winner.level, winner.reason
            day += timedelta(days=1)

    def _events(self, program_name: str, day: date) -> tuple[_Event, ...]:
        key = (program_name, day)
        found = self._nights.get(key)
        if found is None:
            if len(self._nights) > 4096:
                self._nights.clear()
            found = self._nights[key] = self._night(program_name, day)
        return found

    def _night(self, program_name: str, day: date) -> tuple[_Event, ...]:
        program = self.lighting.programs[program_name]
        profile, rule = program.profile_for(day)
        steps = program.profiles[profile]
        place = self._place
        start, end = place.window(day)
        context = f"{program_name}/{profile} for the night of {day:%a %Y-%m-%d} ({rule})"
        resolved = [place.resolve(step, day) for step in steps]
        for step, when in zip(steps, resolved, strict=True):
            if when is _Sky.LIGHT:
                assert step.anchor is not None
                return (
                    _Event(
                        start,
                        0,
                        f"{context}: no {step.anchor} this night, the sun stays above "
                        f"{_THRESHOLD[step.anchor]:g}° (polar day): off",
                    ),
                )
        events: list[_Event] = []
        previous = start
        for index, (step, when) in enumerate(zip(steps, resolved, strict=True)):
            label = f"step [{index}] {step.describe()}"
            if isinstance(when, datetime):
                at = min(max(when, previous), end - _TICK)
                note = ""
                if at != when:
                    note = f" (due {place.local(when)}, held to its place in the night)"
                reason = f"{context}: {label} at {place.local(at)}{note} -> {step.level} %"
            elif step.is_evening:
                at = previous
                reason = (
                    f"{context}: {label}: no {step.anchor}, the sun stays below "
                    f"{_THRESHOLD[str(step.anchor)]:g}° (polar night), so it applies from "
                    f"{place.local(at)} -> {step.level} %"
                )
            else:
                continue  # a morning that does not come this night: the night goes on
            events.append(_Event(at, step.level, reason))
            previous = at
        if not events:
            events.append(
                _Event(
                    start,
                    steps[0].level,
                    f"{context}: none of its astro events happens (polar night): on at the "
                    f"profile's night level -> {steps[0].level} %",
                )
            )
        return tuple(events)


def _aware(at: datetime) -> datetime:
    if at.utcoffset() is None:
        raise ValueError(f"a timezone-aware datetime is needed, got naive {at.isoformat()}")
    return at.astimezone(UTC)


def lamp_programs(lighting: LightingConfig) -> Mapping[str, str]:
    """Lamp -> program as ``LightingPlan`` resolves it (for status pages and the CLI)."""
    programs: dict[str, str] = {}
    for key, name in lighting.assignments.items():
        if key not in lighting.groups:
            programs.setdefault(key, name)
    for group, members in lighting.groups.items():
        assigned = lighting.assignments.get(group)
        if assigned is not None:
            for lamp in members:
                programs.setdefault(lamp, assigned)
    return programs
