"""Make the right task for each bus of a pole config."""

from __future__ import annotations

from smartpole.agent.buses.base import BusTask
from smartpole.agent.buses.dlt645 import Dlt645BusTask
from smartpole.agent.buses.mcu import McuBusTask
from smartpole.agent.buses.modbus import ModbusBusTask
from smartpole.agent.buses.pelco import PelcoDBusTask
from smartpole.agent.config.loader import LoadedConfig
from smartpole.agent.config.pole import (
    Dlt645Bus,
    ModbusRtuBus,
    ModbusRtuOverTcpBus,
    ModbusTcpBus,
    PoleMcuBus,
)
from smartpole.agent.core.audit import AuditLog
from smartpole.agent.core.points import PointTable


def create_bus_tasks(config: LoadedConfig, table: PointTable, audit: AuditLog) -> list[BusTask]:
    tasks: list[BusTask] = []
    for name, bus in config.pole.buses.items():
        if isinstance(bus, ModbusRtuBus | ModbusTcpBus | ModbusRtuOverTcpBus):
            tasks.append(ModbusBusTask(name, bus, config, table, audit))
        elif isinstance(bus, Dlt645Bus):
            tasks.append(Dlt645BusTask(name, bus, config, table))
        elif isinstance(bus, PoleMcuBus):
            tasks.append(McuBusTask(name, bus, config, table, audit))
        else:
            tasks.append(PelcoDBusTask(name, bus, config, table, audit))
    return tasks
