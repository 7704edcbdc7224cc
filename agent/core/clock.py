"""Whether the wall clock can be trusted for schedules, MCU time and anything dated.

A pole's edge box may boot without network time and without a battery-backed clock; its
wall clock then starts in the past, and a lighting program read from it would switch the
lights at the wrong hours. Every part that needs "may I believe the time?" asks here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Final, Protocol


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
