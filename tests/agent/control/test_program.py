"""The lighting program: config checks located by key path, and exact timelines of real nights.

Astro times in the expected timelines come from ``sun.py`` for the same site and date, so
the comparisons are exact; a few are also held against almanac values to catch a sun that
is wrong in the same way on both sides.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict, ValidationError

from smartpole.agent.astro.sun import SunTimes, solar_elevation, sun_times
from smartpole.agent.config.lighting import LightingConfig
from smartpole.agent.config.problems import validate
from smartpole.agent.config.site import SiteConfig
from smartpole.agent.config.yamlsource import parse_yaml
from smartpole.agent.control.program import Decision, LightingPlan
from smartpole.agent.core.errors import Problem

GUANGZHOU = SiteConfig(latitude=23.1291, longitude=113.2644, timezone="Asia/Shanghai")
BERLIN = SiteConfig(latitude=52.52, longitude=13.405, timezone="Europe/Berlin")
TROMSO = SiteConfig(latitude=69.6492, longitude=18.9553, timezone="Europe/Oslo")
SHANGHAI = ZoneInfo("Asia/Shanghai")
BERLIN_TZ = ZoneInfo("Europe/Berlin")
OSLO = ZoneInfo("Europe/Oslo")
LAMPS = {"lamp1", "lamp2", "lamp3"}
FIRST_NIGHT = date(2026, 1, 1)  # the site checks look at the nights of 2026


def sun(site: SiteConfig, day: date) -> SunTimes:
    return sun_times(day, site.latitude, site.longitude, site.zone)


def at(
    zone: ZoneInfo,
    year: int,
    month: int,
    day: int,
    hour: int = 0,
    minute: int = 0,
    second: int = 0,
    *,
    fold: int = 0,
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=zone, fold=fold)


def present(value: datetime | None) -> datetime:
    assert value is not None
    return value


def steps(*items: tuple[str, int] | tuple[str, int, int]) -> list[dict[str, Any]]:
    """("dusk", 100) or ("sunset", -10, 100): at, [offset_min,] level."""
    out: list[dict[str, Any]] = []
    for item in items:
        if len(item) == 2:
            out.append({"at": item[0], "level": item[1]})
        else:
            out.append({"at": item[0], "offset_min": item[1], "level": item[2]})
    return out


WEEKNIGHT = steps(("dusk", 100), ("23:00", 50), ("05:00", 100), ("dawn", 0))
WEEKEND = steps(("dusk", 100), ("02:00", 50), ("dawn", 0))
HOLIDAY = steps(("sunset", -10, 100), ("01:00", 70), ("dawn", 0))
CITY: dict[str, Any] = {
    "calendar": [
        {"days": ["2026-10-01..2026-10-07", date(2027, 1, 1)], "profile": "holiday"},
        {"days": ["sat", "sun"], "profile": "weekend"},
    ],
    "default": "weeknight",
    "profiles": {"weeknight": WEEKNIGHT, "weekend": WEEKEND, "holiday": HOLIDAY},
}


def lighting(program: dict[str, Any], **extra: Any) -> LightingConfig:
    return LightingConfig.model_validate(
        {
            "groups": {"road": ["lamp1", "lamp2"]},
            "programs": {"city": program},
            "assignments": {"road": "city", "lamp3": "city"},
            **extra,
        }
    )


def changes(plan: LightingPlan, start: datetime, end: datetime) -> list[tuple[datetime, int]]:
    return [(moment, level) for moment, level, _ in plan.timeline("lamp1", start, end)]


# ----- config checks, through the loader's own reporting -----


class Sections(BaseModel):
    """The two sections as the pole config will hold them."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    site: SiteConfig
    lighting: LightingConfig


