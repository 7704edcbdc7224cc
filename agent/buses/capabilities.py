"""What a bus task is, and what some of them can also do.

Every bus task shows the same face to the daemon (``BusTask``). What a bus can do beyond
polling differs by protocol: Modbus and the MCU read and write points, Pelco-D moves a
camera, the MCU reports its link and pushes events. Each protocol's plug-in declares its
capabilities (``BusKind.capabilities``) and ``BusSet.capable`` looks them up, so callers
ask "who can write this device?" instead of testing classes or attributes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol, runtime_checkable

from smartpole.agent.buses.queue import CommandQueue
from smartpole.agent.core.health import BusHealth, DeviceHealth
from smartpole.drivers.mcu.results import McuEvent


class BusTask(Protocol):
    """The face every bus task shows the daemon, the API and the diagnostics."""

    name: str
    health: BusHealth
    commands: CommandQueue

    @property
    def devices(self) -> list[DeviceHealth]: ...

    def device_names(self) -> list[str]: ...

    def read_plan(self) -> dict[str, object]: ...

    async def run(self) -> None: ...


@runtime_checkable
class Readable(Protocol):
    """Reads one point now, ahead of the polls (``diag read``)."""

    async def read_point(self, device: str, point: str) -> object: ...


@runtime_checkable
class Writable(Protocol):
    """Writes one point, checked against the device's limits, read back and audited."""

    async def write_point(
        self, device: str, point: str, value: object, actor: str, *, audit: bool = True
    ) -> object: ...


@runtime_checkable
class Ptz(Protocol):
    """Moves a camera to a preset and reports where it ended up."""

    async def go_to_preset(self, device: str, preset: int, actor: str) -> object: ...


@runtime_checkable
class Diagnosable(Protocol):
    """Reports the state of its link and device beyond the health counters (``diag mcu``)."""

    def diagnostics(self) -> dict[str, object]: ...


EventListener = Callable[[McuEvent], None]
# For a boot_id: the highest event id up to which the listeners hold every event durably,
# and the ids above it they hold too.
EventResume = Callable[[int], tuple[int, Iterable[int]]]


@runtime_checkable
class EventSource(Protocol):
    """Pushes events with the device's own timestamps (the cabinet MCU). An event is
    identified by ``(boot_id, id)``; ``resume_events`` tells the source which events its
    listeners already hold, so a restarted daemon does not hand them on again."""

    def add_event_listener(self, listener: EventListener) -> None: ...

    def resume_events(self, resume: EventResume) -> None: ...
