"""Everything an operator can ask of the pole, as one typed method per command or query.

Every door reaches the pole here: the local API maps its JSON methods onto these methods
(``api_methods.py``), platform commands from MQTT and OPC UA reach them through the command
processor's typed dispatch (which authorises and audits first), and the CLI goes through
the local API. So a command means the same thing, with the same checks, whichever door it
came through. Methods raise ``RequestError`` for what the pole cannot do (nothing was
switched), driver errors for devices that failed, and return plain JSON-able results.

A lamp the lighting controller manages is changed only through the controller: a "set
level" becomes an override with an expiry, which ``lights`` shows, and a plain write to
the points its lease governs is refused, since the controller would put its own level
back at the next lease refresh.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict
from typing import Any, Protocol

from smartpole.agent.buses.bus_set import BusSet
from smartpole.agent.buses.capabilities import Diagnosable, Ptz, Readable
from smartpole.agent.cameras import Cameras
from smartpole.agent.config.loader import LoadedConfig
from smartpole.agent.control.alarm_types import AlarmError
from smartpole.agent.control.lighting import LightingController
from smartpole.agent.control.pole import PoleControl
from smartpole.agent.control.safety import alarms_status
from smartpole.agent.core.audit import AuditLog
from smartpole.agent.core.errors import AgentError, RequestError
from smartpole.agent.core.outbox import Outbox
from smartpole.agent.core.points import PointTable
from smartpole.agent.core.state_schema import LEDGER as STATE_LEDGER
from smartpole.agent.state import PointStore
from smartpole.agent.uplink.mqtt import MqttUplink
from smartpole.agent.uplink.release_report import ReleaseHistory
from smartpole.agent.uplink.telemetry import TelemetryReporter

#: How long a platform "set level" on a managed lamp holds when the command names no time.
SET_LEVEL_HOLD_S = 3600.0

StatusSource = Callable[[], dict[str, object]]


class LocalApi(Protocol):
    """What the operations ask of the local API server about itself."""

    def status(self) -> dict[str, object]: ...

    def problems(self) -> list[str]: ...


class LampNotReachedError(AgentError):
    """A level was accepted (the override holds) but the lamp controller did not take it."""


class PoleOperations:
    """The pole's typed operations surface; see the module docstring."""

    def __init__(
        self,
        config: LoadedConfig,
        *,
        table: PointTable,
        store: PointStore,
        audit: AuditLog,
        outbox: Outbox,
        buses: BusSet,
        control: PoleControl,
        cameras: Cameras,
        uplink: MqttUplink | None,
        telemetry: TelemetryReporter | None,
        opcua: StatusSource | None,
        started_at: float,
        releases: ReleaseHistory | None = None,
    ) -> None:
        self._config = config
        self._table = table
        self._store = store
        self._audit = audit
        self._outbox = outbox
        self._buses = buses
        self._control = control
        self._cameras = cameras
        self._uplink = uplink
        self._telemetry = telemetry
        self._opcua = opcua
        self._started_at = started_at
        self._releases = releases
        self.api: LocalApi | None = None  # set once the local API serves these operations

    # ----- commands -----

    async def read(self, device: str, point: str) -> object:
        bus = self._buses.capable(device, Readable, "bus {bus} has no readable points")
        return await bus.read_point(device, point)

    async def write(self, device: str, point: str, value: object, actor: str) -> object:
        """Write one point (checked against the profile, read back, audited)."""
        if self._control.manages(device, point):
            raise RequestError(
                f"{device}.{point} is the level the lighting controller keeps on {device}; "
                f"set it with an override (smartpole diag override {device} LEVEL SECONDS)"
            )
        return await self._buses.write_point(device, point, value, actor)

    async def relay(self, device: str, point: str, on: bool, actor: str) -> object:
        return await self.write(device, point, on, actor)

    async def set_level(
        self,
        lamp: str,
        level: int,
        actor: str,
        *,
        point: str = "dim_level",
        duration_s: float | None = None,
    ) -> object:
        """A lamp's level: an override with an expiry where the lighting controller manages
        the lamp (applied now, not at the next tick), else a write of ``point``."""
        lighting = self._control.lighting
        if lighting is None or lamp not in lighting.lamps:
            return await self.write(lamp, point, level, actor)
        hold_s = SET_LEVEL_HOLD_S if duration_s is None else duration_s
        self._set_override(lamp, level, hold_s, actor)
        state = await lighting.apply(lamp)
        if state["last_error"] is not None:
            raise LampNotReachedError(
                f"the override holds until it expires, but {lamp} did not take it yet: "
                f"{state['last_error']}"
            )
        return state

    async def override(self, lamp: str, level: int, duration_s: float, actor: str) -> object:
        """A level for a while; pushed now (a failed push is retried by the controller's
        ticks, and ``lights`` shows it)."""
        override = self._set_override(lamp, level, duration_s, actor)
        await self._require_lighting().apply(lamp)
        return override

    async def clear_override(self, lamp: str, actor: str) -> object:
        return self._require_lighting().clear_override(lamp, actor)

    def _set_override(
        self, lamp: str, level: int, duration_s: float, actor: str
    ) -> dict[str, object]:
        lighting = self._require_lighting()
        try:
            override = lighting.set_override(lamp, level, duration_s, actor)
        except KeyError as exc:
            raise RequestError(f"no lamp {lamp!r} under the lighting controller") from exc
        except (TypeError, ValueError) as exc:
            raise RequestError(str(exc)) from exc
        return asdict(override)

    async def power_cycle(self, device: str, actor: str) -> object:
        power = self._control.power
        if power is None:
            raise RequestError("this pole has no power section in its config")
        return await power.power_cycle(device, actor)

    async def ptz(self, device: str, preset: int, actor: str) -> object:
        bus = self._buses.capable(device, Ptz, "device {device} is not a PTZ camera")
        return await bus.go_to_preset(device, preset, actor)

    async def reset_alarm(self, alarm_id: str, actor: str) -> object:
        """An operator's reset (acknowledge) of an alarm; what safety held is given back."""
        try:
            events = self._control.safety.reset(alarm_id, actor)
        except AlarmError as exc:
            raise RequestError(str(exc)) from exc
        return [event.to_json() for event in events]

    async def report_now(self, actor: str) -> object:
        """An integrity report of every point, now."""
        if self._telemetry is None:
            raise RequestError("telemetry is not enabled on this pole")
        self._telemetry.integrity()
        return {"reported": True}

    # ----- queries -----

    def status(self) -> dict[str, object]:
        problems = self._buses.problems()
        if self.api is not None:
            problems.extend(self.api.problems())
        if self._store.write_failures:
            problems.append(
                f"state file {self._store.path}: {self._store.write_failures} failed writes"
            )
        problems.extend(STATE_LEDGER.problems(self._store.path.parent))  # newer, unmigrated
        storage = self._outbox.problem()
        if storage is not None:
            problems.append(storage)
        if self._audit.torn_lines:
            problems.append(
                f"audit log {self._audit.path}: {self._audit.torn_lines} torn lines skipped"
            )
        if self._audit.newer_lines:
            problems.append(
                f"audit log {self._audit.path}: {self._audit.newer_lines} lines of a newer "
                "release skipped"
            )
        if self._uplink is not None and (session := self._uplink.session_problem()):
            problems.append(session)
        if self._releases is not None and self._releases.problem:
            problems.append(self._releases.problem)
        problems.extend(self._cameras.problems())
        return {
            "pole": self._config.pole.pole.id,
            "pole_name": self._config.pole.pole.name,
            "config": str(self._config.path),
            "pid": os.getpid(),
            "started_at": self._started_at,
            "uptime_s": round(time.time() - self._started_at, 1),
            "summary": self._buses.summary(),
            "problems": problems,
            "outbox": self._outbox.status(),
            "audit": {"file": str(self._audit.path), "torn_lines": self._audit.torn_lines},
            "state_files": STATE_LEDGER.counts(),
            "buses": [bus.health.to_json() for bus in self._buses],
            "devices": [device.to_json() for bus in self._buses for device in bus.devices],
            "clock": self._control.clock_watch.watch.to_json(),
            "releases": self._releases.status() if self._releases is not None else None,
        }

    def summary(self) -> str:
        return self._buses.summary()

    def points(self) -> list[dict[str, object]]:
        return list(self.iter_points())

    def point(self, device: str, point: str) -> dict[str, object] | None:
        """One point's row of ``points`` (None when there is no such point): what ``diag
        read`` shows beside a value, without sending the whole table."""
        sample = self._table.sample(device, point)
        return None if sample is None else sample.to_json()

    def iter_points(self) -> Iterator[dict[str, object]]:
        """``points`` one at a time: the local API sends a big table in slices."""
        return (sample.to_json() for sample in self._table.iter_snapshot())

    def plan(self) -> dict[str, object]:
        return {bus.name: bus.read_plan() for bus in self._buses}

    def audit(self, count: int = 20) -> list[dict[str, object]]:
        return self._audit.tail(count)

    def lights(self) -> list[dict[str, object]]:
        return self._require_lighting().status()

    def alarms(self) -> dict[str, object]:
        status = alarms_status(self._control.alarms, self._control.safety)
        status["outbox"] = {stream: dict(s) for stream, s in self._outbox.stats().items()}
        return status

    def lamp_accounts(self) -> Mapping[str, object]:
        monitor = self._control.lamp_monitor
        return monitor.accounts() if monitor is not None else {}

    def power(self) -> list[dict[str, object]]:
        if self._control.power is None:
            raise RequestError("this pole has no power section in its config")
        return self._control.power.status()

    def mcu(self) -> list[dict[str, object]]:
        mcus = [bus.diagnostics() for bus in self._buses.offering(Diagnosable)]
        if not mcus:
            raise RequestError("this pole has no pole-mcu bus in its config")
        return mcus

    def cameras(self) -> list[dict[str, object]]:
        return self._cameras.status()

    def uplink(self) -> dict[str, object]:
        if self._uplink is None and self._opcua is None:
            raise RequestError("this pole has no uplink section in its config")
        status: dict[str, Any] = self._uplink.status() if self._uplink is not None else {}
        if self._telemetry is not None:
            status["telemetry"] = self._telemetry.status()
        if self._opcua is not None:
            status["opcua"] = self._opcua()
        return status

    def api_status(self) -> dict[str, object]:
        """The local API's limits and overload counters (``diag api``)."""
        if self.api is None:
            raise RequestError("the local API is not running")
        return self.api.status()

    def _require_lighting(self) -> LightingController:
        if self._control.lighting is None:
            raise RequestError("this pole has no lighting section in its config")
        return self._control.lighting
