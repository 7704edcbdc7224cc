"""Pole control as one component of the daemon: outbox, alarms, safety actions, lighting.

The daemon composes it next to the bus tasks; this module owns the wiring between the
point table (readings in), the bus tasks (commands out) and the API (operators).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from smartpole.agent.buses.base import BusTask
from smartpole.agent.buses.mcu import McuBusTask
from smartpole.agent.buses.modbus import ModbusBusTask
from smartpole.agent.cameras import CameraWorker
from smartpole.agent.config.loader import LoadedConfig
from smartpole.agent.control.actuator import ModbusLampActuator
from smartpole.agent.control.alarms import AlarmError, AlarmManager
from smartpole.agent.control.lamp_monitor import STORE_FILE as LAMP_ACCOUNTS_FILE
from smartpole.agent.control.lamp_monitor import LampMonitor, alarm_definitions
from smartpole.agent.control.lighting import LightingController
from smartpole.agent.control.photocell import PhotocellReader
from smartpole.agent.control.power import PowerManager, held_off_points
from smartpole.agent.control.program import LightingPlan
from smartpole.agent.control.safety import SafetySupervisor, alarms_status
from smartpole.agent.core.audit import AuditLog
from smartpole.agent.core.clock import clock_is_synchronised
from smartpole.agent.core.errors import RequestError
from smartpole.agent.core.health import DeviceState
from smartpole.agent.core.outbox import Outbox, OutboxError, Priority
from smartpole.agent.core.points import PointTable
from smartpole.drivers.mcu.codes import EventKind
from smartpole.drivers.mcu.results import McuEvent

ALARMS_FILE = "alarms.json"
POWER_FILE = "power.json"


class PoleControl:
    def __init__(
        self,
        config: LoadedConfig,
        table: PointTable,
        buses: list[BusTask],
        *,
        state_dir: Path,
        audit: AuditLog,
        clock_trusted: Callable[[], bool] = clock_is_synchronised,
    ) -> None:
        self._config = config
        self._table = table
        self._buses = buses
        self._state_dir = state_dir
        self._audit = audit
        self.lighting = self._lighting(clock_trusted)
        self._stack = contextlib.ExitStack()
        self.outbox: Outbox | None = None
        self.alarms: AlarmManager | None = None
        self.safety: SafetySupervisor | None = None
        self.lamp_monitor: LampMonitor | None = None
        self.power: PowerManager | None = None
        self.cameras = [
            CameraWorker(
                name,
                camera,
                config.path.parent,
                on_summary=self._record_traffic,
                on_event=self._record_camera_event,
            )
            for name, camera in config.pole.cameras.items()
        ]

    def _lighting(self, clock_trusted: Callable[[], bool]) -> LightingController | None:
        pole = self._config.pole
        if pole.lighting is None or pole.site is None:
            return None
        modbus = {
            n: b for b in self._buses if isinstance(b, ModbusBusTask) for n in b.device_names()
        }
        lamps = [lamp for lamp in pole.lamps(self._has_lease) if lamp in modbus]
        profiles = {lamp: self._config.modbus_profile_of(lamp) for lamp in lamps}
        photocell = (
            PhotocellReader(pole.lighting.photocell, self._table)
            if pole.lighting.photocell is not None
            else None
        )
        return LightingController(
            lamps,
            LightingPlan(pole.site, pole.lighting),
            ModbusLampActuator({lamp: modbus[lamp] for lamp in lamps}, profiles),
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
        uplink = self._config.pole.uplink
        limits = uplink.outbox if uplink is not None else None
        self.outbox = self._stack.enter_context(
            Outbox(
                self._state_dir,
                max_bytes=limits.max_bytes if limits is not None else None,
                max_age_s=limits.max_age_s if limits is not None else None,
            )
        )
        rules = self._config.pole.alarms
        lighting_cfg = self._config.pole.lighting
        monitor_cfg = lighting_cfg.monitor if lighting_cfg is not None else None
        definitions = [rule.definition(kind) for kind, rule in rules.items()]
        if self.lighting is not None and monitor_cfg is not None:
            definitions += [d for d in alarm_definitions(monitor_cfg) if d.kind not in rules]
        self.alarms = AlarmManager(definitions, self._state_dir / ALARMS_FILE, self.outbox)
        self.safety = SafetySupervisor(rules, self.alarms, self._write_point, self.lighting)
        self._table.listen(self.safety.on_reading)
        for bus in self._buses:
            if isinstance(bus, McuBusTask):
                bus.event_listeners.append(self._record_mcu_event)
        if self.lighting is not None and monitor_cfg is not None:
            lighting = self.lighting
            self.lamp_monitor = LampMonitor(
                lighting.lamps,
                lambda lamp: lighting.state[lamp].level,
                monitor_cfg,
                self._state_dir / LAMP_ACCOUNTS_FILE,
                time.time,
                emit=self.alarms.observe,
            )
            self._stack.callback(self.lamp_monitor.close)
            self._table.listen(self.lamp_monitor.on_reading)
        if self._config.pole.power:
            self.power = PowerManager(
                self._config.pole.power,
                self._write_point,
                self._device_state,
                self._held_off,
                self._audit,
                store_path=self._state_dir / POWER_FILE,
            )
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stack.close()

    def tasks(self) -> dict[str, Callable[[], Coroutine[Any, Any, None]]]:
        tasks: dict[str, Callable[[], Coroutine[Any, Any, None]]] = {}
        if self.safety is not None:
            tasks["safety"] = self.safety.run
        if self.lighting is not None:
            tasks["lighting"] = self.lighting.run
        if self.power is not None:
            tasks["power"] = self.power.run
        for camera in self.cameras:
            tasks[f"camera:{camera.name}"] = camera.run
        return tasks

    def handlers(self) -> dict[str, Callable[[Mapping[str, Any]], object]]:
        return {
            "alarms": self._alarms,
            "reset": self._reset,
            "lights": self._lights,
            "override": self._override,
            "lamp_accounts": self._lamp_accounts,
            "power": self._power,
            "power_cycle": self._power_cycle,
            "cameras": self._cameras,
        }

    def _record_mcu_event(self, event: McuEvent) -> None:
        """MCU events go up as they are, with the MCU's own timestamps: a door opened while
        the agent was down still reaches the platform, stamped when it happened."""
        assert self.outbox is not None
        kind = event.kind.name.lower() if isinstance(event.kind, EventKind) else event.kind
        payload = {
            "source": "mcu",
            "boot_id": event.boot_id,
            "id": event.id,
            "kind": kind,
            "value": event.value,
            "mcu_uptime_ms": event.uptime_ms,
            "mcu_time": event.unix_time,
        }
        # A failed append is counted and logged once by the outbox; the event is in the log.
        with contextlib.suppress(OutboxError):
            self.outbox.append("events", payload, priority=Priority.HIGH)

    def _cameras(self, _request: Mapping[str, Any]) -> object:
        return [camera.status() for camera in self.cameras]

    def _record_traffic(self, camera: str, summary: Mapping[str, Any]) -> None:
        """A traffic summary goes up as the worker made it; frames never leave the worker."""
        assert self.outbox is not None
        payload = {k: v for k, v in summary.items() if k != "type"}
        with contextlib.suppress(OutboxError):
            self.outbox.append("traffic", payload, priority=Priority.NORMAL)

    def _record_camera_event(self, camera: str, event: Mapping[str, Any]) -> None:
        assert self.outbox is not None
        payload = {"source": "camera", **{k: v for k, v in event.items() if k != "type"}}
        with contextlib.suppress(OutboxError):
            self.outbox.append("events", payload, priority=Priority.HIGH)

    def _device_state(self, device: str) -> tuple[str, float]:
        for camera in self.cameras:
            since = camera.no_frames_since
            if camera.config.device == device and since is not None:
                return DeviceState.OFFLINE.value, since  # no frames: power-cycle candidate
        for bus in self._buses:
            for health in bus.devices:
                if health.name == device:
                    return health.state.value, health.state_since
        return DeviceState.UNKNOWN.value, time.time()

    def _held_off(self) -> set[str]:
        assert self.safety is not None
        assert self.alarms is not None
        return held_off_points(
            self.safety.held_off(),
            (alarm.kind for alarm in self.alarms.active()),
            self._config.pole.alarms,
        )

    def _power(self, _request: Mapping[str, Any]) -> object:
        if self.power is None:
            raise RequestError("this pole has no power section in its config")
        return self.power.status()

    async def _power_cycle(self, request: Mapping[str, Any]) -> object:
        if self.power is None:
            raise RequestError("this pole has no power section in its config")
        return await self.power.power_cycle(str(request.get("device")), str(request.get("actor")))

    async def _write_point(self, device: str, point: str, value: object, actor: str) -> object:
        for bus in self._buses:
            if device in bus.device_names() and hasattr(bus, "write_point"):
                return await bus.write_point(device, point, value, actor)
        raise RequestError(f"no writable device {device!r}")

    def _alarms(self, _request: Mapping[str, Any]) -> object:
        assert self.alarms is not None
        assert self.safety is not None
        status = alarms_status(self.alarms, self.safety)
        status["outbox"] = (
            {s: dict(st) for s, st in self.outbox.stats().items()} if self.outbox else {}
        )
        return status

    def _reset(self, request: Mapping[str, Any]) -> object:
        assert self.safety is not None
        try:
            events = self.safety.reset(str(request.get("alarm")), str(request.get("actor")))
        except AlarmError as exc:
            raise RequestError(str(exc)) from exc
        return [event.to_json() for event in events]

    def _lamp_accounts(self, _request: Mapping[str, Any]) -> object:
        return self.lamp_monitor.accounts() if self.lamp_monitor is not None else {}

    def _lights(self, _request: Mapping[str, Any]) -> object:
        if self.lighting is None:
            raise RequestError("this pole has no lighting section in its config")
        return self.lighting.status()

    def _override(self, request: Mapping[str, Any]) -> object:
        if self.lighting is None:
            raise RequestError("this pole has no lighting section in its config")
        lamp, actor = str(request.get("lamp")), str(request.get("actor"))
        if request.get("clear"):
            return self.lighting.clear_override(lamp, actor)
        try:
            override = self.lighting.set_override(
                lamp, int(request["level"]), float(request["duration_s"]), actor
            )
        except KeyError as exc:
            raise RequestError(f"no lamp {lamp!r} (or missing level/duration_s)") from exc
        except (TypeError, ValueError) as exc:
            raise RequestError(str(exc)) from exc
        return vars(override)
