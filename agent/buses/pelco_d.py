"""Pelco-D PTZ cameras as a bus protocol: the bus config, the task that owns one such bus,
and the declaration that registers both.

Pelco-D has nothing to poll, so a camera's health comes from position queries where the
camera supports them; commands (go to preset, stop) jump the queue like any other, and
each is audited with the position read back afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from smartpole.agent.buses.capabilities import Ptz
from smartpole.agent.buses.kind import (
    BusContext,
    BusKind,
    ServedDevice,
    SimContext,
    SimulatedBus,
)
from smartpole.agent.buses.polled import PolledBus, PolledDevice
from smartpole.agent.config.buses import Addressing, Baudrate, SerialBusConfig
from smartpole.agent.core.audit import AuditRecord
from smartpole.agent.core.errors import UsageError
from smartpole.agent.core.health import BusHealth, DeviceHealth
from smartpole.agent.core.point_meta import PointMeta
from smartpole.agent.core.points import Quality
from smartpole.drivers.errors import DriverError
from smartpole.drivers.pelco_d.client import PelcoDClient
from smartpole.drivers.pelco_d.profile import PelcoDProfile

POSITION_POINTS = {"pan": "°", "tilt": "°"}
# The extended position queries answer in hundredths of a degree (0x59/0x5B responses).
POSITION_META = {
    point: PointMeta(
        type="number", wire="u16 (0.01 deg)", resolution=0.01, description=f"{point} position"
    )
    for point in POSITION_POINTS
}


class PelcoDBus(SerialBusConfig):
    """An RS-485 line of Pelco-D cameras, told apart by their camera address (1-255)."""

    addressing: ClassVar = Addressing("address", "a pelco-d address", 1, 255)
    profile_protocol: ClassVar = "pelco-d"

    type: Literal["pelco-d"]
    baudrate: Baudrate = 2400

    def describe(self) -> str:
        return f"Pelco-D {self.settings()}"


@dataclass(kw_only=True)
class _Camera(PolledDevice):
    profile: PelcoDProfile
    address: int


class PelcoDBusTask(PolledBus[_Camera]):
    def __init__(self, name: str, bus: PelcoDBus, context: BusContext) -> None:
        super().__init__(
            name,
            BusHealth(name, bus.endpoint, bus.describe()),
            context.table,
            retries=bus.retries,
            silence_s=0.0,
        )
        self._audit = context.audit
        profiles: dict[int, PelcoDProfile] = {}
        for device_name, device in context.devices_on(name).items():
            profile = context.config.profile_of(device_name)
            if not isinstance(profile, PelcoDProfile):
                raise TypeError(f"device {device_name} is on a Pelco-D bus")
            address = int(device.address or "1")
            profiles[address] = profile
            health = DeviceHealth(
                device_name, name, f"camera {address}", device.profile, device.offline_after
            )
            if profile.supports_position_query:
                for point, unit in POSITION_POINTS.items():
                    context.table.register(
                        device_name,
                        point,
                        unit,
                        device.poll_period_s * 3 + bus.timeout_s,
                        POSITION_META[point],
                    )
            self._devices[device_name] = _Camera(
                name=device_name, config=device, health=health, profile=profile, address=address
            )
        self._client = PelcoDClient(
            bus.port,
            baudrate=bus.baudrate,
            parity=bus.parity,
            stopbits=bus.stopbits,
            timeout_s=bus.timeout_s,
            profiles=profiles,
        )

    def read_plan(self) -> dict[str, object]:
        return {
            camera.name: ["query pan", "query tilt"]
            if camera.profile.supports_position_query
            else []
            for camera in self._devices.values()
        }

    async def _connect(self) -> None:
        if not self._client.is_open:
            self._client.open()

    async def _disconnect(self) -> None:
        self._client.close()

    async def _poll_device(self, device: _Camera, *, probe: bool) -> None:
        if not device.profile.supports_position_query:
            return  # nothing to ask: the camera's health stays as commands leave it
        position = await self._request(
            device,
            lambda: self._client.query_position(device.address, required=True),
            retries=0 if probe else None,
        )
        if position is not None:
            self._store(device, position)

    def _store(self, device: _Camera, position: tuple[int, int]) -> None:
        pan, tilt = position
        self._table.update(device.name, "pan", pan / 100, Quality.GOOD)
        self._table.update(device.name, "tilt", tilt / 100, Quality.GOOD)

    async def go_to_preset(self, device_name: str, preset: int, actor: str) -> object:
        return await self.commands.submit(lambda: self._go_to_preset(device_name, preset, actor))

    async def _go_to_preset(self, device_name: str, preset: int, actor: str) -> object:
        camera = self._devices.get(device_name)
        if camera is None:
            raise UsageError(f"no camera {device_name!r} on bus {self.name}")
        record = AuditRecord(actor, "ptz_preset", device_name, preset)
        try:
            position = await self._client.go_to_preset(camera.address, preset, verify=True)
        except (DriverError, ValueError) as exc:
            record.error = str(exc)
            self._audit.record(record)
            if isinstance(exc, ValueError):  # a preset the camera's profile does not allow
                raise UsageError(str(exc)) from exc
            raise
        record.ok = True
        record.read_back = (
            None if position is None else {"pan": position[0] / 100, "tilt": position[1] / 100}
        )
        if position is not None:
            self._store(camera, position)
        self._audit.record(record)
        return record.read_back


async def simulate(name: str, bus: PelcoDBus, context: SimContext) -> SimulatedBus:
    """The bus's cameras on one pty, each at its preset 1 until told otherwise."""
    from smartpole.drivers.sim.pelco_d import (  # the daemon never simulates
        PelcoDPtyServer,
        SimulatedCamera,
    )

    cameras: dict[int, SimulatedCamera] = {}
    for device_name, device in context.devices_on(name).items():
        profile = context.config.profile_of(device_name)
        assert isinstance(profile, PelcoDProfile)  # the config check matched it to the bus
        cameras[int(device.address or "1")] = SimulatedCamera(profile)
    server = await context.stack.enter_async_context(
        PelcoDPtyServer(cameras, baudrate=bus.baudrate, turnaround_s=context.turnaround_s)
    )
    devices = {
        device_name: ServedDevice(server, int(device.address or "1"))
        for device_name, device in context.devices_on(name).items()
    }
    return SimulatedBus(server.where, devices)


KIND = BusKind(
    name="pelco-d",
    configs=(PelcoDBus,),
    profile=PelcoDProfile,
    task=PelcoDBusTask,
    simulator=simulate,
    capabilities=frozenset({Ptz}),
)