GOOD = """\
site:
  latitude: 23.1291                                   # @lat
  longitude: 113.2644                                 # @lon
  timezone: Asia/Shanghai                             # @tz
lighting:
  default_level: 100
  lease_s: 300
  refresh_s: 60                                       # @refresh
  photocell:
    device: weather
    point: illuminance
    dark_below_lux: 20
    light_above_lux: 50                               # @light-above
  groups:
    main-road: [lamp1, lamp2]                         # @group
    side-walk: [lamp3]
  programs:
    city:
      calendar:
        - days: [2026-10-01..2026-10-07, 2027-01-01]  # @holidays
          profile: holiday
        - days: [sat, sun]                            # @weekend-days
          profile: weekend                            # @weekend-profile
      default: weeknight
      profiles:
        weeknight:
          - {at: dusk, level: 100}                    # @wn-on
          - {at: "23:00", level: 50}                  # @wn-dim
          - {at: "05:00", level: 100}                 # @wn-up
          - {at: dawn, level: 0}                      # @wn-off
        weekend:
          - {at: dusk, level: 100}
          - {at: "02:00", level: 50}
          - {at: dawn, level: 0}
        holiday:
          - {at: sunset, offset_min: -10, level: 100} # @hol-on
          - {at: "01:00", level: 70}
          - {at: dawn, level: 0}
  assignments:                                        # @assignments
    main-road: city
    side-walk: city                                   # @side-walk
"""


def line_of(text: str, marker: str) -> int:
    hits = [n for n, line in enumerate(text.splitlines(), start=1) if f"# {marker}" in line]
    assert len(hits) == 1, f"marker {marker} on lines {hits}"
    return hits[0]


def edited(marker: str, content: str) -> str:
    """GOOD with the marked line's content replaced (the marker stays for line numbers)."""
    lines = GOOD.splitlines()
    number = line_of(GOOD, marker) - 1
    indent = len(lines[number]) - len(lines[number].lstrip())
    lines[number] = f"{' ' * indent}{content}  # {marker}"
    return "\n".join(lines) + "\n"


def check(text: str, lamps: set[str] = LAMPS, *, with_site: bool = True) -> list[Problem]:
    """What ``smartpole config check`` will list for these sections."""
    doc = parse_yaml(text, Path("pole.yaml"))
    sections, problems = validate(doc, Sections)
    problems = doc.problems + problems
    if sections is not None:
        found = sections.lighting.cross_check(
            lamps,
            site=sections.site if with_site else None,
            devices=lamps | {"weather"},
            first_night=FIRST_NIGHT,
        )
        problems += [doc.problem(path, message) for path, message in found]
    return problems


def test_the_good_sections_pass_every_check() -> None:
    assert check(GOOD) == []


BAD = [
    # name, marker, new line content, key path, part of the message
    (
        "overlap",
        "@wn-up",
        '- {at: "23:00", level: 100}',
        "lighting.programs.city.profiles.weeknight[2]",
        "happens at the same time as step [1] 23:00: steps overlap",
    ),
    (
        "out of order",
        "@wn-up",
        '- {at: "22:00", level: 100}',
        "lighting.programs.city.profiles.weeknight[2]",
        "22:00 comes before step [1] 23:00",
    ),
    (
        "gap: starts with an off step",
        "@wn-on",
        "- {at: dusk, level: 0}",
        "lighting.programs.city.profiles.weeknight[0].level",
        "a profile starts with an 'on' step",
    ),
    (
        "missing off step",
        "@wn-off",
        "- {at: dawn, level: 30}",
        "lighting.programs.city.profiles.weeknight[3].level",
        "missing 'off' step",
    ),
    (
        "unknown weekday",
        "@weekend-days",
        "- days: [sat, funday]",
        "lighting.programs.city.calendar[1].days[1]",
        "unknown day 'funday'",
    ),
    (
        "date range backwards",
        "@holidays",
        "- days: [2026-10-07..2026-10-01]",
        "lighting.programs.city.calendar[0].days[0]",
        "date range '2026-10-07..2026-10-01' ends before it starts",
    ),
    (
        "date range through a day that does not exist",
        "@holidays",
        "- days: [2026-02-27..2026-02-30]",
        "lighting.programs.city.calendar[0].days[0]",
        "no such date '2026-02-30'",
    ),
    (
        "offset too large",
        "@hol-on",
        "- {at: sunset, offset_min: -800, level: 100}",
        "lighting.programs.city.profiles.holiday[0].offset_min",
        "greater than or equal to -720",
    ),
    (
        "level above 100",
        "@wn-dim",
        '- {at: "23:00", level: 120}',
        "lighting.programs.city.profiles.weeknight[1].level",
        "less than or equal to 100",
    ),
    (
        "time not quoted",
        "@wn-dim",
        "- {at: 23:00, level: 50}",
        "lighting.programs.city.profiles.weeknight[1].at",
        'write the time in quotes: at: "23:00"',
    ),
    (
        "latitude 95",
        "@lat",
        "latitude: 95",
        "site.latitude",
        "less than or equal to 90",
    ),
    (
        "unknown time zone",
        "@tz",
        "timezone: Mars/Olympus",
        "site.timezone",
        "unknown time zone 'Mars/Olympus'",
    ),
    (
        "group naming an unknown lamp",
        "@group",
        "main-road: [lamp1, lamp2, lamp9]",
        "lighting.groups.main-road[2]",
        "no lamp named 'lamp9'",
    ),
    (
        "assignment to an unknown program",
        "@side-walk",
        "side-walk: town",
        "lighting.assignments.side-walk",
        "no program 'town' (city)",
    ),
    (
        "calendar rule naming an unknown profile",
        "@weekend-profile",
        "profile: weekends",
        "lighting.programs.city.calendar[1].profile",
        "no profile 'weekends'",
    ),
    (
        "refresh not within half the lease",
        "@refresh",
        "refresh_s: 150",
        "lighting.refresh_s",
        "refresh_s (150) must be less than half of lease_s (300)",
    ),
    (
        "photocell without hysteresis",
        "@light-above",
        "light_above_lux: 20",
        "lighting.photocell.light_above_lux",
        "must be above dark_below_lux (20)",
    ),
    (
        "misspelt key",
        "@hol-on",
        "- {at: sunset, offset: -10, level: 100}",
        "lighting.programs.city.profiles.holiday[0].offset",
        "unknown key; did you mean 'offset_min'?",
    ),
    (
        # Guangzhou's summer dusk is near 19:40: four hours later is past the 23:00 step.
        "an offset moving an astro step past the next step",
        "@wn-on",
        "- {at: dusk, offset_min: 240, level: 100}",
        "lighting.programs.city.profiles.weeknight[0].offset_min",
        "the offset moves dusk+240",
    ),
]


