"""One pole's agent, assembled: the only place that creates and wires its components.

Read ``_assemble`` top to bottom for the whole pole, in the order a reading travels:
point table, outbox (which never fails to start: without a usable file it holds records in
memory and raises ``storage_unavailable``), buses (which register their points; last values
are restored then), control, damaged-store reports upstream, cameras, telemetry and MQTT
uplink, OPC UA, then the typed operations every door uses, the command processor that
authorises platform commands, and the local API. Teardown is the reverse, by one exit
stack. ``tasks`` lists what runs while the pole is up; the daemon (``daemon.py``) runs them
and owns the process.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import structlog

from smartpole.agent.api import SOCKET_NAME, ApiServer
from smartpole.agent.api_methods import handlers
from smartpole.agent.buses.bus_set import BusSet
from smartpole.agent.buses.capabilities import BusTask, EventSource
from smartpole.agent.buses.kind import BusContext
from smartpole.agent.buses.mcu.event_marks import EventMarks
from smartpole.agent.buses.mcu.events import EventRecorder
from smartpole.agent.buses.registry import BusRegistry, registry
from smartpole.agent.cameras import Cameras
from smartpole.agent.config.loader import LoadedConfig
from smartpole.agent.control.alarms import GOOD
from smartpole.agent.control.pole import PoleControl
from smartpole.agent.core.audit import AuditLog
from smartpole.agent.core.health import DeviceState
from smartpole.agent.core.outbox import STORAGE_ALARM, Outbox
from smartpole.agent.core.points import PointTable
from smartpole.agent.operations import PoleOperations
from smartpole.agent.state import PointStore
from smartpole.agent.uplink.commands import CommandProcessor
from smartpole.agent.uplink.counters import CounterWatch, counter_points
from smartpole.agent.uplink.meta import build_meta, devices_of
from smartpole.agent.uplink.mqtt import MqttUplink
from smartpole.agent.uplink.opcua_calls import outbox_report
from smartpole.agent.uplink.release_report import ReleaseHistory
from smartpole.agent.uplink.session import SessionCounter
from smartpole.agent.uplink.telemetry import TelemetryReporter
from smartpole.drivers.lifecycle import Lifecycle

if TYPE_CHECKING:
    from smartpole.agent.uplink.opcua import OpcUaServer

log = structlog.get_logger("smartpole.pole")

Task = Callable[[], Coroutine[Any, Any, None]]


class Pole(Lifecycle):
    """``async with Pole(...) as pole:`` everything is created, opened and serving its API;
    ``pole.tasks()`` is what must run. See the module docstring for the order."""

    def __init__(
        self,
        config: LoadedConfig,
        *,
        state_dir: Path,
        runtime_dir: Path,
        clock_trusted: Callable[[], bool],
        protocols: BusRegistry | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.state_dir = state_dir
        self.socket_path = runtime_dir / SOCKET_NAME
        self.started_at = time.time()
        self._clock_trusted = clock_trusted
        self._registry = protocols or registry()
        self._stack = contextlib.AsyncExitStack()
        self.table = PointTable()
        self.store = PointStore(state_dir)
        self.audit = AuditLog(state_dir)
        self.restored = 0
        # Created in __aenter__, in this order.
        self.outbox: Outbox
        self.buses: BusSet
        self.control: PoleControl
        self.cameras: Cameras
        self.releases: ReleaseHistory
        self.telemetry: TelemetryReporter | None = None
        self.uplink: MqttUplink | None = None
        self.event_recorders: list[EventRecorder] = []
        self.operations: PoleOperations
        self.commands: CommandProcessor | None = None

    async def _start(self) -> None:
        try:
            await self._assemble(self._stack)
        except BaseException:
            await self._stack.aclose()  # what was assembled, in reverse; async, so here
            raise

    async def _stopped(self) -> None:
        try:
            await self._stack.aclose()
        finally:
            self.store.flush(self.table)

    async def _assemble(self, stack: contextlib.AsyncExitStack) -> None:
        config, pole = self.config, self.config.pole
        self.outbox = stack.enter_context(self._open_outbox())
        self.buses = self._registry.create_buses(
            BusContext(
                config,
                self.table,
                self.audit,
                self._clock_trusted,
                state_dir=self.state_dir,
                report_damage=self.outbox.report_damage,
            )
        )
        # The buses registered their points: last values from before a restart, as stale.
        self.restored = self.store.restore(self.table)
        audit_damage = self.audit.salvage()
        self.control = stack.enter_context(
            PoleControl(
                config,
                self.table,
                self.outbox,
                write=self.buses.write_point,
                device_state=self._device_state,
                state_dir=self.state_dir,
                audit=self.audit,
                clock_trusted=self._clock_trusted,
            )
        )
        self.outbox.watch(self._storage_changed)
        for damage in (self.store.damage, self.control.alarms.store_damage, audit_damage):
            if damage is not None:
                self.outbox.report_damage(damage)  # upstream, once the outbox can take it
        self.cameras = Cameras(pole.cameras, config.path.parent, self.outbox, v2x=pole.v2x)
        self._event_sources()
        # Before READY: the release switcher rewrites the file only after it (see module).
        self.releases = ReleaseHistory(self.state_dir)
        self.releases.report(self.outbox)
        if pole.uplink is not None:
            # Every bus registered (and described) its points above: the description is
            # complete, and its hash ties each telemetry record to it.
            meta = build_meta(self.table.described(), devices_of(config))
            self.uplink = MqttUplink(
                pole.uplink,
                pole_id=pole.pole.id,
                outbox=self.outbox,
                base_dir=config.path.parent,
                meta=meta,
                sessions=SessionCounter(self.state_dir),
            )
            if pole.uplink.telemetry.enabled:
                counters = self._counters()
                stack.callback(counters.save)  # after the last flush below
                self.telemetry = TelemetryReporter(
                    pole.uplink.telemetry,
                    self.table,
                    self.outbox,
                    notify=self.uplink.notify,
                    meta_hash=meta.hash,
                    counters=counters,
                )
                self.telemetry.start()
                stack.callback(self.telemetry.flush)  # queued changes go to the outbox
        opcua = self._opcua()
        self.operations = PoleOperations(
            config,
            table=self.table,
            store=self.store,
            audit=self.audit,
            outbox=self.outbox,
            buses=self.buses,
            control=self.control,
            cameras=self.cameras,
            uplink=self.uplink,
            telemetry=self.telemetry,
            opcua=opcua.status if opcua is not None else None,
            started_at=self.started_at,
            releases=self.releases,
        )
        self.commands = self._command_processor()
        if self.uplink is not None:
            self.uplink.commands = self.commands
        if opcua is not None:
            # Answers to OPC UA calls go up cmd/result like the platform's own commands.
            report = None if self.uplink is None else outbox_report(self.outbox, self.uplink.notify)
            opcua.accept_commands(self.commands.submit if self.commands else _no_commands, report)
            await stack.enter_async_context(opcua)
        api = ApiServer(self.socket_path, handlers(self.operations), config.pole.api)
        self.operations.api = api
        await stack.enter_async_context(api)

    def tasks(self) -> dict[str, Task]:
        """What runs while the pole is up, by task name."""
        tasks: dict[str, Task] = {f"bus:{bus.name}": bus.run for bus in self.buses}
        tasks["outbox"] = self.outbox.run
        tasks.update(self.control.tasks())
        tasks.update(self.cameras.tasks())
        if self.uplink is not None:
            tasks["uplink"] = self.uplink.run
        if self.telemetry is not None:
            tasks["telemetry"] = self.telemetry.run
        return tasks

    # ----- wiring -----

    def _open_outbox(self) -> Outbox:
        uplink = self.config.pole.uplink
        limits = uplink.outbox if uplink is not None else None
        return Outbox(
            self.state_dir,
            max_bytes=limits.max_bytes if limits is not None else None,
            max_age_s=limits.max_age_s if limits is not None else None,
        )

    def _event_sources(self) -> None:
        """Each event source's events go to the outbox once, across restarts too: the
        source resumes from the events already queued (``event_marks.py``)."""
        marks = EventMarks(self.state_dir)
        if marks.damage is not None:
            self.outbox.report_damage(marks.damage)
        for source in self.buses.offering(EventSource):
            bus = cast(BusTask, source)  # every bus is one; a capability is what it adds
            devices = bus.device_names()
            record = EventRecorder(self.outbox, marks, bus.name, devices[0] if devices else None)
            source.add_event_listener(record)
            source.resume_events(marks.resume(bus.name))
            self.event_recorders.append(record)

    def _counters(self) -> CounterWatch:
        """The profiles' counter points, with the highest values published before."""
        devices = self.config.pole.devices
        points = counter_points((name, self.config.profile_of(name)) for name in devices)
        counters = CounterWatch(points, self.outbox, self.state_dir)
        if counters.damage is not None:
            self.outbox.report_damage(counters.damage)
        return counters

    def _storage_changed(self, unavailable: bool, why: str | None) -> None:
        """The outbox file stopped or started working: raise or clear the alarm. Records
        keep flowing either way (held in memory meanwhile), so nothing else changes."""
        self.control.alarms.observe("outbox", STORAGE_ALARM, unavailable, GOOD, time.time())
        if not unavailable:
            for record in self.event_recorders:
                record.settle()

    def _device_state(self, device: str) -> tuple[str, float]:
        """A device's state for power management: a camera fed by it that delivers no
        frames makes it a power-cycle candidate, like a device offline on its bus."""
        since = self.cameras.no_frames_since(device)
        if since is not None:
            return DeviceState.OFFLINE.value, since
        return self.buses.device_state(device)

    def _command_processor(self) -> CommandProcessor | None:
        """Platform commands reach the same operations as the local API, after the
        processor's checks (signature, allow-list, dedupe) and with its audit."""
        uplink = self.config.pole.uplink
        commands = uplink.commands if uplink is not None else None
        if commands is None:
            return None
        for name in ("hmac_key_file", "previous_hmac_key_file"):
            path = getattr(commands, name)
            if path is not None:  # relative to the pole file's folder
                commands = commands.model_copy(update={name: self.config.path.parent / path})
        return CommandProcessor(commands, self.operations, self.audit, self.state_dir)

    def _opcua(self) -> OpcUaServer | None:
        """The OPC UA server, when configured (not yet started)."""
        config = self.config.pole.opcua
        if config is None:
            return None
        # Imported here: asyncua is heavy, and most poles have no OPC UA section.
        from smartpole.agent.uplink.opcua import OpcUaServer
        from smartpole.agent.uplink.opcua_space import valid_ranges

        return OpcUaServer(
            config,
            pole_id=self.config.pole.pole.id,
            table=self.table,
            state_dir=self.state_dir,
            ranges=valid_ranges(self.config),
            alarms=self.control.alarms,
        )


async def _no_commands(
    command: str, args: dict[str, object], *, actor: str, source: str, command_id: str
) -> Mapping[str, Any]:
    return {"id": command_id, "command": command, "status": "rejected", "reason": "not_allowed",
            "error": "no uplink.commands section: no commands", "result": None}  # fmt: skip
