"""Whether the wall clock can be trusted for schedules, MCU time and anything dated; the
clocks every component reads; and noticing when the wall clock steps.

A pole's edge box may boot without network time and without a battery-backed clock; its
wall clock then starts in the past, and a lighting program read from it would switch the
lights at the wrong hours. Every part that needs "may I believe the time?" asks here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, Protocol

import structlog

log = structlog.get_logger("smartpole.clock")


def clock_is_synchronised(
    synced_flag: Path = Path("/run/systemd/timesync/synchronized"),
    rtc: Path = Path("/dev/rtc0"),
) -> bool:
    """Trust the wall clock if an NTP client said it synchronised since boot, or an RTC
    keeps time across power cuts; otherwise the lights go by the photocell."""
    return synced_flag.exists() or rtc.exists()


class Clock(Protocol):
    """The two clocks a component reads, injectable so tests can step one without the other.

    ``time`` is the wall clock (epoch seconds): for stamps and calendar decisions only, since
    NTP, an RTC reset or an operator can step it by days. ``monotonic`` never steps: every
    duration (expiry, debounce, timeouts, backoff, how long an id is remembered) runs on it.
    """

    def time(self) -> float: ...

    def monotonic(self) -> float: ...


class SystemClock:
    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()


SYSTEM_CLOCK: Final = SystemClock()


class SteadyClock:
    """One reading used as both clocks: a clock that never steps (simple callers, tests)."""

    def __init__(self, read: Callable[[], float]) -> None:
        self._read = read

    def time(self) -> float:
        return self._read()

    def monotonic(self) -> float:
        return self._read()


@dataclass(frozen=True)
class ClockStep:
    """The wall clock moved ``step_s`` more than the monotonic clock (negative: back)."""

    step_s: float
    wall_before: float  # where the wall clock would be without the step
    wall_after: float  # where it is


class ClockStepWatch:
    """Notices wall-clock steps by comparing the two clocks at every ``check``.

    The offset between them changes only by a step (slewing moves it slowly, and small moves
    are followed silently): a change beyond ``threshold_s`` between two checks is a step.
    Each step is logged once, as it is seen; the caller reports it and handles it.
    """

    def __init__(self, clock: Clock = SYSTEM_CLOCK, threshold_s: float = 60.0) -> None:
        self._clock = clock
        self.threshold_s = threshold_s
        self._offset = clock.time() - clock.monotonic()
        self.steps = 0
        self.last: ClockStep | None = None

    def check(self) -> ClockStep | None:
        wall = self._clock.time()
        offset = wall - self._clock.monotonic()
        moved, self._offset = offset - self._offset, offset
        if abs(moved) <= self.threshold_s:
            return None
        step = ClockStep(moved, wall - moved, wall)
        self.steps += 1
        self.last = step
        log.warning("clock_stepped", step_s=round(moved, 3), threshold_s=self.threshold_s,
                    wall_before=_iso(step.wall_before), wall_after=_iso(wall))  # fmt: skip
        return step

    def to_json(self) -> dict[str, object]:
        last = self.last
        return {
            "threshold_s": self.threshold_s,
            "steps": self.steps,
            "last_step_s": None if last is None else round(last.step_s, 3),
            "last_step_at": None if last is None else last.wall_after,
        }


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")