@pytest.mark.parametrize(
    ("marker", "content", "key", "message"),
    [case[1:] for case in BAD],
    ids=[case[0] for case in BAD],
)
def test_each_bad_input_is_reported_at_its_key(
    marker: str, content: str, key: str, message: str
) -> None:
    text = edited(marker, content)
    problems = check(text)
    assert [p.key for p in problems] == [key], problems
    assert message in problems[0].message
    assert problems[0].line == line_of(text, marker)
    assert str(problems[0]).startswith(f"pole.yaml:{line_of(text, marker)}: {key}: ")


def test_a_lamp_without_a_program_is_reported() -> None:
    problems = check(GOOD, LAMPS | {"lamp4"})
    assert [(p.key, p.line) for p in problems] == [
        ("lighting.assignments", line_of(GOOD, "@assignments"))
    ]
    assert "lamp 'lamp4' has no program" in problems[0].message


def test_an_assignment_naming_nothing_leaves_its_lamps_unassigned() -> None:
    text = edited("@side-walk", "sidewalk: city")
    problems = check(text)
    assert sorted((p.key, p.message) for p in problems) == [
        (
            "lighting.assignments",
            "lamp 'lamp3' has no program: assign it or a group that holds it (it would burn "
            "at 100 % day and night)",
        ),
        ("lighting.assignments.sidewalk", "no group or lamp named 'sidewalk'"),
    ]


def test_a_lamp_with_two_assignments_is_reported() -> None:
    text = edited("@side-walk", "lamp1: city")  # lamp1 twice, lamp3 in none
    problems = check(text)
    assert sorted((p.key, p.message[:40]) for p in problems) == [
        ("lighting.assignments", "lamp 'lamp3' has no program: assign it o"),
        ("lighting.assignments.lamp1", "lamp 'lamp1' already gets its program fr"),
    ]
    double = next(p for p in problems if p.key == "lighting.assignments.lamp1")
    assert "lamp 'lamp1' already gets its program from 'main-road'" in double.message


def test_a_profile_valid_in_guangzhou_is_out_of_order_in_berlin() -> None:
    # Berlin's summer dawn comes before 05:00, so "05:00 up to 100 %" lands after "off at dawn".
    text = GOOD.replace("latitude: 23.1291", "latitude: 52.52")
    text = text.replace("longitude: 113.2644", "longitude: 13.405")
    text = text.replace("timezone: Asia/Shanghai", "timezone: Europe/Berlin")
    problems = check(text)
    assert [p.key for p in problems] == ["lighting.programs.city.profiles.weeknight[3]"]
    message = problems[0].message
    assert message.startswith("dawn (")
    assert "comes before step [2] 05:00 (05:00 CEST)" in message
    assert "nights checked from 2026-01-01" in message
    assert check(text, with_site=False) == []  # only the real sun shows it


