"""What a rig may change in a running ``smartpole sim``, and the socket it says it on.

Rigs script a scenario while the daemon runs against the simulators: a fault switched on, a
reading that crosses an alarm limit, an MCU reset in the middle of a frame. The verbs work
on devices by their names in the pole config, whatever protocol plays them, so a rig never
needs to know which simulator serves a device.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from smartpole.agent.buses.kind import ScriptedModel, ServedDevice
from smartpole.agent.core.errors import UsageError
from smartpole.drivers.lifecycle import Lifecycle
from smartpole.drivers.sim.faults import FaultMode

log = structlog.get_logger("smartpole.sim")


@dataclass
class SimulatorSet:
    """Every simulated device of a ``smartpole sim`` run, by its name in the pole config."""

    devices: dict[str, ServedDevice] = field(default_factory=dict)

    def set_fault(self, device: str, mode: FaultMode) -> None:
        served = self.devices.get(device)
        if served is None:
            raise UsageError(f"no simulated device {device!r}")
        served.server.set_fault(served.ident, mode)

    def mcu_control(self, device: str, request: Mapping[str, Any]) -> dict[str, object]:
        served = self.devices.get(device)
        if served is None or not isinstance(served.model, ScriptedModel):
            raise UsageError(f"no simulated MCU {device!r}")
        return served.model.control(request)

    def step(self) -> None:
        for served in self.devices.values():
            if served.walk:
                served.model.step()

    def set_value(self, device: str, point: str, value: float | bool | str) -> None:
        """Script a scenario: the device reports ``value`` (and stops drifting it)."""
        served = self.devices.get(device)
        if served is not None and isinstance(served.model, ScriptedModel):
            served.model.set_value(point, value)  # it knows its own inputs
            return
        if served is None or served.model is None:
            raise UsageError(f"no simulated device {device!r} with values")
        if point not in served.model.profile.points:
            raise UsageError(f"device {device!r} has no point {point!r}")
        served.walk = False
        served.model.set_value(point, value)


class ControlServer(Lifecycle):
    """JSON lines on a Unix socket for rigs.

    ``{"device": "weather", "fault": "no_answer"}`` injects a fault;
    ``{"device": "weather", "set": {"temperature": 85.0}}`` scripts a reading;
    ``{"device": "mcu", "mcu": {"state": true}}`` reaches the MCU emulator
    (``agent/buses/mcu/sim.py``).
    """

    def __init__(self, path: Path, sims: SimulatorSet) -> None:
        super().__init__()
        self.path = path
        self._sims = sims
        self._server: asyncio.Server | None = None

    async def _start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # left behind by a run that was killed
        self._server = await asyncio.start_unix_server(self._serve, path=str(self.path))

    def _release(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                writer.write(json.dumps(self._answer(line)).encode() + b"\n")
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    def _answer(self, line: bytes) -> dict[str, object]:
        try:
            request = json.loads(line)
            device = str(request["device"])
            if "fault" in request:
                self._sims.set_fault(device, FaultMode(request["fault"]))
            for point, value in dict(request.get("set", {})).items():
                self._sims.set_value(device, str(point), value)
            answer: dict[str, object] = {"ok": True}
            if "mcu" in request:
                answer["mcu"] = self._sims.mcu_control(device, dict(request["mcu"]))
        except (ValueError, KeyError, TypeError, UsageError) as exc:
            return {"ok": False, "error": str(exc)}
        log.info("sim_control", **{k: v for k, v in request.items() if k != "event"})
        return answer
