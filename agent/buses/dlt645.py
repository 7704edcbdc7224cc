"""DL/T 645-2007 energy meters as a bus protocol: the bus config, the task that owns one
such bus, and the declaration that registers both.

DL/T 645 reads one data identifier per request, so a cycle is one request per point; the
shared base gives it the same schedule, offline probing and counters as Modbus.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import ClassVar, Literal

from pydantic import Field

from smartpole.agent.buses.kind import (
    BusContext,
    BusKind,
    ServedDevice,
    SimContext,
    SimulatedBus,
)
from smartpole.agent.buses.polled import STALE_AFTER_PERIODS, PolledBus, PolledDevice
from smartpole.agent.config.buses import Addressing, Baudrate, SerialBusConfig
from smartpole.agent.core.health import BusHealth, DeviceHealth, Outcome
from smartpole.agent.core.point_meta import PointMeta
from smartpole.agent.core.points import Quality
from smartpole.drivers.dlt645.client import Dlt645Client
from smartpole.drivers.dlt645.profile import Dlt645PointSpec, Dlt645Profile
from smartpole.drivers.errors import DeviceTimeoutError, DriverError
from smartpole.drivers.line import frame_gap_s


class Dlt645Bus(SerialBusConfig):
    """An RS-485 line of DL/T 645-2007 meters, told apart by their 12-digit addresses."""

    addressing: ClassVar = Addressing("address", "a dlt645 address")
    profile_protocol: ClassVar = "dlt645"

    type: Literal["dlt645"]
    baudrate: Baudrate = 2400
    parity: Literal["N", "E", "O"] = "E"
    timeout_s: float = Field(1.0, gt=0, le=10)

    def describe(self) -> str:
        return f"DL/T 645-2007 {self.settings()}"


@dataclass(kw_only=True)
class _Meter(PolledDevice):
    profile: Dlt645Profile
    address: str


class Dlt645BusTask(PolledBus[_Meter]):
    def __init__(self, name: str, bus: Dlt645Bus, context: BusContext) -> None:
        super().__init__(
            name,
            BusHealth(name, bus.endpoint, bus.describe()),
            context.table,
            retries=bus.retries,
            silence_s=frame_gap_s(bus.baudrate) + bus.frame_gap_ms / 1000,
        )
        self._bus = bus
        self._client = Dlt645Client(
            bus.port,
            baudrate=bus.baudrate,
            parity=bus.parity,
            stopbits=bus.stopbits,
            timeout_s=bus.timeout_s,
        )
        self._errors_before = (0, 0)
        for device_name, device in context.devices_on(name).items():
            profile = context.config.profile_of(device_name)
            if not isinstance(profile, Dlt645Profile):
                raise TypeError(f"device {device_name} is on a DL/T 645 bus")
            address = (device.address or "").zfill(12)
            stale_after = device.poll_period_s * STALE_AFTER_PERIODS + bus.timeout_s
            for point, spec in profile.points.items():
                context.table.register(device_name, point, spec.unit, stale_after, point_meta(spec))
            health = DeviceHealth(device_name, name, address, device.profile, device.offline_after)
            self._devices[device_name] = _Meter(
                name=device_name, config=device, health=health, profile=profile, address=address
            )

    def read_plan(self) -> dict[str, object]:
        return {
            meter.name: [
                {"di": f"{spec.di:08X}", "point": point}
                for point, spec in meter.profile.points.items()
            ]
            for meter in self._devices.values()
        }

    async def _connect(self) -> None:
        if not self._client.is_open:
            await self._client.open()

    async def _disconnect(self) -> None:
        self._client.close()

    def _late_answers(self) -> tuple[int, int]:
        return self._client.late_frames, 0  # bytes that are no frame count as garbage

    def _outcome_of(self, exc: DriverError) -> Outcome:
        crc, garbage = self._client.crc_errors, self._client.garbage_bytes
        before_crc, before_garbage = self._errors_before
        if isinstance(exc, DeviceTimeoutError):
            if crc > before_crc:
                return Outcome.CRC_ERROR
            if garbage > before_garbage:
                return Outcome.GARBAGE
        return super()._outcome_of(exc)

    async def _poll_device(self, device: _Meter, *, probe: bool) -> None:
        points = list(device.profile.points.items())
        for point, spec in points[:1] if probe else points:
            self._errors_before = (self._client.crc_errors, self._client.garbage_bytes)
            value = await self._request(
                device,
                partial(self._client.read, device.address, spec.di, spec),
                retries=0 if probe else None,
            )
            quality = Quality.GOOD
            if (
                spec.valid_range is not None
                and not spec.valid_range[0] <= value <= spec.valid_range[1]
            ):
                quality = Quality.UNCERTAIN
                device.health.suspect_values += 1
            self._table.update(device.name, point, value, quality)


def point_meta(spec: Dlt645PointSpec) -> PointMeta:
    """A meter's value is always a number (BCD with its decimals); meters are read-only here."""
    signed = "signed " if spec.signed else ""
    return PointMeta(
        type="number",
        wire=f"{signed}bcd {spec.format}",
        description=spec.description,
        valid_range=spec.valid_range,
        resolution=spec.effective_resolution,
        counter=spec.monotonic,
    )


async def simulate(name: str, bus: Dlt645Bus, context: SimContext) -> SimulatedBus:
    """The bus's meters on one pty, their values drifting or the profile's first vector."""
    from smartpole.drivers.sim.dlt645 import (  # the daemon never simulates
        Dlt645PtyServer,
        SimulatedMeter,
    )

    meters: dict[str, SimulatedMeter] = {}
    addresses: dict[str, str] = {}
    for offset, (device_name, device) in enumerate(context.devices_on(name).items()):
        profile = context.config.profile_of(device_name)
        assert isinstance(profile, Dlt645Profile)  # the config check matched it to the bus
        meter = SimulatedMeter(profile, seed=context.seed + offset)
        if context.values == "vectors" and profile.test_vectors:
            for point, value in profile.test_vectors[0].expect.items():
                meter.set_value(point, value)
        address = (device.address or "").zfill(12)
        meters[address] = meter
        addresses[device_name] = address
    server = await context.stack.enter_async_context(
        Dlt645PtyServer(
            meters, baudrate=bus.baudrate, turnaround_s=context.turnaround_s, seed=context.seed
        )
    )
    walk = context.values == "walk"
    devices = {
        device_name: ServedDevice(server, address, meters[address], walk=walk)
        for device_name, address in addresses.items()
    }
    return SimulatedBus(server.where, devices)


KIND = BusKind(
    name="dlt645",
    configs=(Dlt645Bus,),
    profile=Dlt645Profile,
    task=Dlt645BusTask,
    simulator=simulate,
)