def test_structural_problems_need_no_site() -> None:
    text = edited("@wn-up", '- {at: "22:00", level: 100}')
    assert [p.key for p in check(text, with_site=False)] == [
        "lighting.programs.city.profiles.weeknight[2]"
    ]


def test_a_plan_refuses_a_section_with_problems() -> None:
    bad = lighting({**CITY, "default": "nope"})
    with pytest.raises(ValueError, match=r"programs\.city\.default: no profile 'nope'"):
        LightingPlan(GUANGZHOU, bad)


def test_days_accept_weekday_ranges_and_full_names() -> None:
    program = {
        **CITY,
        "calendar": [{"days": ["Fri..Mon", "wednesday"], "profile": "weekend"}],
    }
    plan = LightingPlan(GUANGZHOU, lighting(program))
    for day, expected in [(9, "weekend"), (10, "weekend"), (11, "weekend"), (12, "weekend")]:
        reason = plan.level_at("lamp1", at(SHANGHAI, 2026, 10, day, 21, 0)).reason
        assert f"city/{expected} for the night" in reason
    assert "city/weeknight" in plan.level_at("lamp1", at(SHANGHAI, 2026, 10, 13, 21, 0)).reason
    assert "city/weekend" in plan.level_at("lamp1", at(SHANGHAI, 2026, 10, 14, 21, 0)).reason


def test_a_step_needs_an_anchor_or_a_wall_time() -> None:
    with pytest.raises(ValidationError, match="expected dusk, dawn, sunset, sunrise"):
        LightingConfig.model_validate(
            {"programs": {"p": {"default": "x", "profiles": {"x": steps(("noon", 1))}}}}
        )


# ----- the evaluator: real nights -----


def test_a_weekday_and_a_holiday_night_in_guangzhou() -> None:
    plan = LightingPlan(GUANGZHOU, lighting(CITY))
    sep30, oct1, oct2 = (
        sun(GUANGZHOU, date(2026, 9, 30)),
        sun(GUANGZHOU, date(2026, 10, 1)),
        sun(GUANGZHOU, date(2026, 10, 2)),
    )
    start, end = at(SHANGHAI, 2026, 9, 30, 12, 0), at(SHANGHAI, 2026, 10, 2, 12, 0)
    assert changes(plan, start, end) == [
        # Wednesday 30 September: an ordinary weeknight.
        (present(sep30.dusk), 100),
        (at(SHANGHAI, 2026, 9, 30, 23, 0), 50),
        (at(SHANGHAI, 2026, 10, 1, 5, 0), 100),
        (present(oct1.dawn), 0),
        # Thursday 1 October, National Day: the holiday profile.
        (present(oct1.sunset) - timedelta(minutes=10), 100),
        (at(SHANGHAI, 2026, 10, 2, 1, 0), 70),
        (present(oct2.dawn), 0),
    ]
    timeline = plan.timeline("lamp1", start, end)
    assert "city/weeknight for the night of Wed 2026-09-30 (default)" in timeline[1][2]
    assert "city/holiday for the night of Thu 2026-10-01 (calendar[0]" in timeline[4][2]
    assert all(moment.tzinfo is UTC for moment, _, _ in timeline)
    # The sun itself, against the almanac (timeanddate.com, Guangzhou, 1 October 2026).
    almanac = [(oct1.sunset, 18, 15), (sep30.dusk, 18, 37), (oct1.dawn, 5, 56)]
    for event, hour, minute in almanac:
        expected = at(SHANGHAI, 2026, 10, 1, hour, minute).time()
        local = present(event).astimezone(SHANGHAI)
        difference = datetime.combine(date.min, local.time()) - datetime.combine(date.min, expected)
        assert abs(difference) <= timedelta(minutes=3), (event, expected)


