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
from typing import Any, Literal

import structlog

from smartpole.agent.config.loader import LoadedConfig
from smartpole.agent.config.pole import (
    Dlt645Bus,
    ModbusRtuBus,
    ModbusRtuOverTcpBus,
    ModbusTcpBus,
    PoleMcuBus,
)
from smartpole.agent.core.errors import UsageError
from smartpole.agent.sim.control import ControlServer, Served, SimulatorSet
from smartpole.agent.sim.mcu import McuSim
from smartpole.drivers.dlt645.profile import Dlt645Profile
from smartpole.drivers.mcu.codes import Photocell
from smartpole.drivers.pelco_d.profile import PelcoDProfile
from smartpole.drivers.sim.devices import SimulatedDevice
from smartpole.drivers.sim.dlt645 import Dlt645PtyServer, SimulatedMeter
from smartpole.drivers.sim.faults import FaultMode
from smartpole.drivers.sim.mcu.emulator import McuEmulator
from smartpole.drivers.sim.mcu.twin_state import Inputs
from smartpole.drivers.sim.modbus_tcp import ModbusTcpServer
from smartpole.drivers.sim.pelco_d import PelcoDPtyServer, SimulatedCamera
from smartpole.drivers.sim.rtu_pty import RtuPtyServer

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
                where = await _serve_bus(
                    stack, config, bus_name, sims, turnaround_s, seed + 100 * offset, values
                )
                on_bus = [n for n, d in config.pole.devices.items() if d.bus == bus_name]
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
                    await asyncio.wait_for(stop.wait(), timeout=max(0.0, next_step - loop.time()))
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


async def _serve_bus(
    stack: contextlib.AsyncExitStack,
    config: LoadedConfig,
    bus_name: str,
    sims: SimulatorSet,
    turnaround_s: float,
    seed: int,
    values: ValueMode,
) -> str:
    bus = config.pole.buses[bus_name]
    on_bus = {n: d for n, d in config.pole.devices.items() if d.bus == bus_name}
    if isinstance(bus, ModbusRtuBus | ModbusTcpBus | ModbusRtuOverTcpBus):
        banks = {}
        models = {}
        for offset, (name, device) in enumerate(on_bus.items()):
            model = SimulatedDevice(config.modbus_profile_of(name), seed=seed + offset)
            if values == "vectors":
                _load_first_vector(model)
            unit = device.unit_id if device.unit_id is not None else 1
            banks[unit] = model.bank
            models[name] = (unit, model)
        server: Any
        if isinstance(bus, ModbusRtuBus):
            server = await stack.enter_async_context(
                RtuPtyServer(banks, baudrate=bus.baudrate, turnaround_s=turnaround_s)
            )
            where = server.path
        else:
            server = await stack.enter_async_context(
                ModbusTcpServer(
                    banks,
                    framing="tcp" if isinstance(bus, ModbusTcpBus) else "rtu",
                    turnaround_s=turnaround_s,
                )
            )
            where = f"tcp://{server.host}:{server.port}"
        for name, (unit, model) in models.items():
            sims.devices[name] = Served(server, unit, model, walk=values == "walk")
        return str(where)
    if isinstance(bus, PoleMcuBus):
        # A cabinet on a mild day: 25 °C, 24 V supply, daylight on the photocell.
        cabinet = Inputs(photocell=Photocell.LIGHT, temp_cdeg=2500, supply_mv=24000)
        emulator = await stack.enter_async_context(
            McuEmulator(baudrate=bus.baudrate, seed=seed, inputs=cabinet)
        )
        adapter = McuSim(emulator)
        for name in on_bus:
            sims.devices[name] = Served(adapter, name, adapter)
        return emulator.where
    if isinstance(bus, Dlt645Bus):
        meters = {}
        addresses = {}
        for offset, (name, device) in enumerate(on_bus.items()):
            profile = config.profile_of(name)
            assert isinstance(profile, Dlt645Profile)
            meter = SimulatedMeter(profile, seed=seed + offset)
            if values == "vectors" and profile.test_vectors:
                for point, value in profile.test_vectors[0].expect.items():
                    meter.set_value(point, value)
            address = (device.address or "").zfill(12)
            meters[address] = meter
            addresses[name] = address
        meter_server = await stack.enter_async_context(
            Dlt645PtyServer(meters, baudrate=bus.baudrate, turnaround_s=turnaround_s, seed=seed)
        )
        for name, address in addresses.items():
            sims.devices[name] = Served(
                meter_server, address, meters[address], walk=values == "walk"
            )
        return meter_server.where
    cameras = {}
    for name, device in on_bus.items():
        profile = config.profile_of(name)
        assert isinstance(profile, PelcoDProfile)
        cameras[int(device.address or "1")] = SimulatedCamera(profile)
    camera_server = await stack.enter_async_context(
        PelcoDPtyServer(cameras, baudrate=bus.baudrate, turnaround_s=turnaround_s)
    )
    for name, device in on_bus.items():
        sims.devices[name] = Served(camera_server, int(device.address or "1"))
    return camera_server.where


def _load_first_vector(model: SimulatedDevice) -> None:
    """Serve the raw registers of the profile's first test vector, as the manual prints them."""
    if not model.profile.test_vectors:
        return
    vector = model.profile.test_vectors[0]
    from smartpole.drivers.modbus.points import RegisterKind

    areas = (
        (RegisterKind.HOLDING, vector.holding),
        (RegisterKind.INPUT, vector.input),
        (RegisterKind.COIL, vector.coil),
        (RegisterKind.DISCRETE, vector.discrete),
    )
    for kind, area in areas:
        for start, words in area.items():
            model.bank.set(kind, start, [int(w) for w in words])
