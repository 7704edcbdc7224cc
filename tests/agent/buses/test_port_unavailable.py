"""A device behind an unusable port is offline, never ``online`` (issue 15, point 4).

Found against a Modbus TCP gateway that went away: the bus showed ``port_unavailable``
while its devices still showed ``online``. Real loopback TCP: the simulator is closed under
the bus, then started again on the same port.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import structlog

from helpers.bus_task import modbus_bus_task, running
from helpers.paths import REPO
from helpers.waiting import eventually
from smartpole.agent.buses.modbus.task import ModbusBusTask
from smartpole.agent.core.health import BusState, DeviceState
from smartpole.agent.core.points import PointTable, Quality
from smartpole.drivers.modbus.points import RegisterKind
from smartpole.drivers.sim.modbus_bank import RegisterBank
from smartpole.drivers.sim.modbus_tcp import ModbusTcpServer

TIMEOUT_S = 0.2


def _bank() -> RegisterBank:
    bank = RegisterBank()
    bank.set(RegisterKind.HOLDING, 0, list(range(50)))
    return bank


def _task(
    tmp_path: Path, bus: dict[str, Any], devices: dict[str, dict[str, Any]]
) -> tuple[ModbusBusTask, PointTable]:
    bank = {name: {"profile": "bench-register-bank", **device} for name, device in devices.items()}
    return modbus_bus_task(tmp_path, bus, bank, profiles=REPO / "bench" / "profiles")


@pytest.mark.asyncio
async def test_devices_behind_an_unavailable_port_are_offline_until_it_is_back(
    tmp_path: Path,
) -> None:
    sim = ModbusTcpServer({1: _bank(), 2: _bank()})
    async with sim:
        port = sim.port
        task, table = _task(
            tmp_path,
            {"type": "modbus-tcp", "host": sim.host, "port": port, "timeout_s": TIMEOUT_S},
            {
                "meter": {"unit_id": 1, "poll_period_s": 0.2},
                "charger": {"unit_id": 2, "poll_period_s": 0.2},
            },
        )
        devices = task.devices
        with structlog.testing.capture_logs() as logs:
            async with running(task):
                await eventually(
                    lambda: all(d.state is DeviceState.ONLINE for d in devices), 5, "online"
                )
                await sim.aclose()  # the gateway goes away; nothing listens on its port
                await eventually(
                    lambda: task.health.state is BusState.PORT_UNAVAILABLE, 5, "port gone"
                )
                assert [d.state for d in devices] == [DeviceState.OFFLINE] * 2
                assert all(d.last_error and "port unavailable" in d.last_error for d in devices)
                # Read before, so bad now (not unknown): the devices stopped answering.
                assert {s.quality for s in table.snapshot()} == {Quality.BAD}
                async with ModbusTcpServer({1: _bank(), 2: _bank()}, port=port):
                    await eventually(
                        lambda: all(d.state is DeviceState.ONLINE for d in devices),
                        40,
                        "back online",
                    )
                    # The port was to blame, not the devices: no probation for them.
                    assert not any(d.slow for d in devices)
    offline = [e["device"] for e in logs if e["event"] == "device_offline"]
    assert sorted(offline) == ["charger", "meter"], offline  # once each, not per retry