def test_a_night_after_midnight_follows_the_calendar_of_its_evening() -> None:
    plan = LightingPlan(GUANGZHOU, lighting(CITY))

    def level(month: int, day: int, hour: int, minute: int) -> int:
        return plan.level_at("lamp1", at(SHANGHAI, 2026, month, day, hour, minute)).level

    # 00:30 on Thursday 1 October (a holiday) is still Wednesday's weeknight: dimmed at 23:00.
    assert level(10, 1, 0, 30) == 50
    # 00:30 on Thursday 8 October (a working day) is still the holiday of the 7th: 100 until 01:00.
    assert level(10, 8, 0, 30) == 100
    assert level(10, 8, 1, 30) == 70
    # Weekends: Friday night is a weeknight, Saturday and Sunday nights are weekend nights.
    assert level(10, 10, 0, 30) == 50  # Friday's night
    assert level(10, 11, 0, 30) == 100  # Saturday's night: weekend dims at 02:00
    assert level(10, 12, 0, 30) == 100  # Sunday's night
    assert level(10, 12, 2, 30) == 50
    assert level(10, 13, 0, 30) == 50  # Monday's night
    decision = plan.level_at("lamp1", at(SHANGHAI, 2026, 10, 12, 0, 30))
    assert "night of Sun 2026-10-11 (calendar[1] sat, sun)" in decision.reason
    assert plan.night_of(at(SHANGHAI, 2026, 10, 12, 11, 59)) == date(2026, 10, 11)
    assert plan.night_of(at(SHANGHAI, 2026, 10, 12, 12, 0)) == date(2026, 10, 12)


def test_decisions_say_what_comes_next() -> None:
    plan = LightingPlan(GUANGZHOU, lighting(CITY))
    decision = plan.level_at("lamp1", at(SHANGHAI, 2026, 9, 30, 23, 30))
    assert decision == Decision(
        50,
        "city/weeknight for the night of Wed 2026-09-30 (default): step [1] 23:00 at 23:00 CST "
        "-> 50 %",
        "program",
        at(SHANGHAI, 2026, 10, 1, 5, 0),
    )
    noon = plan.level_at("lamp1", at(SHANGHAI, 2026, 10, 1, 12, 0))
    assert (noon.level, noon.next_change) == (
        0,
        present(sun(GUANGZHOU, date(2026, 10, 1)).sunset) - timedelta(minutes=10),
    )


def test_a_lamp_without_a_program_gets_the_default_light_state() -> None:
    plan = LightingPlan(GUANGZHOU, lighting(CITY, default_level=80))
    decision = plan.level_at("lamp9", at(SHANGHAI, 2026, 10, 1, 12, 0))
    assert decision == Decision(
        80, "lamp 'lamp9' has no lighting program: default light state 80 %", "default", None
    )
    assert plan.timeline("lamp9", at(SHANGHAI, 2026, 10, 1), at(SHANGHAI, 2026, 10, 3)) == []


def test_naive_times_are_refused() -> None:
    plan = LightingPlan(GUANGZHOU, lighting(CITY))
    with pytest.raises(ValueError, match="timezone-aware"):
        plan.level_at("lamp1", datetime(2026, 10, 1, 12, 0))


BERLIN_NIGHT = steps(("dusk", 100), ("23:00", 50), ("02:30", 30), ("dawn", 0))


def test_berlin_profile_keeps_its_order_all_year() -> None:
    config = lighting({"default": "night", "profiles": {"night": BERLIN_NIGHT}})
    assert config.cross_check(LAMPS, site=BERLIN, first_night=FIRST_NIGHT) == []


def test_the_spring_forward_night_in_berlin() -> None:
    # 29 March 2026: 02:00 CET jumps to 03:00 CEST. 02:30 does not exist: it moves forward
    # by the gap to 03:30 CEST (01:30 UTC).
    plan = LightingPlan(BERLIN, lighting({"default": "night", "profiles": {"night": BERLIN_NIGHT}}))
    mar28, mar29, mar30 = (sun(BERLIN, date(2026, 3, day)) for day in (28, 29, 30))
    utc = ZoneInfo("UTC")
    start, end = at(BERLIN_TZ, 2026, 3, 28, 12, 0), at(BERLIN_TZ, 2026, 3, 30, 12, 0)
    assert end.astimezone(UTC) - start.astimezone(UTC) == timedelta(hours=47)
    assert changes(plan, start, end) == [
        (present(mar28.dusk), 100),
        (at(utc, 2026, 3, 28, 22, 0), 50),  # 23:00 CET
        (at(utc, 2026, 3, 29, 1, 30), 30),  # 02:30 -> 03:30 CEST
        (present(mar29.dawn), 0),
        (present(mar29.dusk), 100),
        (at(utc, 2026, 3, 29, 21, 0), 50),  # 23:00 CEST
        (at(utc, 2026, 3, 30, 0, 30), 30),  # 02:30 CEST
        (present(mar30.dawn), 0),
    ]
    assert present(mar29.dawn).utcoffset() == timedelta(hours=2)
    assert plan.level_at("lamp1", at(utc, 2026, 3, 29, 0, 59, 59)).level == 50  # 01:59:59 CET
    assert plan.level_at("lamp1", at(utc, 2026, 3, 29, 1, 0)).level == 50  # 03:00 CEST
    decision = plan.level_at("lamp1", at(utc, 2026, 3, 29, 1, 30))
    assert (decision.level, decision.next_change) == (30, mar29.dawn)
    assert "step [2] 02:30 at 03:30 CEST -> 30 %" in decision.reason
    assert plan.night_of(at(BERLIN_TZ, 2026, 3, 29, 11, 59)) == date(2026, 3, 28)


