"""Every bus protocol the agent knows, found by looking, and what is built from them.

A protocol is a module (or package) in ``agent/buses`` that declares ``KIND``. The registry
imports each such module once and builds from their declarations the pole config's bus and
profile unions (a ``PoleSchema`` handed to the config loader), the bus tasks of a pole, and
the simulators of ``smartpole sim``. Adding a protocol adds a module; no list here or
elsewhere names one (``docs/adding-a-protocol.md``).
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from smartpole.agent.buses.bus_set import BusSet
from smartpole.agent.buses.capabilities import BusTask
from smartpole.agent.buses.kind import BusContext, BusKind, SimContext, SimulatedBus
from smartpole.agent.config import loader
from smartpole.agent.config.buses import BusConfig
from smartpole.agent.config.loader import LoadedConfig, PoleSchema, tag_of
from smartpole.agent.core.errors import UsageError
from smartpole.drivers.schema import ProfileInfo


class BusRegistry:
    """The registered bus kinds, checked to fit together."""

    def __init__(self, kinds: Iterable[BusKind[Any]]) -> None:
        self.kinds: tuple[BusKind[Any], ...] = tuple(kinds)
        self._by_model: dict[type[BusConfig], BusKind[Any]] = {}
        types: dict[str, str] = {}
        protocols: dict[str, str] = {}
        for kind in self.kinds:
            for model in kind.configs:
                bus_type = tag_of(model, "type")
                if bus_type in types:
                    raise TypeError(
                        f"bus type {bus_type!r} is declared by {types[bus_type]} and {kind.name}"
                    )
                types[bus_type] = kind.name
                self._by_model[model] = kind
            protocol = kind.configs[0].profile_protocol
            if protocol in protocols:
                raise TypeError(
                    f"profile protocol {protocol!r} is declared by {protocols[protocol]} "
                    f"and {kind.name}"
                )
            protocols[protocol] = kind.name
            for capability in kind.capabilities:
                if not (isinstance(kind.task, type) and issubclass(kind.task, capability)):
                    raise TypeError(f"{kind.name}'s task does not offer {capability.__name__}")

    @classmethod
    def discover(cls, package: str = "smartpole.agent.buses") -> BusRegistry:
        """Every ``KIND`` declared by a module or package directly inside ``package``."""
        root = importlib.import_module(package)
        kinds: list[BusKind[Any]] = []
        for info in sorted(pkgutil.iter_modules(root.__path__), key=lambda i: i.name):
            module = importlib.import_module(f"{package}.{info.name}")
            kind = getattr(module, "KIND", None)
            if isinstance(kind, BusKind):
                kinds.append(kind)
        return cls(kinds)

    # ----- the config -----

    @functools.cached_property
    def schema(self) -> PoleSchema:
        return PoleSchema(
            buses=tuple(model for kind in self.kinds for model in kind.configs),
            profiles=tuple(kind.profile for kind in self.kinds),
        )

    def load_config(self, path: Path) -> LoadedConfig:
        """Load and check a pole config; ConfigError lists every problem in every file."""
        return loader.load_config(path, self.schema)

    def load_profile(self, path: Path) -> ProfileInfo:
        return loader.load_profile(path, self.schema)

    # ----- the pole's buses -----

    def kind_of(self, bus: BusConfig) -> BusKind[Any]:
        return self._by_model[type(bus)]

    def create_buses(self, context: BusContext) -> BusSet:
        """One task per bus of the pole, each made by its protocol's task class."""
        tasks: list[tuple[BusTask, BusKind[Any]]] = []
        for name, bus in context.config.pole.buses.items():
            kind = self.kind_of(bus)
            tasks.append((kind.task(name, bus, context), kind))
        return BusSet(tasks)

    async def simulate(self, name: str, context: SimContext) -> SimulatedBus:
        """Serve bus ``name``'s devices with its protocol's simulator, until the context's
        exit stack closes."""
        bus = context.config.pole.buses[name]
        kind = self.kind_of(bus)
        if kind.simulator is None:
            raise UsageError(f"bus {name}: {kind.name} has no simulator")
        return await kind.simulator(name, bus, context)


@functools.cache
def registry() -> BusRegistry:
    """The protocols of this installation, found once."""
    return BusRegistry.discover()


def load_config(path: Path) -> LoadedConfig:
    """Load and check a pole config with every registered protocol."""
    return registry().load_config(path)


def load_profile(path: Path) -> ProfileInfo:
    """Load and check one profile file with every registered protocol."""
    return registry().load_profile(path)
