"""Modbus RTU, Modbus TCP and RTU over TCP as one bus protocol of the agent.

Block reads by plan with refusals learnt, writes with read-back (``task.py``); the three
bus types of the config (``config.py``); the register banks of ``smartpole sim``
(``sim.py``).
"""

from __future__ import annotations

from smartpole.agent.buses.capabilities import Readable, Writable
from smartpole.agent.buses.kind import BusKind, SimContext, SimulatedBus
from smartpole.agent.buses.modbus.config import (
    ModbusBus,
    ModbusRtuBus,
    ModbusRtuOverTcpBus,
    ModbusTcpBus,
)
from smartpole.agent.buses.modbus.task import ModbusBusTask
from smartpole.drivers.modbus.profile import ModbusProfile


async def simulate(name: str, bus: ModbusBus, context: SimContext) -> SimulatedBus:
    """The register banks of ``smartpole sim`` (imported here: the daemon never simulates)."""
    from smartpole.agent.buses.modbus.sim import simulate

    return await simulate(name, bus, context)


KIND = BusKind[ModbusBus](
    name="modbus",
    configs=(ModbusRtuBus, ModbusTcpBus, ModbusRtuOverTcpBus),
    profile=ModbusProfile,
    task=ModbusBusTask,
    simulator=simulate,
    capabilities=frozenset({Readable, Writable}),
)