def test_the_fall_back_night_in_berlin() -> None:
    # 25 October 2026: 03:00 CEST falls back to 02:00 CET. 02:30 happens twice: the first
    # time (CEST, 00:30 UTC) counts.
    plan = LightingPlan(BERLIN, lighting({"default": "night", "profiles": {"night": BERLIN_NIGHT}}))
    oct24, oct25, oct26 = (sun(BERLIN, date(2026, 10, day)) for day in (24, 25, 26))
    utc = ZoneInfo("UTC")
    start, end = at(BERLIN_TZ, 2026, 10, 24, 12, 0), at(BERLIN_TZ, 2026, 10, 26, 12, 0)
    assert end.astimezone(UTC) - start.astimezone(UTC) == timedelta(hours=49)
    assert changes(plan, start, end) == [
        (present(oct24.dusk), 100),
        (at(utc, 2026, 10, 24, 21, 0), 50),  # 23:00 CEST
        (at(utc, 2026, 10, 25, 0, 30), 30),  # 02:30 CEST, the first 02:30
        (present(oct25.dawn), 0),
        (present(oct25.dusk), 100),
        (at(utc, 2026, 10, 25, 22, 0), 50),  # 23:00 CET
        (at(utc, 2026, 10, 26, 1, 30), 30),  # 02:30 CET
        (present(oct26.dawn), 0),
    ]
    # 02:15 the first time (CEST) is before the step, 02:15 the second time (CET) after it.
    assert plan.level_at("lamp1", at(BERLIN_TZ, 2026, 10, 25, 2, 15, fold=0)).level == 50
    assert plan.level_at("lamp1", at(BERLIN_TZ, 2026, 10, 25, 2, 15, fold=1)).level == 30
    assert present(oct25.dawn).utcoffset() == timedelta(hours=1)


TROMSO_PROGRAMS = {
    "by-sunset": {
        "default": "night",
        "profiles": {
            "night": steps(("sunset", 100), ("23:00", 50), ("05:00", 100), ("sunrise", 0))
        },
    },
    "by-twilight": {"default": "night", "profiles": {"night": steps(("dusk", 100), ("dawn", 0))}},
}


def tromso_plan() -> LightingPlan:
    config = LightingConfig.model_validate(
        {
            "programs": TROMSO_PROGRAMS,
            "assignments": {"lamp1": "by-sunset", "lamp2": "by-twilight"},
        }
    )
    return LightingPlan(TROMSO, config)


def test_polar_night_at_tromso_keeps_the_lamps_on_at_the_night_level() -> None:
    plan = tromso_plan()
    dec21 = sun(TROMSO, date(2026, 12, 21))
    assert (dec21.sunrise, dec21.sunset, dec21.state) == (None, None, "polar_night")
    start, end = at(OSLO, 2026, 12, 20, 12, 0), at(OSLO, 2026, 12, 23, 12, 0)
    # No sunset to switch on and no sunrise to switch off: on day and night, and the
    # wall-clock dimming steps still dim at night.
    assert changes(plan, start, end) == [
        (at(OSLO, 2026, 12, 20, 23, 0), 50),
        (at(OSLO, 2026, 12, 21, 5, 0), 100),
        (at(OSLO, 2026, 12, 21, 23, 0), 50),
        (at(OSLO, 2026, 12, 22, 5, 0), 100),
        (at(OSLO, 2026, 12, 22, 23, 0), 50),
        (at(OSLO, 2026, 12, 23, 5, 0), 100),
    ]
    noon = plan.level_at("lamp1", at(OSLO, 2026, 12, 21, 12, 30))
    assert noon.level == 100
    assert "no sunset, the sun stays below -0.833° (polar night)" in noon.reason
    assert noon.next_change == at(OSLO, 2026, 12, 21, 23, 0)
    # Civil twilight still comes around noon: the twilight program switches normally.
    dec22, dec23 = sun(TROMSO, date(2026, 12, 22)), sun(TROMSO, date(2026, 12, 23))
    assert [(m, lvl) for m, lvl, _ in plan.timeline("lamp2", start + timedelta(days=1), end)] == [
        (present(dec21.dusk), 100),
        (present(dec22.dawn), 0),
        (present(dec22.dusk), 100),
        (present(dec23.dawn), 0),
    ]


