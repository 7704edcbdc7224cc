"""The task that owns one Modbus RTU bus and polls every device on it.

One owner per bus: RS-485 is half duplex, so requests from two tasks would collide on the
wire. The task keeps each device's schedule, turns registers into points through the
device's profile, and keeps the health records that diagnostics show.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import structlog

from smartpole.agent.config.loader import LoadedConfig
from smartpole.agent.config.pole import DeviceConfig, ModbusRtuBus
from smartpole.agent.health import BusHealth, DeviceHealth, DeviceState
from smartpole.agent.points import PointTable, Quality
from smartpole.drivers.errors import (
    CodecError,
    DeviceExceptionError,
    DeviceTimeoutError,
    DriverError,
    TransportError,
)
from smartpole.drivers.modbus import codec
from smartpole.drivers.modbus.client import ModbusRtuClient
from smartpole.drivers.modbus.plan import ReadBlock, plan_reads
from smartpole.drivers.profile import ModbusProfile

log = structlog.get_logger("smartpole.bus")

PORT_RETRY_MIN_S = 1.0
PORT_RETRY_MAX_S = 30.0
OFFLINE_PROBE_MAX_S = 60.0
STALE_AFTER_PERIODS = 3


@dataclass
class _Device:
    name: str
    config: DeviceConfig
    profile: ModbusProfile
    plan: list[ReadBlock]
    health: DeviceHealth
    next_due: float = 0.0


class ModbusRtuBusTask:
    """Polls the devices of one bus until cancelled; survives every device or port failure."""

    def __init__(self, name: str, bus: ModbusRtuBus, config: LoadedConfig, table: PointTable):
        self.name = name
        self._bus = bus
        self._table = table
        self.health = BusHealth(name, bus.port, bus.describe())
        self._devices: list[_Device] = []
        for device_name, device in config.pole.devices.items():
            if device.bus != name:
                continue
            profile = config.modbus_profile_of(device_name)
            stale_after = device.poll_period_s * STALE_AFTER_PERIODS + bus.timeout_s
            for point, spec in profile.points.items():
                table.register(device_name, point, spec.unit, stale_after)
            health = DeviceHealth(
                device_name, name, device.unit_id, device.profile, device.offline_after
            )
            plan = plan_reads(profile.points, profile.limits)
            self._devices.append(_Device(device_name, device, profile, plan, health))

    @property
    def devices(self) -> list[DeviceHealth]:
        return [device.health for device in self._devices]

    def read_plan(self) -> dict[str, list[dict[str, object]]]:
        return {
            device.name: [
                {"kind": b.kind.value, "address": b.address, "count": b.count, "points": b.points}
                for b in device.plan
            ]
            for device in self._devices
        }

    async def run(self) -> None:
        if not self._devices:
            return
        client = ModbusRtuClient(
            self._bus.port,
            baudrate=self._bus.baudrate,
            bytesize=self._bus.bytesize,
            parity=self._bus.parity,
            stopbits=self._bus.stopbits,
            timeout_s=self._bus.timeout_s,
        )
        retry_s = PORT_RETRY_MIN_S
        try:
            while True:
                try:
                    await client.connect()
                except TransportError as exc:
                    self._port_lost(str(exc))
                    await asyncio.sleep(retry_s)
                    retry_s = min(retry_s * 2, PORT_RETRY_MAX_S)
                    continue
                retry_s = PORT_RETRY_MIN_S
                self.health.connected()
                try:
                    await self._poll_forever(client)
                except TransportError as exc:
                    client.close()
                    self._port_lost(str(exc))
        finally:
            client.close()

    def _port_lost(self, error: str) -> None:
        self.health.unavailable(error)
        for device in self._devices:
            self._table.mark_bad(device.name)

    async def _poll_forever(self, client: ModbusRtuClient) -> None:
        now = time.monotonic()
        for device in self._devices:
            device.next_due = now
        while True:
            device = min(self._devices, key=lambda d: d.next_due)
            delay = device.next_due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)  # the schedule itself, not synchronisation
            await self._poll(client, device)

    async def _poll(self, client: ModbusRtuClient, device: _Device) -> None:
        period = device.config.poll_period_s
        health = device.health
        try:
            for block in device.plan:
                started = time.monotonic()
                words = await client.read(
                    block.kind, block.address, block.count, device.config.unit_id
                )
                health.succeeded(time.monotonic() - started)
                self._store(device, block, words)
        except TransportError:
            raise
        except DriverError as exc:
            self._count(health, exc)
            if health.poll_failed(str(exc)) or health.state is DeviceState.OFFLINE:
                self._table.mark_bad(device.name)
            if health.state is DeviceState.OFFLINE:
                missed = health.consecutive_failures - device.config.offline_after
                period = min(period * 2 ** (missed + 1), max(period, OFFLINE_PROBE_MAX_S))
        else:
            health.poll_succeeded()
        device.next_due = max(device.next_due + period, time.monotonic())

    @staticmethod
    def _count(health: DeviceHealth, exc: DriverError) -> None:
        health.requests += 1
        if isinstance(exc, DeviceTimeoutError):
            health.timeouts += 1
        elif isinstance(exc, DeviceExceptionError):
            health.exceptions += 1
        else:
            health.errors += 1

    def _store(self, device: _Device, block: ReadBlock, words: list[int]) -> None:
        for point in block.points:
            spec = device.profile.points[point]
            offset = spec.address - block.address
            try:
                value = codec.decode(spec, words[offset : offset + spec.register_count])
            except CodecError as exc:
                log.warning("point_decode_failed", device=device.name, point=point, error=str(exc))
                continue
            quality = Quality.GOOD
            if spec.valid_range is not None and not (
                spec.valid_range[0] <= float(value) <= spec.valid_range[1]
            ):
                quality = Quality.UNCERTAIN
            self._table.update(device.name, point, value, quality)
