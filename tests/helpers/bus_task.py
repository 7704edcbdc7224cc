"""The daemon's own Modbus bus task, built from a one-bus pole file, for bus-level tests.

A bus test needs what the daemon gives a bus: a loaded config, a point table, an audit log
and (for what the bus learns) a state directory. Written once here so every bus test builds
it the same way the composition root does.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import yaml

from smartpole.agent.buses.kind import BusContext
from smartpole.agent.buses.modbus.task import ModbusBusTask
from smartpole.agent.buses.registry import load_config
from smartpole.agent.core.audit import AuditLog
from smartpole.agent.core.points import PointTable


def modbus_bus_task(
    tmp_path: Path,
    bus: dict[str, Any],
    devices: dict[str, dict[str, Any]],
    *,
    profiles: Path,
    bus_name: str = "bus",
    state_dir: Path | None = None,
) -> tuple[ModbusBusTask, PointTable]:
    """The task of one bus ``bus_name`` with ``devices`` (each entry's ``bus`` is filled in)."""
    config = tmp_path / "pole.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "pole": {"id": "bus-test"},
                "profiles_dir": str(profiles),
                "buses": {bus_name: bus},
                "devices": {name: {"bus": bus_name, **device} for name, device in devices.items()},
            }
        )
    )
    loaded = load_config(config)
    table = PointTable()
    context = BusContext(loaded, table, AuditLog(tmp_path), lambda: True, state_dir=state_dir)
    return ModbusBusTask(bus_name, loaded.pole.buses[bus_name], context), table


@contextlib.asynccontextmanager
async def running(task: ModbusBusTask) -> AsyncIterator[asyncio.Task[None]]:
    """Run the task for the block; cancelled and awaited at its end."""
    run = asyncio.create_task(task.run(), name="bus under test")
    try:
        yield run
    finally:
        run.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await run