def test_the_first_morning_without_sunrise_does_not_switch_off() -> None:
    plan = tromso_plan()
    day = date(2026, 11, 15)
    while sun(TROMSO, day).sunrise is not None:
        day += timedelta(days=1)
    # The evening before still had a sunset; the morning after it has no sunrise.
    for hour in (6, 9, 11, 12, 15):
        assert plan.level_at("lamp1", at(OSLO, day.year, day.month, day.day, hour, 0)).level > 0


def test_polar_day_at_tromso_keeps_the_lamps_off() -> None:
    plan = tromso_plan()
    jun21 = sun(TROMSO, date(2026, 6, 21))
    assert (jun21.sunset, jun21.dusk, jun21.state) == (None, None, "polar_day")
    start, end = at(OSLO, 2026, 6, 14, 12, 0), at(OSLO, 2026, 6, 28, 12, 0)
    for lamp in ("lamp1", "lamp2"):
        assert plan.timeline(lamp, start, end) == []
        decision = plan.level_at(lamp, at(OSLO, 2026, 6, 21, 0, 30))
        assert decision.level == 0
        assert "(polar day): off" in decision.reason
        assert present(decision.next_change) > at(OSLO, 2026, 7, 1)


def test_at_tromso_the_twilight_program_is_valid_all_year_and_the_sunset_one_is_not() -> None:
    config = LightingConfig.model_validate(
        {"programs": TROMSO_PROGRAMS, "assignments": {"lamp1": "by-twilight", "lamp2": "by-sunset"}}
    )
    problems = config.cross_check({"lamp1", "lamp2"}, site=TROMSO, first_night=FIRST_NIGHT)
    # In spring the sun sets after 23:00 and rises before 05:00: the wall-clock steps
    # land outside the sunset..sunrise night. Polar night and day themselves are no error.
    assert sorted(path for path, _ in problems) == [
        ("lighting", "programs", "by-sunset", "profiles", "night", 1),
        ("lighting", "programs", "by-sunset", "profiles", "night", 3),
    ]


def test_lit_in_the_dark_and_off_in_daylight_all_year_in_guangzhou() -> None:
    plan = LightingPlan(GUANGZHOU, lighting(CITY))
    moment = at(SHANGHAI, 2026, 1, 1, 0, 7)
    while moment < at(SHANGHAI, 2027, 1, 1):
        elevation = solar_elevation(moment, GUANGZHOU.latitude, GUANGZHOU.longitude)
        level = plan.level_at("lamp1", moment).level
        if elevation < -6.2:
            assert level > 0, moment
        if elevation > 3:  # the holiday profile switches on 10 minutes before sunset
            assert level == 0, moment
        moment += timedelta(minutes=37)


# ----- properties -----

SITES = [
    GUANGZHOU,
    BERLIN,
    TROMSO,
    SiteConfig(latitude=39.47, longitude=75.99, timezone="Asia/Shanghai"),  # Kashgar
    SiteConfig(latitude=-33.87, longitude=151.21, timezone="Australia/Sydney"),
    SiteConfig(latitude=78.22, longitude=15.65, timezone="Arctic/Longyearbyen"),
    SiteConfig(latitude=-77.85, longitude=166.67, timezone="Antarctica/McMurdo"),
]
ZONES = ["UTC", "Asia/Shanghai", "Europe/Berlin", "America/New_York", "Pacific/Apia"]


@st.composite
def sites(draw: st.DrawFn) -> SiteConfig:
    if draw(st.booleans()):
        return draw(st.sampled_from(SITES))
    return SiteConfig(
        latitude=draw(st.floats(-85, 85)),
        longitude=draw(st.floats(-180, 180)),
        timezone=draw(st.sampled_from(ZONES)),
    )


