"""``smartpole sim``: serve a pole's devices as simulators, one endpoint per bus.

A product feature for hardware-in-the-loop rigs: the same pole config that drives the daemon
describes what to simulate, so a rig runs the real daemon against devices that speak the
real protocols. Serial buses are served on pseudo-terminals, TCP buses on loopback ports.
Each bus's endpoint is printed on stdout, one line per bus, as soon as it is served
(``serving bus NAME at PATH`` or ``at tcp://HOST:PORT``), so scripts can pass it on to
``smartpole run --bus-port``. Faults can be set at start (``--fault``) or at any time
through the control socket (``--control`` with ``smartpole simctl``).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import structlog

from smartpole.agent.buses.kind import SimContext
from smartpole.agent.buses.registry import registry
from smartpole.agent.config.loader import LoadedConfig
from smartpole.agent.core.errors import UsageError
from smartpole.agent.sim.control import ControlServer, SimulatorSet
from smartpole.drivers.sim.faults import FaultMode

log = structlog.get_logger("smartpole.sim")

ValueMode = Literal["walk", "vectors"]


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


def parse_max_reads(config: LoadedConfig, specs: Sequence[str]) -> dict[str, int]:
    """``DEVICE=N`` pairs from the command line: the device refuses (Modbus exception 3)
    any read of more than N registers (or bits), like a meter with a small buffer."""
    limits: dict[str, int] = {}
    for spec in specs:
        device, _, count = spec.partition("=")
        if device not in config.pole.devices:
            raise UsageError(f"--max-read {spec}: no device {device!r} in {config.path}")
        if not count.isdigit() or not 1 <= int(count) <= 2000:
            raise UsageError(f"--max-read {spec}: the count must be 1 to 2000")
        limits[device] = int(count)
    return limits


async def run_simulators(
    config: LoadedConfig,
    *,
    buses: Sequence[str] = (),
    faults: Mapping[str, FaultMode] | None = None,
    turnaround_s: float = 0.005,
    step_s: float = 1.0,
    seed: int = 0,
    values: ValueMode = "walk",
    control: Path | None = None,
    max_reads: Mapping[str, int] | None = None,
    listen_window_s: float = 0.0,
) -> None:
    """Serve until SIGTERM/SIGINT."""
    chosen = list(buses) or list(config.pole.buses)
    for name in chosen:
        if name not in config.pole.buses:
            raise UsageError(f"--bus {name}: no such bus in {config.path}")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    sims = SimulatorSet()
    try:
        async with contextlib.AsyncExitStack() as stack:
            for offset, bus_name in enumerate(chosen):
                context = SimContext(
                    config,
                    stack,
                    turnaround_s,
                    seed + 100 * offset,
                    values,
                    max_reads or {},
                    listen_window_s,
                )
                served = await registry().simulate(bus_name, context)
                sims.devices.update(served.devices)
                where = served.endpoint
                on_bus = list(served.devices)
                bus = config.pole.buses[bus_name]
                print(
                    f"serving bus {bus_name} at {where} ({bus.describe()}; {', '.join(on_bus)})",
                    flush=True,
                )
                log.info("sim_serving", bus=bus_name, at=where)
            for device, mode in (faults or {}).items():
                sims.set_fault(device, mode)
            if control is not None:
                await stack.enter_async_context(ControlServer(control, sims))
            # Steps at a fixed rate (not "step_s after the last one"): a rig that polls at
            # the step period must see a new value on every poll, hour after hour.
            next_step = loop.time() + step_s
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout_at(next_step):
                        await stop.wait()
                if stop.is_set():
                    break
                next_step = max(next_step + step_s, loop.time() - step_s)
                if values == "walk":
                    sims.step()
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
    log.info("sim_stopped")
    sys.stdout.flush()
