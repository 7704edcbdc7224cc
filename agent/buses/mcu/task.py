"""The task that owns the UART to the cabinet MCU: heartbeat, inputs, events, outputs.

The MCU keeps the pole safe on its own; this task's job is to keep it convinced the agent
is alive (a heartbeat well inside ``fallback_after_s``), to read its inputs into points so
the alarm rules see door, water, tilt and leakage, to hand its events (with the MCU's own
timestamps) to whoever listens, and to carry out writes to its relays and dimming level.

Every output the agent sets is a lease in the MCU, so this task remembers what it set and
renews it well before the lease ends, and sets it again at once when the MCU comes back
from a fallback or a reset: that is what "the agent resumes control" means.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable
from datetime import datetime
from zoneinfo import ZoneInfo

import structlog

from smartpole.agent.buses.capabilities import EventListener, EventResume
from smartpole.agent.buses.kind import BusContext
from smartpole.agent.buses.mcu.config import PoleMcuBus, mcu_config
from smartpole.agent.buses.mcu.meta import point_metas
from smartpole.agent.buses.queue import QueuedPoints
from smartpole.agent.buses.supervised import SupervisedBus
from smartpole.agent.core.audit import AuditRecord
from smartpole.agent.core.health import BusHealth, DeviceHealth, Outcome
from smartpole.agent.core.points import Quality
from smartpole.drivers.errors import (
    DeviceTimeoutError,
    DriverError,
    TransportError,
    WriteRejectedError,
)
from smartpole.drivers.mcu.client import McuClient
from smartpole.drivers.mcu.codes import ErrorCode, EventKind
from smartpole.drivers.mcu.errors import McuCommandError, McuResetError
from smartpole.drivers.mcu.profile import INPUT_POINTS, LEVEL, STATUS_POINTS, TRIPPED
from smartpole.drivers.mcu.results import McuEvent, McuInputs, McuStatus
from smartpole.drivers.schema import Value

log = structlog.get_logger("smartpole.mcu")

IMPACT_HOLD_S = 2.0  # an impact reading stays this long, so a poll-rate alarm sees it
# Events that tell a point's new value before the next poll would.
_EVENT_POINTS: dict[EventKind, tuple[str, bool]] = {
    EventKind.DOOR_OPEN: ("door_open", True),
    EventKind.DOOR_CLOSED: ("door_open", False),
    EventKind.WATER_DETECTED: ("water", True),
    EventKind.WATER_CLEARED: ("water", False),
    EventKind.LEAKAGE_TRIP: (TRIPPED, True),
    EventKind.TRIP_CLEARED: (TRIPPED, False),
    EventKind.FALLBACK_ENTERED: ("fallback", True),
    EventKind.FALLBACK_LEFT: ("fallback", False),
}


class McuBusTask(QueuedPoints, SupervisedBus):
    """One MCU on one UART; survives a dead port, a silent or resetting MCU.

    ``SupervisedBus`` runs it: ``_connect`` opens the port and runs the MCU's connect
    sequence, ``_serve`` keeps the MCU convinced the agent is alive until the port fails
    (TransportError) or the MCU resets (it returns, and the next ``_connect`` reconfigures
    it), and the supervisor's backoff is the only retry: the client never retries itself.
    """

    #: a connect sequence is retried soon at first (an MCU being flashed refuses a while)
    retry_min_s = 0.1

    def __init__(self, name: str, bus: PoleMcuBus, context: BusContext) -> None:
        super().__init__(name, BusHealth(name, bus.port, bus.describe()))
        self.bus = bus
        self._table = table = context.table
        self._audit = context.audit
        self._clock_trusted = context.clock_trusted
        site = context.config.pole.site
        self._zone = ZoneInfo(site.timezone) if site is not None else None
        self._config = mcu_config(bus)
        self._client: McuClient | None = None
        self._desired: dict[str, bool | int] = {}
        self._impact_at: float | None = None
        self._connects_seen = 0
        self._resume = False
        self._fallback = False
        self.last_status: McuStatus | None = None
        self._event_listeners: list[EventListener] = []
        self._event_resume: EventResume | None = None
        self._resumed: dict[str, int] | None = None  # where the last new boot's events began
        devices = list(context.devices_on(name))
        self._poll_period_s = 1.0
        self._device: DeviceHealth | None = None
        if devices:
            device = context.config.pole.devices[devices[0]]
            self._poll_period_s = device.poll_period_s
            self._device = DeviceHealth(
                devices[0], name, "mcu", device.profile, device.offline_after
            )
            stale_s = 3 * max(self._poll_period_s, bus.heartbeat_s) + bus.timeout_s
            points = {**INPUT_POINTS, **STATUS_POINTS, **dict.fromkeys(bus.relays, "")}
            metas = point_metas(bus.relays)
            for point, unit in points.items():
                table.register(devices[0], point, unit, stale_s, metas[point])

    # ----- the BusTask face -----

    @property
    def devices(self) -> list[DeviceHealth]:
        return [self._device] if self._device is not None else []

    def device_names(self) -> list[str]:
        return [self._device.name] if self._device is not None else []

    def read_plan(self) -> dict[str, object]:
        if self._device is None:
            return {}
        return {
            self._device.name: [
                f"heartbeat every {self.bus.heartbeat_s} s "
                f"(the MCU falls back after {self.bus.fallback_after_s} s)",
                f"inputs every {self._poll_period_s} s",
                "events as the MCU pushes or announces them",
            ]
        }

    def add_event_listener(self, listener: EventListener) -> None:
        """``listener`` gets every new MCU event once, on the loop; it must not block."""
        self._event_listeners.append(listener)

    def resume_events(self, resume: EventResume) -> None:
        """``resume`` says which events of a boot the listeners already hold; set before
        the task runs."""
        self._event_resume = resume

    def _resume_from(self, boot_id: int) -> tuple[int, Iterable[int]]:
        cursor, taken = self._event_resume(boot_id) if self._event_resume is not None else (0, ())
        taken = frozenset(taken)
        self._resumed = {"boot_id": boot_id, "after": cursor, "also_held": len(taken)}
        if cursor or taken:
            log.info("mcu_events_resumed", bus=self.name, boot_id=boot_id, after=cursor)
        return cursor, taken

    def diagnostics(self) -> dict[str, object]:
        """The link's and the MCU's state for ``smartpole diag mcu``."""
        client = self._client
        identity = client.identity if client is not None else None
        return {
            "bus": self.name,
            "port": self.bus.port,
            "connected": bool(client is not None and client.connected),
            "identity": vars(identity) if identity is not None else None,
            "status": vars(self.last_status) if self.last_status is not None else None,
            "desired": dict(self._desired),
            "events_resumed": self._resumed,
            "client": dataclasses.asdict(client.stats) if client is not None else None,
        }

    # ----- the link (SupervisedBus) -----

    async def _connect(self) -> None:
        client = self._client
        if client is None:
            client = McuClient(
                self.bus.port,
                self._config,
                baudrate=self.bus.baudrate,
                request_timeout_s=self.bus.timeout_s,  # the whole request, resends included
                attempts=self.bus.retries + 1,
                ready_timeout_s=max(5.0, self.bus.fallback_after_s),
                on_event=self._on_event,
                event_resume=self._resume_from,
            )
            client.open()  # TransportError: the port is unusable
            self._client = client
            self.health.connected()  # the line is up, whatever the MCU says on it
        started = time.monotonic()
        identity = await client.connect()
        self._succeeded(started)
        log.info(
            "mcu_connected",
            bus=self.name,
            build=identity.build,
            boot_id=identity.boot_id,
            resumed=identity.resumed,
            config_crc=f"{identity.config_crc:08x}",
        )

    def _connect_failed(self, exc: DriverError) -> None:
        if isinstance(exc, TransportError):
            self._link_lost(str(exc))
        else:  # the port works; the MCU is silent, resetting or refused the session
            self._failed(exc, time.monotonic())

    async def _disconnect(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def _serve(self) -> None:
        """Heartbeats, inputs and lease renewals until the port fails or the MCU resets."""
        client = self._client
        assert client is not None  # _connect made it
        next_heartbeat = next_poll = next_refresh = time.monotonic()
        while True:
            now = time.monotonic()
            started = now
            try:
                if now >= next_heartbeat:
                    next_heartbeat = now + self.bus.heartbeat_s
                    await self._heartbeat(client)
                if now >= next_poll:
                    next_poll = now + self._poll_period_s
                    self._store_inputs(await client.get_inputs())
                    self._succeeded(started)
                if self._resume_needed(client) or now >= next_refresh:
                    next_refresh = now + self._refresh_s()
                    await self._renew(client)
            except TransportError:
                raise
            except McuResetError:
                return  # its session is over: the supervisor connects again, at once
            except DriverError as exc:
                self._failed(exc, started)
            wait = min(next_heartbeat, next_poll, next_refresh) - time.monotonic()
            await self.commands.run_next(wait)

    async def _heartbeat(self, client: McuClient) -> None:
        trusted = self._clock_trusted()
        now = datetime.now(self._zone) if self._zone is not None else datetime.now().astimezone()
        offset = now.utcoffset()
        status = await client.heartbeat(
            int(now.timestamp()) if trusted else 0,
            int(offset.total_seconds() // 60) if offset is not None else 0,
        )
        self._store_status(status)

    def _resume_needed(self, client: McuClient) -> bool:
        """After a (re)connect or a fallback the MCU dropped our setpoints: set them again."""
        connects = client.stats.connects
        if connects != self._connects_seen or self._resume:
            self._connects_seen = connects
            self._resume = False
            return True
        return False

    def _refresh_s(self) -> float:
        leases = [self.bus.level_lease_s] if LEVEL in self._desired else []
        leases += [
            relay.lease_s
            for name, relay in self.bus.relays.items()
            if name in self._desired and relay.lease_s > 0
        ]
        return max(0.1, min(leases, default=60.0) / 3)

    async def _renew(self, client: McuClient) -> None:
        for point, value in list(self._desired.items()):
            await self._apply(client, point, value)

    async def _apply(self, client: McuClient, point: str, value: bool | int) -> Value:
        if point == LEVEL:
            state = await client.set_level(int(value))
            self._update(LEVEL, state.level)
            return state.level
        relay = self.bus.relays[point]
        relays = await client.set_relay(relay.channel, bool(value))
        on = relays.is_on(relay.channel)
        self._update(point, on)
        self._update(TRIPPED, relays.tripped)
        return on

    # ----- readings to points -----

    def _update(self, point: str, value: Value, quality: Quality = Quality.GOOD) -> None:
        if self._device is not None:
            self._table.update(self._device.name, point, value, quality)

    def _update_many(self, readings: list[tuple[str, Value, Quality]]) -> None:
        """Values of one answer: one acquisition time, one telemetry block."""
        if self._device is not None:
            self._table.update_many(self._device.name, readings)

    def _store_inputs(self, inputs: McuInputs) -> None:
        good = Quality.GOOD
        dark = inputs.photocell_dark
        readings: list[tuple[str, Value, Quality]] = [
            ("door_open", inputs.door_open, good),
            ("water", inputs.water, good),
            ("photocell_dark", bool(dark), good if dark is not None else Quality.BAD),
            ("tilt_x", inputs.tilt_x_deg, good),
            ("tilt_y", inputs.tilt_y_deg, good),
            ("leakage", inputs.leakage_ma, good),
            ("temperature", inputs.temperature_c, good),
            ("supply_voltage", inputs.supply_v, good),
        ]
        if self._impact_at is None or time.monotonic() - self._impact_at > IMPACT_HOLD_S:
            self._impact_at = None
            readings.append(("impact", 0.0, good))
        self._update_many(readings)

    def _store_status(self, status: McuStatus) -> None:
        if status.fallback != self._fallback:
            self._fallback = status.fallback
            log.warning("mcu_fallback" if status.fallback else "mcu_fallback_left", bus=self.name)
        self.last_status = status
        good = Quality.GOOD
        readings: list[tuple[str, Value, Quality]] = [
            (LEVEL, status.level, good),
            ("fallback", status.fallback, good),
            (TRIPPED, status.tripped, good),
        ]
        readings += [
            (name, relay.channel in status.relays_on, good)
            for name, relay in self.bus.relays.items()
        ]
        self._update_many(readings)

    def _on_event(self, event: McuEvent) -> None:
        kind = event.kind.name.lower() if isinstance(event.kind, EventKind) else event.kind
        log.info(
            "mcu_event",
            bus=self.name,
            id=event.id,
            kind=kind,
            value=event.value,
            mcu_uptime_ms=event.uptime_ms,
            mcu_time=event.unix_time,
        )
        if isinstance(event.kind, EventKind) and event.kind in _EVENT_POINTS:
            point, value = _EVENT_POINTS[event.kind]
            self._update(point, value)
        if event.kind is EventKind.FALLBACK_LEFT:
            self._resume = True  # the fallback dropped our setpoints: set them again
        if event.kind is EventKind.IMPACT:
            self._impact_at = time.monotonic()
            self._update("impact", event.value / 1000)
        for listener in self._event_listeners:
            listener(event)

    # ----- health -----

    def _succeeded(self, started: float) -> None:
        self.health.record(Outcome.OK, time.monotonic() - started)
        if self._device is not None:
            self._device.poll_succeeded()

    def _failed(self, exc: DriverError, started: float) -> None:
        outcome = Outcome.TIMEOUT if isinstance(exc, DeviceTimeoutError) else Outcome.ERROR
        if isinstance(exc, McuCommandError):
            outcome = Outcome.EXCEPTION
        self.health.record(outcome, time.monotonic() - started)
        if self._device is not None:
            self._device.poll_failed(str(exc))

    # ----- commands -----

    async def _read_point(self, device_name: str, point: str) -> object:
        self._check_device(device_name)
        client = self._require_client()
        if point in INPUT_POINTS:
            self._store_inputs(await client.get_inputs())
        sample = self._table.sample(device_name, point)
        if sample is None:
            raise WriteRejectedError(f"the MCU has no point {point!r}")
        return sample.value

    async def _write_point(
        self, device_name: str, point: str, value: object, actor: str, audit: bool
    ) -> object:
        record = AuditRecord(actor, "write", f"{device_name}.{point}", value)
        try:
            self._check_device(device_name)
            read_back = await self._write(point, value)
        except (DriverError, ValueError) as exc:
            record.error = str(exc)
            self._audit.record(record)
            raise
        record.ok = True
        record.read_back = read_back
        if audit:
            self._audit.record(record)
        return read_back

    async def _write(self, point: str, value: object) -> Value:
        client = self._require_client()
        if point == TRIPPED:
            if value not in (False, 0):
                raise WriteRejectedError("only tripped = false (release the trip) can be written")
            try:
                status = await client.clear_trip()
            except McuCommandError as exc:
                if exc.error_code is ErrorCode.TRIPPED:
                    raise WriteRejectedError(
                        "the leakage current is still above the MCU's trip level"
                    ) from exc
                raise
            self._store_status(status)
            return status.tripped
        if point == LEVEL:
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 100:
                raise WriteRejectedError(f"level must be an integer 0..100, got {value!r}")
            checked: bool | int = value
        elif point in self.bus.relays:
            if value not in (True, False, 0, 1):
                raise WriteRejectedError(f"relay {point} takes true or false, got {value!r}")
            checked = bool(value)
        else:
            raise WriteRejectedError(f"the MCU's point {point!r} is not writable")
        self._desired[point] = checked
        read_back = await self._apply(client, point, checked)
        if point != LEVEL and checked and read_back is False:
            raise WriteRejectedError(
                f"relay {point} is held off by the MCU's leakage trip "
                "(release it with: smartpole diag write <mcu> tripped false)"
            )
        return read_back

    def _check_device(self, device_name: str) -> None:
        if self._device is None or device_name != self._device.name:
            raise WriteRejectedError(f"no MCU device {device_name!r} on bus {self.name}")

    def _require_client(self) -> McuClient:
        client = self._client
        if client is None or not client.connected:
            raise TransportError(f"the MCU on {self.bus.port} is not connected")
        return client