@st.composite
def profiles(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Structurally valid: an evening 'on', wall-clock steps between, a morning 'off'."""

    def clock(minute: int) -> str:
        return f"{minute // 60 % 24:02d}:{minute % 60:02d}"

    out: list[dict[str, Any]] = []
    if draw(st.booleans()):
        anchor = draw(st.sampled_from(["sunset", "dusk"]))
        out.append({"at": anchor, "offset_min": draw(st.integers(-90, 90))})
    else:
        out.append({"at": clock(draw(st.integers(16 * 60, 21 * 60 - 1)))})
    middle = draw(st.lists(st.integers(21 * 60, 29 * 60 - 1), unique=True, max_size=4))
    out += [{"at": clock(minute)} for minute in sorted(middle)]
    if draw(st.booleans()):
        anchor = draw(st.sampled_from(["dawn", "sunrise"]))
        out.append({"at": anchor, "offset_min": draw(st.integers(-90, 90))})
    else:
        out.append({"at": clock(draw(st.integers(5 * 60, 9 * 60)))})
    for step in out[:-1]:
        step["level"] = draw(st.integers(0, 100))
    out[0]["level"] = draw(st.integers(1, 100))
    out[-1]["level"] = 0
    return out


@st.composite
def programs(draw: st.DrawFn) -> dict[str, Any]:
    names = draw(st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=3, unique=True))
    day_specs = st.one_of(
        st.sampled_from(["mon", "tue", "wed", "thu", "fri", "sat", "sun", "fri..mon"]),
        st.dates(date(2025, 1, 1), date(2028, 12, 31)).flatmap(
            lambda first: st.integers(0, 20).map(
                lambda length: f"{first}..{first + timedelta(days=length)}"
            )
        ),
    )
    calendar = [
        {
            "days": draw(st.lists(day_specs, min_size=1, max_size=3)),
            "profile": draw(st.sampled_from(names)),
        }
        for _ in range(draw(st.integers(0, 3)))
    ]
    return {
        "calendar": calendar,
        "default": names[0],
        "profiles": {name: draw(profiles()) for name in names},
    }


instants = st.datetimes(datetime(2025, 1, 1), datetime(2028, 12, 31)).map(
    lambda moment: moment.replace(tzinfo=UTC)
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(site=sites(), program=programs(), moment=instants)
def test_levels_and_timelines_agree(
    site: SiteConfig, program: dict[str, Any], moment: datetime
) -> None:
    config = lighting(program, default_level=77)
    assert config.problems() == []
    plan = LightingPlan(site, config)
    programmed = {step["level"] for steps_ in program["profiles"].values() for step in steps_}

    decision = plan.level_at("lamp1", moment)
    assert decision.level in programmed
    assert decision.source == "program"
    assert plan.level_at("unassigned", moment).level == 77

    start, end = moment - timedelta(hours=40), moment + timedelta(hours=40)
    timeline = plan.timeline("lamp1", start, end)
    previous = plan.level_at("lamp1", start - timedelta(microseconds=1)).level
    for (when, level, reason), following in zip(
        timeline, [*timeline[1:], (end, None, "")], strict=False
    ):
        assert start <= when < end
        assert level != previous
        assert plan.level_at("lamp1", when - timedelta(microseconds=1)).level == previous
        now = plan.level_at("lamp1", when)
        assert (now.level, now.reason) == (level, reason)
        assert now.next_change is None or now.next_change > when
        if following[1] is not None:
            assert now.next_change == following[0]
            middle = when + (following[0] - when) / 2
            assert plan.level_at("lamp1", middle).level == level
        previous = level
    assert plan.level_at("lamp1", end - timedelta(microseconds=1)).level == previous
    after = [when for when, _, _ in timeline if when > moment]
    if after:
        assert decision.next_change == after[0]
    elif decision.next_change is not None:
        assert decision.next_change >= end


def test_returned_instants_are_utc_even_for_wall_times() -> None:
    plan = LightingPlan(GUANGZHOU, lighting(CITY))
    decision = plan.level_at("lamp1", at(SHANGHAI, 2026, 9, 30, 22, 0))
    assert present(decision.next_change).tzinfo is UTC
    assert present(decision.next_change).time() == time(15, 0)
