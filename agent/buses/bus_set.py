"""The buses of one pole at run time: who owns which device and what each bus can do.

Callers ask for a capability of a device ("who can write ``relays``?") and get the bus
task that offers it, typed as that capability, or a ``RequestError`` that says why not;
the protocol plug-ins declare their capabilities (``BusKind.capabilities``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, cast

from smartpole.agent.buses.capabilities import BusTask, Writable
from smartpole.agent.core.errors import RequestError
from smartpole.agent.core.health import BusState, DeviceState

if TYPE_CHECKING:
    from smartpole.agent.buses.kind import BusKind

T = TypeVar("T")

# A link lost this recently is a problem a technician should see, even if it is back.
RECENT_LINK_LOSS_S = 600.0


class BusSet:
    """The pole's bus tasks, in config order, with the kind each was made from."""

    def __init__(self, tasks: Sequence[tuple[BusTask, BusKind[Any]]]) -> None:
        self._tasks = [task for task, _ in tasks]
        self._kinds = {task.name: kind for task, kind in tasks}
        self._by_device = {device: task for task in self._tasks for device in task.device_names()}

    def __iter__(self) -> Iterator[BusTask]:
        return iter(self._tasks)

    def __len__(self) -> int:
        return len(self._tasks)

    # ----- lookups -----

    def bus_of(self, device: str) -> BusTask:
        bus = self._by_device.get(device)
        if bus is None:
            raise RequestError(f"no device {device!r} on this pole")
        return bus

    def capable(self, device: str, capability: type[T], cannot: str) -> T:
        """The bus of ``device`` as ``capability``; RequestError ``cannot`` if it has none."""
        bus = self.bus_of(device)
        if capability not in self._kinds[bus.name].capabilities:
            raise RequestError(cannot.format(device=device, bus=bus.name))
        return cast(T, bus)

    def offering(self, capability: type[T]) -> list[T]:
        """Every bus that offers ``capability``."""
        return [
            cast(T, bus) for bus in self._tasks if capability in self._kinds[bus.name].capabilities
        ]

    async def write_point(
        self, device: str, point: str, value: object, actor: str, *, audit: bool = True
    ) -> object:
        """Write one point through the bus that owns the device (checked, read back, audited)."""
        bus = self.capable(device, Writable, "no writable device {device!r}")
        return await bus.write_point(device, point, value, actor, audit=audit)

    # ----- health -----

    def device_state(self, device: str) -> tuple[str, float]:
        """The device's state and since when (epoch seconds), for power management."""
        for bus in self._tasks:
            for health in bus.devices:
                if health.name == device:
                    return health.state.value, health.state_since
        return DeviceState.UNKNOWN.value, time.time()

    def summary(self) -> str:
        devices = [device for bus in self._tasks for device in bus.devices]
        online = sum(device.state is DeviceState.ONLINE for device in devices)
        down = [bus.name for bus in self._tasks if bus.health.state is BusState.PORT_UNAVAILABLE]
        text = f"{online}/{len(devices)} devices online on {len(self._tasks)} bus(es)"
        return text + (f"; port unavailable: {', '.join(down)}" if down else "")

    def problems(self) -> list[str]:
        problems = []
        for bus in self._tasks:
            if bus.health.state is BusState.PORT_UNAVAILABLE:
                problems.append(f"bus {bus.name}: {bus.health.endpoint}: {bus.health.last_error}")
            ago = bus.health.link_lost_within(RECENT_LINK_LOSS_S)
            if ago is not None:
                problems.append(
                    f"bus {bus.name}: link lost {bus.health.link_losses} times, last "
                    f"{ago:.0f} s ago ({bus.health.connects} connects)"
                )
            if bus.health.state_write_failures:
                problems.append(
                    f"bus {bus.name}: what it learnt of its devices could not be saved "
                    f"({bus.health.state_write_failures} failed writes)"
                )
            for device in bus.devices:
                if device.down:
                    problems.append(
                        f"device {device.name} ({device.address} on {bus.name}) "
                        f"{device.state.value}: {device.last_error}"
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
        return problems
