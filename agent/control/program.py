"""The lighting program: which level each lamp should have at any instant, as pure functions.

``LightingPlan`` answers ``level_at(lamp, at)`` and ``timeline(lamp, start, end)``, free of
I/O and of the wall clock (time is passed in). This module is the evaluator; beside it:

* ``config/site.py`` and ``config/lighting.py``: the typed config sections ``site:``
  (``SiteConfig``) and ``lighting:`` (``LightingConfig``, ``Program``, ``Step``, ...);
* ``config/lighting_checks.py``: what ``LightingConfig.problems`` and
  ``LightingConfig.cross_check`` report, located by key path (only ``cross_check``'s
  default first night, today at the site, reads the clock);
* ``astro/site.py``: the sun at the site, turning a step into an instant in one night.

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

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from itertools import groupby
from typing import Final, Literal

from smartpole.agent.astro.site import THRESHOLD, Site, Sky
from smartpole.agent.config.lighting import LightingConfig
from smartpole.agent.config.site import SiteConfig

__all__ = ["Change", "Decision", "LightingPlan", "lamp_programs"]

CHANGE_HORIZON_NIGHTS: Final = 370  # how far next_change looks (polar night lasts months)
_TICK: Final = timedelta(microseconds=1)


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


class LightingPlan:
    """The lighting program of one pole, evaluated at instants given by the caller."""

    def __init__(self, site: SiteConfig, lighting: LightingConfig) -> None:
        problems = lighting.problems()
        if problems:
            listed = "; ".join(f"{'.'.join(map(str, path))}: {msg}" for path, msg in problems)
            raise ValueError(f"the lighting section has problems: {listed}")
        self.site = site
        self.lighting = lighting
        self._place = Site(site)
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
            if when is Sky.LIGHT:
                assert step.anchor is not None
                return (
                    _Event(
                        start,
                        0,
                        f"{context}: no {step.anchor} this night, the sun stays above "
                        f"{THRESHOLD[step.anchor]:g}° (polar day): off",
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
                    f"{THRESHOLD[str(step.anchor)]:g}° (polar night), so it applies from "
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
