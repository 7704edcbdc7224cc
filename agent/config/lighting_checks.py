"""Checks of the ``lighting:`` section: within it, against the pole's lamps, and on the sun.

What is *wrong* with a lighting config lives here, apart from the models (``lighting.py``)
and from how a good one is evaluated (``control/program.py``).
Every problem is reported with its key path (``Location``), the way the loader reports a
profile's ``cross_check``:

* ``section_problems``: the section alone (profiles, calendars, program names);
  ``LightingPlan`` refuses a section with any of these;
* ``cross_check``: also between keys (groups and assignments against the pole's lamps, the
  photocell against its devices) and, given the site, each profile laid on the real sun
  there for ``CHECKED_NIGHTS`` nights: its steps must come in order and stay in their night.

``LightingConfig.problems`` and ``LightingConfig.cross_check`` are the public entry points;
the models are imported for type checking only, so the models can call in here.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import date, datetime, timedelta
from itertools import pairwise
from typing import TYPE_CHECKING, Any, Final

from smartpole.agent.astro.site import RANK, Site, Sky

if TYPE_CHECKING:
    from smartpole.agent.config.lighting import LightingConfig, Program, Step
    from smartpole.agent.config.site import SiteConfig

__all__ = ["CHECKED_NIGHTS", "Location", "cross_check", "section_problems"]

Location = tuple[str | int, ...]

CHECKED_NIGHTS: Final = 366


def section_problems(lighting: LightingConfig, prefix: Location) -> list[tuple[Location, str]]:
    """The body of ``LightingConfig.problems``: the section alone."""
    found: list[tuple[Location, str]] = []
    for name, program in lighting.programs.items():
        found += _program_problems(program, (*prefix, "programs", name))
    known = ", ".join(lighting.programs) or "none"
    for key, program_name in lighting.assignments.items():
        if program_name not in lighting.programs:
            found.append(((*prefix, "assignments", key), f"no program {program_name!r} ({known})"))
    return found


def cross_check(
    lighting: LightingConfig,
    lamps: Collection[str],
    *,
    site: SiteConfig | None,
    devices: Collection[str] | None,
    first_night: date | None,
    nights: int,
    prefix: Location,
) -> list[tuple[Location, str]]:
    """The body of ``LightingConfig.cross_check`` (whose docstring says what it checks)."""
    found = section_problems(lighting, prefix)
    found += _lamp_problems(lighting, set(lamps), prefix)
    photocell = lighting.photocell
    if devices is not None and photocell is not None and photocell.device not in devices:
        found.append(((*prefix, "photocell", "device"), f"no device named {photocell.device!r}"))
    if site is not None:
        place = Site(site)
        start = first_night or datetime.now(place.zone).date()
        for name, program in lighting.programs.items():
            where = (*prefix, "programs", name)
            if not _program_problems(program, where):
                found += _night_problems(program, place, start, nights, where)
    return found


def _lamp_problems(
    lighting: LightingConfig, lamps: set[str], prefix: Location
) -> list[tuple[Location, str]]:
    """Groups naming only lamps, and each lamp given its program by exactly one assignment."""
    found: list[tuple[Location, str]] = []
    known = ", ".join(sorted(lamps)) or "none"
    for group, members in lighting.groups.items():
        if group in lamps:
            found.append(
                (
                    (*prefix, "groups", group),
                    f"group {group!r} has a lamp's name: an assignment could not tell them apart",
                )
            )
        seen: set[str] = set()
        for index, lamp in enumerate(members):
            if lamp not in lamps:
                found.append(
                    ((*prefix, "groups", group, index), f"no lamp named {lamp!r} ({known})")
                )
            elif lamp in seen:
                found.append(((*prefix, "groups", group, index), f"lamp {lamp!r} is listed twice"))
            seen.add(lamp)
    given_by: dict[str, str] = {}
    for key in lighting.assignments:
        if key in lighting.groups:
            members = list(dict.fromkeys(lighting.groups[key]))
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
                f"(it would burn at {lighting.default_level} % day and night)",
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
            return 1 if RANK[a.anchor] > RANK[b.anchor] else -1
    return None


def _night_problems(
    program: Program, place: Site, first: date, nights: int, where: Location
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
        if any(t is Sky.LIGHT for t in times):
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
