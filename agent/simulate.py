"""``smartpole sim``: serve a pole's devices as simulators, one pseudo-terminal per bus.

A product feature for hardware-in-the-loop rigs: the same pole config that drives the daemon
describes what to simulate, so a rig runs the real daemon against devices that speak the
real protocol. Each bus's serial path is printed on stdout, one line per bus, as soon as it
is served, so scripts can read it and pass it to ``smartpole run --bus-port``.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Mapping, Sequence

import structlog

from smartpole.agent.config.loader import LoadedConfig
from smartpole.agent.errors import UsageError
from smartpole.drivers.sim.devices import SimulatedDevice
from smartpole.drivers.sim.rtu_pty import RtuPtyServer
from smartpole.drivers.sim.wire import FaultMode

log = structlog.get_logger("smartpole.sim")


def parse_faults(config: LoadedConfig, specs: Sequence[str]) -> dict[str, FaultMode]:
    """``DEVICE=MODE`` pairs from the command line, checked against the config."""
    faults: dict[str, FaultMode] = {}
    modes = ", ".join(mode.value for mode in FaultMode)
    for spec in specs:
        device, _, mode = spec.partition("=")
        if device not in config.pole.devices:
            raise UsageError(f"--fault {spec}: no device {device!r} in {config.path}")
        try:
            faults[device] = FaultMode(mode)
        except ValueError as exc:
            raise UsageError(f"--fault {spec}: unknown mode {mode!r} (modes: {modes})") from exc
    return faults


async def run_simulators(
    config: LoadedConfig,
    *,
    buses: Sequence[str] = (),
    faults: Mapping[str, FaultMode] | None = None,
    turnaround_s: float = 0.005,
    step_s: float = 1.0,
    seed: int = 0,
) -> None:
    """Serve until SIGTERM/SIGINT."""
    chosen = list(buses) or list(config.pole.buses)
    for name in chosen:
        if name not in config.pole.buses:
            raise UsageError(f"--bus {name}: no such bus in {config.path}")
    faults = faults or {}
    devices: dict[str, SimulatedDevice] = {}
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        async with contextlib.AsyncExitStack() as stack:
            for number, bus_name in enumerate(chosen):
                bus = config.pole.buses[bus_name]
                on_bus = {n: d for n, d in config.pole.devices.items() if d.bus == bus_name}
                banks = {}
                for offset, (name, device) in enumerate(on_bus.items()):
                    sim = SimulatedDevice(config.modbus_profile_of(name), seed=seed + offset)
                    devices[name] = sim
                    banks[device.unit_id] = sim.bank
                server = await stack.enter_async_context(
                    RtuPtyServer(
                        banks,
                        baudrate=bus.baudrate,
                        turnaround_s=turnaround_s,
                        faults={on_bus[n].unit_id: m for n, m in faults.items() if n in on_bus},
                    )
                )
                units = ", ".join(f"{n}=unit {d.unit_id}" for n, d in on_bus.items())
                print(
                    f"serving bus {bus_name} at {server.path} ({bus.describe()}; {units})",
                    flush=True,
                )
                log.info("sim_serving", bus=bus_name, path=server.path, number=number)
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=step_s)
                for simulated in devices.values():
                    simulated.step()
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
    log.info("sim_stopped")
    sys.stdout.flush()
