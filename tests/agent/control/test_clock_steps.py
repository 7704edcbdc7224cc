"""A wall clock that steps by days: no false alarm, no stretched override, reported upstream.

The probe campaign's findings: a jump of two days forward raised a false
``leakage_sensor_lost``; a step back of one day made a 60 s override last about a day. The
real AlarmManager and LightingController run on an injected clock that can step the wall
clock alone; nothing waits.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from helpers.clock import ManualClock
from smartpole.agent.config.alarms import AlarmDefinition
from smartpole.agent.control.alarms import AlarmManager, EventType
from smartpole.agent.control.clock_watch import ClockStepHandler
from smartpole.agent.control.lighting import LightingController
from smartpole.agent.control.program import Decision
from smartpole.agent.core.clock import ClockStepWatch
from smartpole.agent.core.outbox import Outbox

T0 = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC
DAY = 86400.0

LEAKAGE = AlarmDefinition(
    kind="leakage",
    severity="critical",
    raise_above=30.0,
    clear_below=10.0,
    debounce_s=2.0,
    stale_after_s=60.0,
)


class Clocks:
    """The ManualClock in the shape every clock user here reads (also the older ``now()``)."""

    def __init__(self, manual: ManualClock) -> None:
        self.manual = manual

    def __call__(self) -> float:
        return self.manual.now

    def time(self) -> float:
        return self.manual.now

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.manual.now, UTC)

    def monotonic(self) -> float:
        return self.manual.monotonic()


@pytest.fixture
def manual() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
def outbox(tmp_path: Path, manual: ManualClock) -> Iterator[Outbox]:
    with Outbox(tmp_path, clock=manual) as box:
        yield box


def test_a_two_day_jump_raises_no_false_sensor_lost(
    tmp_path: Path, manual: ManualClock, outbox: Outbox
) -> None:
    manager = AlarmManager([LEAKAGE], tmp_path / "alarms.json", outbox, Clocks(manual))  # type: ignore[arg-type]
    manager.watch("cabinet", "leakage")
    events = []
    for second in range(240):
        if second == 30:
            manual.step(2 * DAY)  # a bad NTP answer
        if second == 120:
            manual.step(-2 * DAY)  # and back
        if second == 150:
            manual.step(-DAY)  # an RTC reset, a day back
        events += manager.tick()  # the once-a-second check may come first after a step
        events += manager.observe("cabinet", "leakage", 1.0, "good", manual.now)
        manual.advance(1)
    assert events == []
    assert outbox.pending("alarms") == []
    # The timer still works: silence for stale_after_s of real time raises it, stamped with
    # the wall clock.
    manual.advance(58)  # the last reading was 59 s ago now
    assert manager.tick() == []
    manual.advance(1)
    (lost,) = manager.tick()
    assert (lost.type, lost.kind, lost.at) == (EventType.RAISED, "leakage_sensor_lost", manual.now)


def test_a_step_neither_shortens_nor_stretches_a_debounce(
    tmp_path: Path, manual: ManualClock
) -> None:
    manager = AlarmManager([LEAKAGE], tmp_path / "alarms.json", None, Clocks(manual))  # type: ignore[arg-type]
    assert manager.observe("cabinet", "leakage", 45.0, "good", manual.now) == []
    manual.advance(1)
    manual.step(2 * DAY)  # one second of real time, two days on the wall
    assert manager.observe("cabinet", "leakage", 45.0, "good", manual.now) == []
    manual.advance(1)
    manual.step(-3 * DAY)
    (raised,) = manager.observe("cabinet", "leakage", 45.0, "good", manual.now)
    assert raised.type is EventType.RAISED  # after exactly debounce_s of real time


class Lamp:
    def __init__(self) -> None:
        self.levels: list[int] = []

    async def commission(self, lamp: str, *, fallback_level: int, lease_s: int) -> None:
        pass

    async def push(self, lamp: str, level: int, *, changed: bool) -> None:
        self.levels.append(level)


class NightProgram:
    """On (80 %) from 18:00 to 06:00 UTC, off otherwise: a calendar decision."""

    def level_at(self, lamp: str, at: datetime) -> Decision:
        night = at.hour >= 18 or at.hour < 6
        return Decision(80 if night else 0, "night" if night else "day", "program", None)


def controller(state: Path, clock: Clocks, lamp: Lamp) -> LightingController:
    return LightingController(["lamp1"], NightProgram(), lamp, state_dir=state, clock=clock)  # type: ignore[arg-type]


def test_a_step_back_of_a_day_does_not_stretch_a_60_s_override(
    tmp_path: Path, manual: ManualClock
) -> None:
    lamp, clock = Lamp(), Clocks(manual)
    lights = controller(tmp_path, clock, lamp)

    async def run() -> None:
        lights.set_override("lamp1", 30, 60, "test:operator")
        await lights.tick()
        manual.step(-DAY)
        manual.advance(59)
        await lights.tick()
        assert lights.target("lamp1").source == "override"
        manual.advance(1)
        await lights.tick()

    asyncio.run(run())
    assert lamp.levels[-1] == 80  # the override ended after 60 s, back to the program
    assert lights.target("lamp1").source == "program"


def test_an_override_read_back_after_a_step_back_lasts_at_most_its_duration(
    tmp_path: Path, manual: ManualClock
) -> None:
    lamp = Lamp()
    controller(tmp_path, Clocks(manual), lamp).set_override("lamp1", 30, 60, "test:operator")
    manual.advance(10)
    rebooted = ManualClock(manual.now - DAY, mono=3.0)  # restarted with the clock a day back
    again = controller(tmp_path, Clocks(rebooted), lamp)
    assert again.target("lamp1").source == "override"
    rebooted.advance(60)
    assert again.target("lamp1").source == "program"


def test_a_step_is_reported_upstream_and_the_program_follows_at_once(
    tmp_path: Path, manual: ManualClock, outbox: Outbox
) -> None:
    lamp, clock = Lamp(), Clocks(manual)
    lights = controller(tmp_path, clock, lamp)
    handler = ClockStepHandler(ClockStepWatch(clock, threshold_s=60), outbox, lights)  # type: ignore[arg-type]

    async def run() -> None:
        await lights.tick()  # 22:13 UTC: night
        manual.advance(1)
        manual.step(30)  # a small correction is followed silently
        assert await handler.check() is None
        manual.step(12 * 3600)  # 10:13 the next day: the lamp goes off now, not next tick
        step = await handler.check()
        assert step is not None
        assert step.step_s == pytest.approx(12 * 3600)

    asyncio.run(run())
    assert lamp.levels == [80, 0]
    (record,) = outbox.pending("events")
    assert record.payload["source"] == "clock"
    assert record.payload["kind"] == "wall_clock_step"
    assert record.payload["step_s"] == pytest.approx(12 * 3600)
    assert handler.watch.to_json()["steps"] == 1
