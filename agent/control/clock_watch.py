"""What the pole does when its wall clock steps: report it upstream and re-plan the lights.

A bad NTP answer or an RTC reset can move the wall clock by days. Durations do not care
(they run on the monotonic clock), but the platform must know that the pole's timestamps
jumped, and the lighting program must answer for the new time of day now, not at its next
tick. Each step goes to the outbox stream ``events`` (``source: clock``) like the MCU's and
the cameras' events, and is logged once by ``ClockStepWatch``.
"""

from __future__ import annotations

import asyncio
import contextlib

from smartpole.agent.control.lighting import LightingController
from smartpole.agent.core.clock import ClockStep, ClockStepWatch
from smartpole.agent.core.outbox import Outbox, OutboxError, Priority

STREAM = "events"
CHECK_EVERY_S = 1.0


def event_payload(step: ClockStep, threshold_s: float) -> dict[str, object]:
    return {
        "source": "clock",
        "kind": "wall_clock_step",
        "step_s": round(step.step_s, 3),
        "wall_before": step.wall_before,
        "wall_after": step.wall_after,
        "threshold_s": threshold_s,
    }


class ClockStepHandler:
    """Checks the clocks every second; on a step, reports it and re-evaluates the lights."""

    def __init__(
        self, watch: ClockStepWatch, outbox: Outbox, lighting: LightingController | None
    ) -> None:
        self.watch = watch
        self._outbox = outbox
        self._lighting = lighting

    async def check(self) -> ClockStep | None:
        step = self.watch.check()
        if step is None:
            return None
        # A failed append is counted and logged once by the outbox; the step is in the log.
        with contextlib.suppress(OutboxError):
            self._outbox.append(
                STREAM, event_payload(step, self.watch.threshold_s), priority=Priority.HIGH
            )
        if self._lighting is not None:
            self._lighting.clock_stepped(step.step_s)
            await self._lighting.tick()
        return step

    async def run(self) -> None:
        while True:
            await self.check()
            await asyncio.sleep(CHECK_EVERY_S)
