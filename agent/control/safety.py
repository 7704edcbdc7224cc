"""Safety: readings become alarms, and a raised alarm acts at once (cut a circuit).

Wired to the point table as a listener, so a leakage reading is judged in the same loop
iteration the bus task stored it, and the relay command goes to the front of its bus's
queue: the circuit opens within one transaction of the reading, well under a second. What
was cut stays cut, and its lamps stay reported as forced off, until an authorised reset
acknowledges the alarm after the condition is gone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Mapping
from typing import Any, Protocol

import structlog

from smartpole.agent.config.alarms import AlarmRule
from smartpole.agent.control.alarms import AlarmEvent, AlarmManager, EventType
from smartpole.agent.core.errors import AgentError
from smartpole.agent.core.points import Quality
from smartpole.drivers.errors import DriverError
from smartpole.drivers.schema import Value

log = structlog.get_logger("smartpole.safety")

ACTOR = "agent:safety"


class PointWriter(Protocol):
    async def __call__(self, device: str, point: str, value: object, actor: str) -> object: ...


class LampGate(Protocol):
    def force_off(self, lamp: str, reason: str) -> None: ...

    def release(self, lamp: str) -> None: ...


class SafetySupervisor:
    def __init__(
        self,
        rules: Mapping[str, AlarmRule],
        manager: AlarmManager,
        write: PointWriter,
        lamps: LampGate | None,
    ) -> None:
        self._rules = rules
        self._manager = manager
        self._write = write
        self._lamps = lamps
        # Keyed by (device, point): every reading of every point passes here, and most
        # points feed no alarm, so the common case must cost one dict miss and no string.
        self._kinds_of: dict[tuple[str, str], tuple[str, list[str]]] = {}
        for kind, rule in rules.items():
            for source in rule.sources:
                device, _, point = source.rpartition(".")  # point names have no dots
                entry = self._kinds_of.setdefault((device, point), (source, []))
                entry[1].append(kind)
                manager.watch(source, kind)
        self._cut: dict[str, set[str]] = {}  # point "device.point" -> alarm ids holding it off
        self._tasks: set[asyncio.Task[Any]] = set()
        self.actions_failed = 0
        # Alarms still active from before a restart keep holding what they held.
        for alarm in manager.active():
            held = rules.get(alarm.kind)
            if held is None:
                continue
            for ref in held.on_raise.cut:
                self._cut.setdefault(ref, set()).add(alarm.alarm_id)
            if lamps is not None:
                for lamp in held.on_raise.force_off:
                    lamps.force_off(lamp, f"{alarm.kind} alarm {alarm.alarm_id} (still active)")

    # ----- readings in -----

    def on_reading(
        self, device: str, point: str, value: Value | None, quality: Quality, at: float
    ) -> None:
        watched = self._kinds_of.get((device, point))
        if watched is None:
            return
        source, kinds = watched
        for kind in kinds:
            reading = value if isinstance(value, bool | int | float) else None
            events = self._manager.observe(source, kind, reading, quality.value, at)
            self._act(events)

    def tick(self) -> None:
        self._act(self._manager.tick())

    # ----- operator -----

    def reset(self, alarm_id: str, actor: str) -> list[AlarmEvent]:
        """Acknowledge; if that clears the alarm, give back what it held off."""
        events = self._manager.acknowledge(alarm_id, actor)
        self._act(events)
        return events

    # ----- actions -----

    def _act(self, events: list[AlarmEvent]) -> None:
        for event in events:
            rule = self._rules.get(event.kind)
            if rule is None:
                continue
            if event.type is EventType.RAISED:
                self._apply(event, rule)
            elif event.type is EventType.CLEARED:
                self._undo(event, rule)

    def _apply(self, event: AlarmEvent, rule: AlarmRule) -> None:
        for ref in rule.on_raise.cut:
            self._cut.setdefault(ref, set()).add(event.alarm_id)
            device, _, point = ref.rpartition(".")
            self._spawn(self._switch(device, point, False, event.alarm_id))
        if self._lamps is not None:
            for lamp in rule.on_raise.force_off:
                self._lamps.force_off(lamp, f"{event.kind} alarm {event.alarm_id}")

    def _undo(self, event: AlarmEvent, rule: AlarmRule) -> None:
        for ref in rule.on_raise.cut:
            holders = self._cut.get(ref, set())
            holders.discard(event.alarm_id)
            if not holders:
                self._cut.pop(ref, None)
                device, _, point = ref.rpartition(".")
                self._spawn(self._switch(device, point, True, event.alarm_id))
        if self._lamps is not None:
            for lamp in rule.on_raise.force_off:
                self._lamps.release(lamp)

    def held_off(self) -> dict[str, list[str]]:
        return {ref: sorted(ids) for ref, ids in self._cut.items()}

    async def _switch(self, device: str, point: str, on: bool, alarm_id: str) -> None:
        try:
            await self._write(device, point, on, ACTOR)
        except (DriverError, AgentError) as exc:
            self.actions_failed += 1
            log.error(
                "safety_action_failed", alarm=alarm_id, target=f"{device}.{point}",
                on=on, error=str(exc),
            )  # fmt: skip
            return
        log.warning(
            "safety_action", alarm=alarm_id, target=f"{device}.{point}",
            switched="on" if on else "off",
        )  # fmt: skip

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def run(self) -> None:
        """Notice silent sensors once a second; the readings themselves arrive as callbacks.

        First, switch off again what active alarms hold: the agent may have been down while
        someone or something switched it back on.
        """
        for ref, holders in list(self._cut.items()):
            device, _, point = ref.rpartition(".")
            await self._switch(device, point, False, sorted(holders)[0])
        while True:
            self.tick()
            await asyncio.sleep(1.0)


def alarms_status(manager: AlarmManager, safety: SafetySupervisor) -> dict[str, object]:
    return {
        "active": [alarm.to_json() for alarm in manager.active()],
        "history": [event.to_json() for event in manager.history(20)],
        "held_off": safety.held_off(),
        "actions_failed": safety.actions_failed,
    }
