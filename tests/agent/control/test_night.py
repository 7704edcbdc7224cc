"""A whole simulated night of the demo pole's lamp, with time injected, not waited for.

The lighting controller runs on a fake clock minute by minute from afternoon to morning,
through an override, an agent restart in the middle of it, and an NTP step of the clock;
the test checks the exact sequence of levels the lamp controller receives, that the
leases are refreshed, and that no minute of the night is dark.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from helpers.paths import REPO
from smartpole.agent.buses.registry import load_config
from smartpole.agent.control.lighting import LightingController
from smartpole.agent.control.program import LightingPlan

ZONE = ZoneInfo("Asia/Shanghai")
TICK = timedelta(minutes=1)


class FakeClock:
    def __init__(self, start: datetime) -> None:
        self.wall = start
        self.mono = 1000.0

    def time(self) -> float:
        return self.wall.timestamp()

    def monotonic(self) -> float:
        return self.mono

    def advance(self, step: timedelta) -> None:
        self.wall += step
        self.mono += step.total_seconds()


class RecordingLamp:
    """The lamp controller's side: every write it receives, and the level it shows."""

    def __init__(self) -> None:
        self.level: int | None = None
        self.changes: list[tuple[datetime, int]] = []
        self.writes: list[tuple[float, int]] = []
        self.commissioned: list[tuple[int, int]] = []
        self.clock: FakeClock | None = None

    async def commission(self, lamp: str, *, fallback_level: int, lease_s: int) -> None:
        self.commissioned.append((fallback_level, lease_s))

    async def push(self, lamp: str, level: int, *, changed: bool) -> None:
        assert self.clock is not None
        self.writes.append((self.clock.mono, level))
        if level != self.level:
            self.changes.append((self.clock.wall.astimezone(ZONE), level))
            self.level = level


def _controller(
    plan: LightingPlan, lamp: RecordingLamp, clock: FakeClock, state: Path
) -> LightingController:
    return LightingController(
        ["lamp1"], plan, lamp, state_dir=state, clock=clock, lease_s=300, refresh_s=60
    )


def _local(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 11, day, hour, minute, tzinfo=ZONE)


def _on_tick_grid(at: datetime, start: datetime) -> datetime:
    """The first whole minute from ``start`` at or after ``at``: when a tick sees it."""
    minutes = -(-(at - start) // TICK)
    return start + minutes * TICK


def test_a_night_with_an_override_a_restart_and_a_clock_step(tmp_path: Path) -> None:
    config = load_config(REPO / "configs" / "poles" / "demo.yaml")
    assert config.pole.site is not None
    assert config.pole.lighting is not None
    plan = LightingPlan(config.pole.site, config.pole.lighting)
    start = _local(18, 16)  # Wednesday afternoon; an ordinary weeknight follows
    clock = FakeClock(start.astimezone(UTC))
    lamp = RecordingLamp()
    lamp.clock = clock
    controller = _controller(plan, lamp, clock, tmp_path)

    # What the program alone says for this night, from the same sun computation.
    program = plan.timeline("lamp1", start, _local(19, 9))
    dusk, at_23, at_05, dawn = (change[0].astimezone(ZONE) for change in program)
    assert [change[1] for change in program] == [100, 50, 100, 0]

    async def night() -> None:
        nonlocal controller
        while clock.wall < _local(19, 9):
            local = clock.wall.astimezone(ZONE)
            if local == _local(18, 21):
                controller.set_override("lamp1", 30, 3600, "test:operator")
            if local == _local(18, 21, 30):
                # The agent restarts: a new controller on the same state directory.
                controller = _controller(plan, lamp, clock, tmp_path)
            if local == _local(19, 4, 30):
                clock.wall += timedelta(hours=1)  # NTP steps the clock an hour forward
            await controller.tick()
            clock.advance(TICK)

    asyncio.run(night())

    jump_seen = _local(19, 5, 30)  # the first tick after the step reads 05:30
    assert lamp.changes == [
        (start, 0),
        (_on_tick_grid(dusk, start), 100),
        (_local(18, 21), 30),  # the override...
        (_local(18, 22), 100),  # ...ends by itself after an hour, restart or not
        (_on_tick_grid(at_23, start), 50),
        (jump_seen, 100),  # 05:00 was stepped over: the program's level at 05:30 at once
        (_on_tick_grid(dawn, start), 0),
    ]
    assert at_05 < jump_seen < dawn  # the step jumped over 05:00 but not over dawn
    # Leases: the level is rewritten at least every refresh period, all night long.
    gaps = [b[0] - a[0] for a, b in zip(lamp.writes, lamp.writes[1:], strict=False)]
    assert max(gaps) <= 60
    # The fallback was commissioned road-safe, and again after the restart.
    assert lamp.commissioned == [(100, 300), (100, 300)]


def test_no_minute_between_dusk_and_dawn_is_dark_even_when_the_clock_steps_back(
    tmp_path: Path,
) -> None:
    config = load_config(REPO / "configs" / "poles" / "demo.yaml")
    assert config.pole.site is not None
    assert config.pole.lighting is not None
    plan = LightingPlan(config.pole.site, config.pole.lighting)
    start = _local(18, 16)
    clock = FakeClock(start.astimezone(UTC))
    lamp = RecordingLamp()
    lamp.clock = clock
    controller = _controller(plan, lamp, clock, tmp_path)
    (dusk, _, _, dawn) = (
        c[0].astimezone(ZONE) for c in plan.timeline("lamp1", start, _local(19, 9))
    )
    dark_minutes = []

    async def night() -> None:
        stepped = False
        while clock.wall < _local(19, 9):
            if not stepped and clock.wall.astimezone(ZONE) >= _local(19, 2):
                clock.wall -= timedelta(hours=3)  # a bad NTP server steps us into the evening
                stepped = True
            await controller.tick()
            local = clock.wall.astimezone(ZONE)
            if dusk + TICK < local < dawn and lamp.level == 0:
                dark_minutes.append(local)
            clock.advance(TICK)

    asyncio.run(night())
    assert dark_minutes == []
    assert lamp.level == 0  # and it still goes off in the morning
