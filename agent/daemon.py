"""The daemon's lifecycle: start every component, serve until asked to stop, stop cleanly.

Start-up order matters: the configuration is already valid when we get here; the API comes
up before READY=1 so ``smartpole diag`` works as soon as systemd says the service runs. On
SIGTERM every task is cancelled, the ports close, last values are flushed to disk, and the
process exits well inside systemd's stop timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import structlog

from smartpole.agent.api import SOCKET_NAME, ApiServer, Handler
from smartpole.agent.buses.factory import create_bus_tasks
from smartpole.agent.buses.mcu import McuBusTask
from smartpole.agent.config.loader import LoadedConfig
from smartpole.agent.config.uplink import UplinkConfig
from smartpole.agent.control.pole import PoleControl
from smartpole.agent.core.audit import AuditLog
from smartpole.agent.core.clock import clock_is_synchronised
from smartpole.agent.core.errors import RequestError
from smartpole.agent.core.health import BusState, DeviceState
from smartpole.agent.core.points import PointTable
from smartpole.agent.sdnotify import Notifier, run_watchdog
from smartpole.agent.state import PointStore
from smartpole.agent.uplink.command_executor import DaemonExecutor
from smartpole.agent.uplink.commands import CommandProcessor
from smartpole.agent.uplink.mqtt import MqttUplink
from smartpole.agent.uplink.telemetry import TelemetryReporter

log = structlog.get_logger("smartpole.daemon")

FLUSH_PERIOD_S = 60.0
STATUS_PERIOD_S = 5.0


class _StopRequestedError(Exception):
    """Raised inside the task group to end it; never escapes the daemon."""


class Daemon:
    def __init__(
        self,
        config: LoadedConfig,
        *,
        state_dir: Path,
        runtime_dir: Path,
        notifier: Notifier,
        clock_trusted: Callable[[], bool] | None = None,
    ) -> None:
        self.config = config
        self.state_dir = state_dir
        self.socket_path = runtime_dir / SOCKET_NAME
        self.notifier = notifier
        self.table = PointTable()
        self.store = PointStore(state_dir)
        self.audit = AuditLog(state_dir)
        self.buses = create_bus_tasks(config, self.table, self.audit)
        self.control = PoleControl(
            config,
            self.table,
            self.buses,
            state_dir=state_dir,
            audit=self.audit,
            clock_trusted=clock_trusted or clock_is_synchronised,
        )
        self.started_at = time.time()
        self.uplink: MqttUplink | None = None
        self.commands: CommandProcessor | None = None
        self.telemetry: TelemetryReporter | None = None
        self.opcua_status: Callable[[], dict[str, object]] | None = None  # set with the server

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set; raises only on a bug (so systemd restarts us)."""
        restored = self.store.restore(self.table)
        handlers = {
            "status": self._status,
            "points": self._points,
            "plan": self._plan,
            "read": self._read,
            "write": self._write,
            "audit": self._audit_tail,
            "ptz": self._ptz,
            "mcu": self._mcu,
        }
        with self.control:
            handlers.update(self.control.handlers())
            handlers["uplink"] = self._uplink_status
            self._create_uplink(handlers)
            await self._serve(stop, handlers, restored)
        log.info("daemon_stopped", uptime_s=round(time.time() - self.started_at, 1))

    async def _serve(
        self, stop: asyncio.Event, handlers: dict[str, Handler], restored: int
    ) -> None:
        async with ApiServer(self.socket_path, handlers), self._opcua():
            log.info(
                "daemon_started",
                pole=self.config.pole.pole.id,
                config=str(self.config.path),
                buses=len(self.buses),
                devices=len(self.config.pole.devices),
                restored_points=restored,
                pid=os.getpid(),
            )
            self.notifier.ready()
            # Everything built so far (config models, profiles, plans) lives as long as the
            # process: keep it out of the collector's full passes, which otherwise walk it
            # every few seconds on a busy gateway (about a tenth of its CPU).
            gc.collect()
            gc.freeze()
            try:
                async with asyncio.TaskGroup() as group:
                    for bus in self.buses:
                        group.create_task(bus.run(), name=f"bus:{bus.name}")
                    group.create_task(run_watchdog(self.notifier), name="watchdog")
                    group.create_task(self._report_status(), name="status")
                    group.create_task(self._flush_periodically(), name="flush")
                    group.create_task(_raise_when_set(stop), name="stop")
                    for name, task in self.control.tasks().items():
                        group.create_task(task(), name=name)
                    if self.uplink is not None:
                        group.create_task(self.uplink.run(), name="uplink")
                    if self.telemetry is not None:
                        group.create_task(self.telemetry.run(), name="telemetry")
            except* _StopRequestedError:
                pass
            finally:
                self.store.flush(self.table)
                if self.telemetry is not None:
                    self.telemetry.flush()  # queued changes go to the outbox, not away

    def _create_uplink(self, handlers: dict[str, Handler]) -> None:
        """The MQTT uplink and report-by-exception, when the config has an uplink section."""
        config = self.config.pole.uplink
        outbox = self.control.outbox
        if config is None or outbox is None:
            return
        self.commands = self._command_processor(config, handlers)
        self.uplink = MqttUplink(
            config,
            pole_id=self.config.pole.pole.id,
            outbox=outbox,
            base_dir=self.config.path.parent,
            commands=self.commands,
        )
        if config.telemetry.enabled:
            self.telemetry = TelemetryReporter(
                config.telemetry, self.table, outbox, notify=self.uplink.notify
            )
            self.telemetry.start()

    def _command_processor(
        self, config: UplinkConfig, handlers: dict[str, Handler]
    ) -> CommandProcessor | None:
        """Platform commands go through the same handlers as the local API, so they get the
        same checks (profile limits, safety holds), read-back and audit."""
        commands = config.commands
        if commands is None:
            return None
        if commands.hmac_key_file is not None:
            key = self.config.path.parent / commands.hmac_key_file
            commands = commands.model_copy(update={"hmac_key_file": key})

        def report_now(_request: Mapping[str, Any]) -> object:
            if self.telemetry is None:
                raise RequestError("telemetry is not enabled on this pole")
            self.telemetry.integrity()
            return {"reported": True}

        executor = DaemonExecutor({**handlers, "report_now": report_now})
        return CommandProcessor(commands, executor, self.audit, self.state_dir)

    def _opcua(self) -> contextlib.AbstractAsyncContextManager[object]:
        """The OPC UA server, when configured; its methods go through the command processor
        with the session's authenticated user as the actor (no HMAC: the session is)."""
        config = self.config.pole.opcua
        if config is None:
            return contextlib.nullcontext()
        # Imported here: asyncua is heavy, and most poles have no OPC UA section.
        from smartpole.agent.uplink.opcua import OpcUaServer

        processor = self.commands

        async def no_commands(
            command: str, args: dict[str, object], *, actor: str, source: str
        ) -> Mapping[str, Any]:
            return {"status": "rejected", "reason": "not_allowed",
                    "error": "no uplink.commands section: no commands"}  # fmt: skip

        server = OpcUaServer(
            config,
            pole_id=self.config.pole.pole.id,
            table=self.table,
            state_dir=self.state_dir,
            alarms=self.control.alarms,
            command=processor.submit if processor is not None else no_commands,
        )
        self.opcua_status = server.status
        return server

    def _uplink_status(self, _request: Mapping[str, Any]) -> dict[str, object]:
        opcua = self.opcua_status
        if self.uplink is None and opcua is None:
            raise RequestError("this pole has no uplink section in its config")
        status = self.uplink.status() if self.uplink is not None else {}
        if self.telemetry is not None:
            status["telemetry"] = self.telemetry.status()
        if opcua is not None:
            status["opcua"] = opcua()
        return status

    def summary(self) -> str:
        devices = [device for bus in self.buses for device in bus.devices]
        online = sum(device.state is DeviceState.ONLINE for device in devices)
        down = [bus.name for bus in self.buses if bus.health.state is BusState.PORT_UNAVAILABLE]
        text = f"{online}/{len(devices)} devices online on {len(self.buses)} bus(es)"
        return text + (f"; port unavailable: {', '.join(down)}" if down else "")

    async def _report_status(self) -> None:
        last = ""
        while True:
            text = self.summary()
            if text != last:
                self.notifier.status(text)
                last = text
            await asyncio.sleep(STATUS_PERIOD_S)

    async def _flush_periodically(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_PERIOD_S)
            self.store.flush(self.table)

    def _problems(self) -> list[str]:
        problems = []
        for bus in self.buses:
            if bus.health.state is BusState.PORT_UNAVAILABLE:
                problems.append(f"bus {bus.name}: {bus.health.endpoint}: {bus.health.last_error}")
            for device in bus.devices:
                if device.state is DeviceState.OFFLINE:
                    problems.append(
                        f"device {device.name} ({device.address} on {bus.name}) offline: "
                        f"{device.last_error}"
                    )
                elif device.last_error is not None:
                    problems.append(f"device {device.name}: last poll failed: {device.last_error}")
                if device.unsupported_points:
                    refused = ", ".join(device.unsupported_points)
                    problems.append(f"device {device.name} does not have points: {refused}")
                if device.suspect_values:
                    problems.append(
                        f"device {device.name}: {device.suspect_values} readings were not "
                        "physical or outside the sensor's range (marked bad/uncertain)"
                    )
        if self.store.write_failures:
            failures = self.store.write_failures
            problems.append(f"state file {self.store.path}: {failures} failed writes")
        return problems

    def _status(self, _request: Mapping[str, Any]) -> dict[str, object]:
        return {
            "pole": self.config.pole.pole.id,
            "pole_name": self.config.pole.pole.name,
            "config": str(self.config.path),
            "pid": os.getpid(),
            "started_at": self.started_at,
            "uptime_s": round(time.time() - self.started_at, 1),
            "summary": self.summary(),
            "problems": self._problems(),
            "buses": [bus.health.to_json() for bus in self.buses],
            "devices": [device.to_json() for bus in self.buses for device in bus.devices],
        }

    def _points(self, _request: Mapping[str, Any]) -> list[dict[str, object]]:
        return [sample.to_json() for sample in self.table.snapshot()]

    def _plan(self, _request: Mapping[str, Any]) -> dict[str, object]:
        return {bus.name: bus.read_plan() for bus in self.buses}

    def _bus_of(self, device: object) -> Any:
        for bus in self.buses:
            if device in bus.device_names():
                return bus
        raise RequestError(f"no device {device!r} on this pole")

    async def _read(self, request: Mapping[str, Any]) -> object:
        bus = self._bus_of(request.get("device"))
        if not hasattr(bus, "read_point"):
            raise RequestError(f"bus {bus.name} has no readable points")
        return await bus.read_point(str(request["device"]), str(request.get("point")))

    async def _write(self, request: Mapping[str, Any]) -> object:
        bus = self._bus_of(request.get("device"))
        if not hasattr(bus, "write_point"):
            raise RequestError(f"bus {bus.name} has no writable points")
        return await bus.write_point(
            str(request["device"]), str(request.get("point")), request.get("value"),
            str(request.get("actor", "local:unknown")),
        )  # fmt: skip

    async def _ptz(self, request: Mapping[str, Any]) -> object:
        bus = self._bus_of(request.get("device"))
        if not hasattr(bus, "go_to_preset"):
            raise RequestError(f"device {request.get('device')} is not a PTZ camera")
        preset = request.get("preset")
        if not isinstance(preset, int) or isinstance(preset, bool):
            raise RequestError("ptz needs an integer preset")
        actor = str(request.get("actor", "local:unknown"))
        return await bus.go_to_preset(str(request["device"]), preset, actor)

    def _mcu(self, _request: Mapping[str, Any]) -> object:
        mcus = [bus.diagnostics() for bus in self.buses if isinstance(bus, McuBusTask)]
        if not mcus:
            raise RequestError("this pole has no pole-mcu bus in its config")
        return mcus

    def _audit_tail(self, request: Mapping[str, Any]) -> object:
        return self.audit.tail(int(request.get("count", 20)))


async def _raise_when_set(stop: asyncio.Event) -> None:
    await stop.wait()
    raise _StopRequestedError


async def serve(daemon: Daemon) -> None:
    """Run ``daemon`` with SIGTERM/SIGINT handling; the process' main coroutine."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def request_stop(signum: int) -> None:
        if not stop.is_set():
            log.info("stop_requested", signal=signal.Signals(signum).name)
            daemon.notifier.stopping()
            stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, request_stop, signum)
    try:
        await daemon.run(stop)
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(ValueError, RuntimeError):
                loop.remove_signal_handler(signum)
