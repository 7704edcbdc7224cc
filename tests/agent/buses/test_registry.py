"""The bus registry: a protocol is one module declaring ``KIND``, and everything is built
from the declarations (config and profile unions, address checks, tasks, capabilities)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import ClassVar, Literal

import pytest
import yaml

from helpers.paths import PROFILES
from smartpole.agent.buses.bus_set import BusSet
from smartpole.agent.buses.capabilities import Readable, Writable
from smartpole.agent.buses.kind import (
    BusContext,
    BusKind,
    ServedDevice,
    SimContext,
    SimulatedBus,
)
from smartpole.agent.buses.registry import BusRegistry, registry
from smartpole.agent.buses.supervised import SupervisedBus
from smartpole.agent.config.buses import Addressing, SerialBusConfig
from smartpole.agent.core.audit import AuditLog
from smartpole.agent.core.errors import ConfigError, RequestError
from smartpole.agent.core.health import BusHealth, DeviceHealth
from smartpole.agent.core.points import PointTable
from smartpole.drivers.schema import ProfileInfo

# ----- a toy protocol, declared the way docs/adding-a-protocol.md says -----


class EchoProfile(ProfileInfo):
    protocol: Literal["echo"]
    greeting: str = "hello"


class EchoBus(SerialBusConfig):
    addressing: ClassVar = Addressing("address", "an echo address", 1, 9)
    profile_protocol: ClassVar = "echo"

    type: Literal["echo-serial"]

    def describe(self) -> str:
        return f"echo {self.settings()}"


class EchoTask(SupervisedBus):
    def __init__(self, name: str, bus: EchoBus, context: BusContext) -> None:
        super().__init__(name, BusHealth(name, bus.endpoint, bus.describe()))
        self._devices = {
            device: DeviceHealth(device, name, config.address or "", config.profile, 3)
            for device, config in context.devices_on(name).items()
        }

    @property
    def devices(self) -> list[DeviceHealth]:
        return list(self._devices.values())

    def device_names(self) -> list[str]:
        return list(self._devices)

    def read_plan(self) -> dict[str, object]:
        return {device: ["say hello"] for device in self._devices}

    async def read_point(self, device: str, point: str) -> object:
        return f"{device}.{point}: hello"


async def simulate_echo(name: str, bus: EchoBus, context: SimContext) -> SimulatedBus:
    devices = {device: ServedDevice(None, device) for device in context.devices_on(name)}
    return SimulatedBus(f"echo://{name}", devices)


ECHO = BusKind(
    name="echo",
    configs=(EchoBus,),
    profile=EchoProfile,
    task=EchoTask,
    simulator=simulate_echo,
    capabilities=frozenset({Readable}),
)


@pytest.fixture
def with_echo() -> BusRegistry:
    return BusRegistry([*registry().kinds, ECHO])


def _pole(tmp_path: Path, *, address: str = "3", profile: str = "echo-box") -> Path:
    profiles = tmp_path / "profiles"
    profiles.mkdir(exist_ok=True)
    shutil.copy(PROFILES / "cwt-uwd.yaml", profiles)
    (profiles / "echo-box.yaml").write_text(
        "protocol: echo\nmodel: echo box\nmanufacturer: nobody\ngreeting: hi\n"
    )
    config = tmp_path / "pole.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "pole": {"id": "p"},
                "profiles_dir": str(profiles),
                "buses": {
                    "e1": {"type": "echo-serial", "port": "/dev/null"},
                    "rs485-1": {"type": "modbus-rtu", "port": "/dev/null"},
                },
                "devices": {
                    "box": {"profile": profile, "bus": "e1", "address": address},
                    "weather": {"profile": "cwt-uwd", "bus": "rs485-1", "unit_id": 1},
                },
            },
            sort_keys=False,
        )
    )
    return config


def test_the_installed_protocols_are_found_by_looking() -> None:
    kinds = registry().kinds
    assert {kind.name for kind in kinds} == {"dlt645", "modbus", "pelco-d", "pole-mcu"}
    assert {k.configs[0].profile_protocol for k in kinds} == {
        "dlt645",
        "modbus",
        "pelco-d",
        "pole-mcu",
    }


def test_the_config_unions_are_built_from_the_registered_kinds(
    tmp_path: Path, with_echo: BusRegistry
) -> None:
    config = _pole(tmp_path)
    loaded = with_echo.load_config(config)
    assert isinstance(loaded.pole.buses["e1"], EchoBus)
    assert isinstance(loaded.profile_of("box"), EchoProfile)
    assert loaded.profile_of("box").greeting == "hi"  # type: ignore[attr-defined]
    assert set(with_echo.schema.bus_models) == {
        "dlt645",
        "echo-serial",
        "modbus-rtu",
        "modbus-rtu-over-tcp",
        "modbus-tcp",
        "pelco-d",
        "pole-mcu",
    }
    # Without the echo kind, neither its bus type nor its profile protocol exists.
    with pytest.raises(ConfigError) as refused:
        registry().load_config(config)
    text = "\n".join(str(problem) for problem in refused.value.problems)
    assert "buses.e1.type" in text
    assert "unknown protocol 'echo'" in text


def test_the_loaders_address_checks_come_from_the_bus_model(
    tmp_path: Path, with_echo: BusRegistry
) -> None:
    with pytest.raises(ConfigError) as refused:
        with_echo.load_config(_pole(tmp_path, address="12"))
    assert [p.message for p in refused.value.problems] == [
        "a echo-serial address is 1 to 9 (got 12)"
    ]
    with pytest.raises(ConfigError) as wrong:
        with_echo.load_config(_pole(tmp_path, profile="cwt-uwd"))
    assert [p.message for p in wrong.value.problems] == [
        "profile 'cwt-uwd' speaks modbus but bus 'e1' is echo-serial"
    ]


@pytest.mark.asyncio
async def test_tasks_capabilities_and_simulators_come_from_the_kinds(
    tmp_path: Path, with_echo: BusRegistry
) -> None:
    loaded = with_echo.load_config(_pole(tmp_path))
    buses = with_echo.create_buses(
        BusContext(loaded, PointTable(), AuditLog(tmp_path), lambda: True)
    )
    assert isinstance(buses, BusSet)
    assert [type(bus).__name__ for bus in buses] == ["EchoTask", "ModbusBusTask"]
    reader = buses.capable("box", Readable, "{device} cannot be read")
    assert await reader.read_point("box", "greeting") == "box.greeting: hello"
    with pytest.raises(RequestError, match="no writable device 'box'"):
        await buses.write_point("box", "greeting", "bye", "test")
    assert buses.offering(Writable) == [buses.bus_of("weather")]
    context = SimContext(loaded, None, 0.0, 0, "walk")  # type: ignore[arg-type]
    served = await with_echo.simulate("e1", context)
    assert served.endpoint == "echo://e1"
    assert list(served.devices) == ["box"]


def test_a_kind_must_offer_what_it_declares_and_types_are_unique() -> None:
    liar = BusKind(
        name="liar", configs=(EchoBus,), profile=EchoProfile, task=EchoTask,
        capabilities=frozenset({Writable}),
    )  # fmt: skip
    with pytest.raises(TypeError, match="does not offer Writable"):
        BusRegistry([liar])
    with pytest.raises(TypeError, match="declared by echo and echo"):
        BusRegistry([ECHO, ECHO])


def test_a_new_protocol_is_one_new_module(tmp_path: Path) -> None:
    """Discovery finds a module that declares KIND; nothing else is edited."""
    package = tmp_path / "more_buses"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "helper.py").write_text("VALUE = 1\n")  # no KIND: not a protocol
    # The toy protocol's module declares this test module's KIND; it reaches it through
    # sys.modules because test modules are not importable by name.
    (package / "echo.py").write_text(f"import sys\nKIND = sys.modules[{__name__!r}].ECHO\n")
    sys.path.insert(0, str(tmp_path))
    try:
        found = BusRegistry.discover("more_buses")
    finally:
        sys.path.remove(str(tmp_path))
        for name in [m for m in sys.modules if m.startswith("more_buses")]:
            del sys.modules[name]
    assert [kind.name for kind in found.kinds] == ["echo"]
