"""A clock that tests move by hand: time passing (both clocks) or a wall-clock step alone.

Implements ``smartpole.agent.core.clock.Clock`` and is callable as a wall clock, so one
object can drive the outbox (which takes a callable) and the components that take a Clock.
"""

from __future__ import annotations


class ManualClock:
    def __init__(self, now: float = 1_700_000_000.0, mono: float = 1000.0) -> None:
        self.now = now  # the wall clock; ``now += x`` is x seconds passing on both clocks
        self._offset = now - mono  # wall minus monotonic: changes only by a step

    def __call__(self) -> float:
        return self.now

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now - self._offset

    def advance(self, seconds: float) -> None:
        """``seconds`` pass."""
        self.now += seconds

    def step(self, seconds: float) -> None:
        """The wall clock alone jumps by ``seconds`` (NTP, an RTC reset, an operator)."""
        self.now += seconds
        self._offset += seconds
