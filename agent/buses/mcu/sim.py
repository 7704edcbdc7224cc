"""The MCU emulator as one of ``smartpole sim``'s devices: readings, faults, resets, state.

A rig scripts the cabinet through the same control socket as every other simulated device
(``{"device": "mcu", "set": {"door_open": true}}``), and reaches what only an MCU has
through an ``"mcu"`` request: line faults by name, a reset (optionally mid-frame), and a
snapshot of its outputs so a test can see what the lamp and relays are doing right now.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from smartpole.agent.buses.kind import ServedDevice, SimContext, SimulatedBus
from smartpole.agent.buses.mcu.config import PoleMcuBus
from smartpole.agent.core.errors import UsageError
from smartpole.drivers.mcu.codes import Photocell
from smartpole.drivers.sim.faults import SLOW_EXTRA_S, FaultMode
from smartpole.drivers.sim.mcu.emulator import McuEmulator
from smartpole.drivers.sim.mcu.twin_state import Inputs

_RAW_INPUTS = {
    "door_open": ("door", 1),
    "water": ("water", 1),
    "tilt_x": ("tilt_x", 100),
    "tilt_y": ("tilt_y", 100),
    "leakage": ("leakage_ua", 1000),
    "temperature": ("temp_cdeg", 100),
    "supply_voltage": ("supply_mv", 1000),
    "impact": ("accel_peak_mg", 1000),
}


class McuSim:
    """Adapts an :class:`McuEmulator` to the simulator set's verbs."""

    def __init__(self, emulator: McuEmulator) -> None:
        self.emulator = emulator

    def set_fault(self, _ident: object, mode: FaultMode) -> None:
        """The generic fault modes, as the MCU's line would show them."""
        table: dict[FaultMode, dict[str, Any]] = {
            FaultMode.NONE: {},
            FaultMode.NO_ANSWER: {"silent": True},
            FaultMode.BAD_CRC: {"corrupt": 1.0},
            FaultMode.GARBAGE: {"garbage": 1.0, "corrupt": 1.0},
            FaultMode.SLOW: {"delay_s": SLOW_EXTRA_S},
        }
        faults = table.get(mode)
        if faults is None:
            raise UsageError(f"the MCU emulator has no fault {mode.value!r}")
        self.emulator.set_faults(
            drop=0.0, corrupt=0.0, garbage=0.0, delay_s=0.0, silent=False, **faults
        )

    def set_value(self, point: str, value: object) -> None:
        if point == "photocell_dark":
            self.emulator.set_photocell(None if value is None else bool(value))
            return
        if point not in _RAW_INPUTS:
            known = ", ".join(["photocell_dark", *_RAW_INPUTS])
            raise UsageError(f"the MCU has no input {point!r} (inputs: {known})")
        if not isinstance(value, int | float) or (
            isinstance(value, bool) and point not in ("door_open", "water")
        ):
            raise UsageError(f"{point} needs a number, got {value!r}")
        name, scale = _RAW_INPUTS[point]
        self.emulator.set_inputs(**{name: round(float(value) * scale)})

    def control(self, request: Mapping[str, Any]) -> dict[str, object]:
        """``{"faults": {...}}``, ``{"reset": true, "mid_frame": true}``, ``{"state": true}``."""
        try:
            if "faults" in request:
                self.emulator.set_faults(**dict(request["faults"]))
            if request.get("reset"):
                self.emulator.reset(mid_frame=bool(request.get("mid_frame")))
        except (TypeError, ValueError) as exc:
            raise UsageError(f"bad MCU control request: {exc}") from exc
        return self.emulator.snapshot()


async def simulate(name: str, bus: PoleMcuBus, context: SimContext) -> SimulatedBus:
    """The MCU emulator on a pty, in a cabinet on a mild day: 25 °C, 24 V supply, daylight
    on the photocell."""
    cabinet = Inputs(photocell=Photocell.LIGHT, temp_cdeg=2500, supply_mv=24000)
    emulator = await context.stack.enter_async_context(
        McuEmulator(baudrate=bus.baudrate, seed=context.seed, inputs=cabinet)
    )
    adapter = McuSim(emulator)
    devices = {
        device: ServedDevice(adapter, device, adapter) for device in context.devices_on(name)
    }
    return SimulatedBus(emulator.where, devices)
