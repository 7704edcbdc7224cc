"""Health records of buses and devices: what a technician reads in ``smartpole diag status``.

A failure is logged once when it starts and once when it clears (Home Assistant's
coordinator pattern); the counters say how often it happened in between.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from enum import StrEnum

import structlog

log = structlog.get_logger("smartpole.health")


class DeviceState(StrEnum):
    UNKNOWN = "unknown"  # not polled successfully yet
    ONLINE = "online"
    OFFLINE = "offline"  # missed `offline_after` polls in a row; probed at a low rate


class BusState(StrEnum):
    STARTING = "starting"
    CONNECTED = "connected"
    PORT_UNAVAILABLE = "port_unavailable"


@dataclass
class DeviceHealth:
    name: str
    bus: str
    unit_id: int
    profile: str
    offline_after: int
    state: DeviceState = DeviceState.UNKNOWN
    consecutive_failures: int = 0
    polls: int = 0
    requests: int = 0
    successes: int = 0
    timeouts: int = 0
    exceptions: int = 0
    errors: int = 0
    last_error: str | None = None
    last_success_at: float | None = None
    mean_latency_ms: float | None = None
    state_since: float = field(default_factory=time.time)

    def succeeded(self, latency_s: float) -> None:
        self.requests += 1
        self.successes += 1
        latency_ms = latency_s * 1000
        previous = self.mean_latency_ms
        self.mean_latency_ms = latency_ms if previous is None else previous * 0.8 + latency_ms * 0.2

    def poll_succeeded(self) -> None:
        self.polls += 1
        self.last_success_at = time.time()
        if self.state is not DeviceState.ONLINE:
            log.info(
                "device_online",
                device=self.name,
                bus=self.bus,
                unit_id=self.unit_id,
                after_failures=self.consecutive_failures,
            )
            self._enter(DeviceState.ONLINE)
        self.consecutive_failures = 0
        self.last_error = None

    def poll_failed(self, error: str) -> bool:
        """Count a failed poll; True when this failure took the device offline."""
        self.polls += 1
        self.consecutive_failures += 1
        self.last_error = error
        reached = self.consecutive_failures >= self.offline_after
        if reached and self.state is not DeviceState.OFFLINE:
            log.warning(
                "device_offline",
                device=self.name,
                bus=self.bus,
                unit_id=self.unit_id,
                failures=self.consecutive_failures,
                error=error,
            )
            self._enter(DeviceState.OFFLINE)
            return True
        return False

    def _enter(self, state: DeviceState) -> None:
        self.state = state
        self.state_since = time.time()

    def to_json(self) -> dict[str, object]:
        data = asdict(self)
        data["state"] = self.state.value
        return data


@dataclass
class BusHealth:
    name: str
    port: str
    settings: str
    state: BusState = BusState.STARTING
    last_error: str | None = None
    connects: int = 0
    state_since: float = field(default_factory=time.time)

    def connected(self) -> None:
        self.connects += 1
        if self.state is BusState.PORT_UNAVAILABLE:
            log.info("bus_port_available", bus=self.name, port=self.port)
        self.state = BusState.CONNECTED
        self.state_since = time.time()
        self.last_error = None

    def unavailable(self, error: str) -> None:
        if self.state is not BusState.PORT_UNAVAILABLE:
            log.error("bus_port_unavailable", bus=self.name, port=self.port, error=error)
            self.state = BusState.PORT_UNAVAILABLE
            self.state_since = time.time()
        self.last_error = error

    def to_json(self) -> dict[str, object]:
        data = asdict(self)
        data["state"] = self.state.value
        return data
