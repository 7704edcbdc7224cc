"""A bus protocol as a plug-in: everything the agent needs to know of it, in one declaration.

Each protocol's module (``agent/buses/<protocol>``) declares ``KIND = BusKind(...)``: its
bus config models (their ``type`` literals, addressing and profile protocol are class
variables of the models), the profile model of its devices, the task class that owns one
such bus, how ``smartpole sim`` simulates one, and the capabilities its task offers. The
registry (``registry.py``) finds every ``KIND`` and builds the config unions, the bus
tasks, the simulators and the capability lookups from them; nothing else names a protocol.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar, runtime_checkable

from smartpole.agent.buses.capabilities import BusTask
from smartpole.agent.config.buses import BusConfig
from smartpole.agent.config.loader import LoadedConfig, tag_of
from smartpole.agent.config.pole import DeviceConfig
from smartpole.agent.core.audit import AuditLog
from smartpole.agent.core.points import PointTable
from smartpole.agent.core.quarantine import Damage
from smartpole.drivers.schema import ProfileInfo

if TYPE_CHECKING:
    from contextlib import AsyncExitStack

C = TypeVar("C", bound=BusConfig)
C_contra = TypeVar("C_contra", bound=BusConfig, contravariant=True)


@dataclass(frozen=True)
class BusContext:
    """What a bus task is made from besides its own bus config."""

    config: LoadedConfig
    table: PointTable
    audit: AuditLog
    clock_trusted: Callable[[], bool]
    # Where a bus keeps what it learns of its devices (None: memory only), and where a
    # damaged state file's report goes (the outbox, upstream).
    state_dir: Path | None = None
    report_damage: Callable[[Damage], None] | None = None

    def devices_on(self, bus: str) -> dict[str, DeviceConfig]:
        return {name: d for name, d in self.config.pole.devices.items() if d.bus == bus}


class TaskFactory(Protocol[C_contra]):
    """A bus task class: ``Task(bus_name, bus_config, context)``."""

    def __call__(self, name: str, bus: C_contra, context: BusContext, /) -> BusTask: ...


@dataclass(frozen=True)
class SimContext:
    """What a simulator of one bus is made from (``smartpole sim``)."""

    config: LoadedConfig
    stack: AsyncExitStack
    turnaround_s: float
    seed: int
    values: str  # "walk": plausible drifting values; "vectors": the profiles' first vector
    # Devices that refuse longer reads than this (registers or bits) with exception 3.
    max_reads: Mapping[str, int] = field(default_factory=dict)
    # RTU devices ignore the next frame within this window after a request for another
    # unit, taking it for that unit's answer (libmodbus and many RS-485 devices); 0: off.
    listen_window_s: float = 0.0

    def devices_on(self, bus: str) -> dict[str, DeviceConfig]:
        return {name: d for name, d in self.config.pole.devices.items() if d.bus == bus}


@dataclass
class ServedDevice:
    """One simulated device: the server that plays it on the wire (``server.set_fault(ident,
    mode)``) and, where its values can be scripted, its model (``step()`` drifts them,
    ``set_value(point, value)`` fixes one, ``profile.points`` names them)."""

    server: Any
    ident: Any
    model: Any = None
    walk: bool = False


@runtime_checkable
class ScriptedModel(Protocol):
    """A simulated device that checks its own scripted values and takes requests of its
    own kind (the cabinet MCU: resets, line faults, a snapshot of its outputs)."""

    def set_value(self, point: str, value: object) -> None: ...

    def control(self, request: Mapping[str, Any]) -> dict[str, object]: ...


@dataclass
class SimulatedBus:
    """A served bus: where a daemon reaches it, and its devices by config name."""

    endpoint: str
    devices: Mapping[str, ServedDevice] = field(default_factory=dict)


class SimulatorFactory(Protocol[C_contra]):
    """Serves one bus's devices until the context's exit stack closes."""

    def __call__(
        self, name: str, bus: C_contra, context: SimContext, /
    ) -> Awaitable[SimulatedBus]: ...


@dataclass(frozen=True)
class BusKind(Generic[C]):
    """One bus protocol: see the module docstring."""

    name: str
    configs: tuple[type[C], ...]
    profile: type[ProfileInfo]
    task: TaskFactory[C]
    simulator: SimulatorFactory[C] | None = None
    capabilities: frozenset[type] = frozenset()

    def __post_init__(self) -> None:
        protocols = {model.profile_protocol for model in self.configs}
        if not self.configs or protocols != {tag_of(self.profile, "protocol")}:
            raise TypeError(
                f"bus kind {self.name}: its bus configs must name its profile's protocol"
            )
