"""The pole's own control as one component: lighting, alarms, safety and power.

It reads the point table (readings in) and writes through whatever owns a device's bus
(``write``, commands out); it holds no bus task, camera or uplink. The composition root
(``agent/pole.py``) creates it between the buses and the uplink and hands it the outbox
that alarm transitions go to.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, Self

from smartpole.agent.config.alarms import AlarmDefinition
from smartpole.agent.config.loader import LoadedConfig
from smartpole.agent.control.actuator import ModbusLampActuator, PointWriter
from smartpole.agent.control.alarms import AlarmManager
from smartpole.agent.control.clock_watch import ClockStepHandler
from smartpole.agent.control.lamp_monitor import STORE_FILE as LAMP_ACCOUNTS_FILE
from smartpole.agent.control.lamp_monitor import LampMonitor, alarm_definitions
from smartpole.agent.control.lighting import LightingController
from smartpole.agent.control.photocell import PhotocellReader
from smartpole.agent.control.power import PowerManager, held_off_points
from smartpole.agent.control.program import LightingPlan
from smartpole.agent.control.safety import SafetySupervisor
from smartpole.agent.core.audit import AuditLog
from smartpole.agent.core.clock import ClockStepWatch
from smartpole.agent.core.outbox import STORAGE_ALARM, Outbox
from smartpole.agent.core.points import PointTable
from smartpole.drivers.lifecycle import Closing

ALARMS_FILE = "alarms.json"
POWER_FILE = "power.json"
# Raised while the outbox file cannot be opened or written (records then wait in memory);
# built in, like the lamp monitor's alarms, and overridden by an ``alarms`` entry of its kind.
STORAGE_ALARM_DEFINITION = AlarmDefinition(
    kind=STORAGE_ALARM,
    severity="major",
    raise_when=True,
    description="the outbox file cannot be opened or written: records wait in memory",
)
DeviceState = Callable[[str], tuple[str, float]]  # device -> (state, since), for power cycling


class PoleControl(Closing):
    """Created by the composition root; a context manager for the files it keeps open."""

    def __init__(
        self,
        config: LoadedConfig,
        table: PointTable,
        outbox: Outbox,
        *,
        write: PointWriter,
        device_state: DeviceState,
        state_dir: Path,
        audit: AuditLog,
        clock_trusted: Callable[[], bool],
    ) -> None:
        self._config = config
        self._table = table
        self._write = write
        self._device_state = device_state
        self._state_dir = state_dir
        self._audit = audit
        self._stack = contextlib.ExitStack()
        pole = config.pole
        self.actuator: ModbusLampActuator | None = None
        self.lighting = self._lighting(clock_trusted)
        rules = pole.alarms
        monitor = pole.lighting.monitor if pole.lighting is not None else None
        definitions = [rule.definition(kind) for kind, rule in rules.items()]
        if STORAGE_ALARM not in rules:
            definitions.append(STORAGE_ALARM_DEFINITION)
        if self.lighting is not None and monitor is not None:
            definitions += [d for d in alarm_definitions(monitor) if d.kind not in rules]
        self.alarms = AlarmManager(definitions, state_dir / ALARMS_FILE, outbox)
        self.safety = SafetySupervisor(rules, self.alarms, write, self.lighting)
        self.clock_watch = ClockStepHandler(ClockStepWatch(), outbox, self.lighting)
        self.lamp_monitor: LampMonitor | None = None
        self.power: PowerManager | None = None

    def _lighting(self, clock_trusted: Callable[[], bool]) -> LightingController | None:
        pole = self._config.pole
        if pole.lighting is None or pole.site is None:
            return None
        lamps = pole.lamps(self._has_lease)
        profiles = {lamp: self._config.modbus_profile_of(lamp) for lamp in lamps}
        photocell = (
            PhotocellReader(pole.lighting.photocell, self._table)
            if pole.lighting.photocell is not None
            else None
        )
        self.actuator = ModbusLampActuator(self._write, profiles)
        return LightingController(
            lamps,
            LightingPlan(pole.site, pole.lighting),
            self.actuator,
            state_dir=self._state_dir,
            default_level=pole.lighting.default_level,
            fallback_level=pole.lighting.default_level,
            lease_s=pole.lighting.lease_s,
            refresh_s=pole.lighting.refresh_s,
            clock_trusted=clock_trusted,
            photocell_dark=photocell.dark if photocell is not None else lambda: None,
        )

    def _has_lease(self, device: str) -> bool:
        return getattr(self._config.profile_of(device), "lease", None) is not None

    def __enter__(self) -> Self:
        self._table.listen(self.safety.on_reading)
        lighting = self.lighting
        monitor = self._config.pole.lighting.monitor if self._config.pole.lighting else None
        if lighting is not None and monitor is not None:
            self.lamp_monitor = LampMonitor(
                lighting.lamps,
                lambda lamp: lighting.state[lamp].level,
                monitor,
                self._state_dir / LAMP_ACCOUNTS_FILE,
                time.time,
                emit=self.alarms.observe,
            )
            self._stack.callback(self.lamp_monitor.close)
            self._table.listen(self.lamp_monitor.on_reading)
        if self._config.pole.power:
            self.power = PowerManager(
                self._config.pole.power,
                self._write,
                self._device_state,
                self.held_off,
                self._audit,
                store_path=self._state_dir / POWER_FILE,
            )
        return self

    def close(self) -> None:
        """Undo what entering set up (the lamp monitor's file); safe to call twice."""
        self._stack.close()

    def tasks(self) -> dict[str, Callable[[], Coroutine[Any, Any, None]]]:
        tasks: dict[str, Callable[[], Coroutine[Any, Any, None]]] = {
            "safety": self.safety.run,
            "clock_watch": self.clock_watch.run,
        }
        if self.lighting is not None:
            tasks["lighting"] = self.lighting.run
        if self.power is not None:
            tasks["power"] = self.power.run
        return tasks

    def held_off(self) -> set[str]:
        """Every relay safety holds off (power management never switches one on)."""
        return held_off_points(
            self.safety.held_off(),
            (alarm.kind for alarm in self.alarms.active()),
            self._config.pole.alarms,
        )

    def manages(self, device: str, point: str) -> bool:
        """Whether the lighting controller alone writes this point (a lamp's leased level)."""
        if self.lighting is None or self.actuator is None or device not in self.lighting.lamps:
            return False
        return point in self.actuator.setpoints(device)
