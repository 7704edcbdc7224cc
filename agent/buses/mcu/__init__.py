"""The cabinet MCU behind the firmware bridge as one bus protocol of the agent.

The bus config and the MCU configuration made from it (``config.py``); the task that keeps
the MCU convinced the agent is alive and carries out writes (``task.py``); its events on
their way to the outbox (``events.py``); the emulator as a ``smartpole sim`` device
(``sim.py``).
"""

from __future__ import annotations

from smartpole.agent.buses.capabilities import Diagnosable, EventSource, Readable, Writable
from smartpole.agent.buses.kind import BusKind, SimContext, SimulatedBus
from smartpole.agent.buses.mcu.config import PoleMcuBus
from smartpole.agent.buses.mcu.task import McuBusTask
from smartpole.drivers.mcu.profile import McuProfile


async def simulate(name: str, bus: PoleMcuBus, context: SimContext) -> SimulatedBus:
    """The MCU emulator of ``smartpole sim`` (imported here: the daemon never simulates)."""
    from smartpole.agent.buses.mcu.sim import simulate

    return await simulate(name, bus, context)


KIND = BusKind(
    name="pole-mcu",
    configs=(PoleMcuBus,),
    profile=McuProfile,
    task=McuBusTask,
    simulator=simulate,
    capabilities=frozenset({Readable, Writable, Diagnosable, EventSource}),
)
