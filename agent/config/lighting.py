"""The ``lighting:`` config section as typed, validated models.

What a key may hold is checked one key at a time by pydantic here; the checks between keys
live in ``lighting_checks.py`` and the evaluator in ``control/program.py``.
``LightingConfig.problems`` and ``LightingConfig.cross_check`` are the section's public API
and run the checks in ``lighting_checks.py``.

In the terms of TALQ: a ``Program`` is a Calendar choosing one dimming profile per night
(FixedTimeControl steps at "HH:MM", AstroClockTimeControl steps at dusk/dawn/sunset/sunrise
with offsets), and ``default_level`` is the ``defaultLightState`` a lamp without a program
gets (100 %). What the steps mean on a real night is described in ``program.py``.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from datetime import date, datetime, time
from typing import Annotated, Final

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

from smartpole.agent.astro.site import ANCHORS, EVENING, RANK, Anchor
from smartpole.agent.config import lighting_checks
from smartpole.agent.config.lamp_monitor import LampMonitorSettings
from smartpole.agent.config.lighting_checks import CHECKED_NIGHTS, Location
from smartpole.agent.config.site import SiteConfig

__all__ = [
    "CalendarRule",
    "DaySpec",
    "LightingConfig",
    "Photocell",
    "Program",
    "Step",
]

# The same pattern as pole.py's Name; not imported from there because pole.py imports this
# module to place the section.
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=64)]

MAX_OFFSET_MIN: Final = 720
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


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


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
        if text in RANK:
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
    monitor: LampMonitorSettings | None = Field(
        None, description="derived lamp faults and energy/burning-hour accounting (opt-in)"
    )
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

    # ----- checks between keys (lighting_checks.py) -----

    def problems(self, prefix: Location = ("lighting",)) -> list[tuple[Location, str]]:
        """Problems inside the section alone: profiles, calendars, program names.

        ``LightingPlan`` refuses a section with any of these.
        """
        return lighting_checks.section_problems(self, prefix)

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
        return lighting_checks.cross_check(
            self,
            lamps,
            site=site,
            devices=devices,
            first_night=first_night,
            nights=nights,
            prefix=prefix,
        )
