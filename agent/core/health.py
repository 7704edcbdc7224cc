"""Health records of buses and devices: what a technician reads in ``smartpole diag status``.

A failure is logged once when it starts and once when it clears (Home Assistant's
coordinator pattern); the counters say how often it happened in between.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import asdict, dataclass, field
from enum import StrEnum

import structlog

log = structlog.get_logger("smartpole.health")

#: The key of a bus's read plan (``diag plan``) under which the devices' lessons from their
#: refusals are listed; not a device name, since names are identifiers.
LEARNT_KEY = "(learnt)"
UTILISATION_WINDOW_S = 60.0
# A device that failed SLOW_AFTER of its last SLOW_WINDOW polls is slow (its own budget:
# no retries, backed-off polls) until SLOW_WINDOW polls in a row have succeeded. Half: a
# neighbour that loses a poll now and then to a slow device's late answer is not slow.
SLOW_WINDOW = 8
SLOW_AFTER = 4


class DeviceState(StrEnum):
    UNKNOWN = "unknown"  # not polled successfully yet
    ONLINE = "online"
    # missed `offline_after` polls in a row, or its bus's port or endpoint is unavailable
    # (``port_lost``); probed at a low rate
    OFFLINE = "offline"
    # answered garbage (corrupt or malformed frames, another unit's or function's reply,
    # bytes nobody asked for) `offline_after` polls in a row; probed at a low rate too
    FAULTY = "faulty"
    # alive, but of no use: answered every read with an exception it cannot be read around
    # (1 illegal function, 4 device failure, 6 busy, ...) `offline_after` polls in a row, or
    # refused every point of its profile (nothing left to read); probed at a low rate too
    REFUSING = "refusing"


class BusState(StrEnum):
    STARTING = "starting"
    CONNECTED = "connected"
    PORT_UNAVAILABLE = "port_unavailable"


class Outcome(StrEnum):
    """How one request on the wire ended; each has its own counter."""

    OK = "ok"
    TIMEOUT = "timeout"  # nothing came back
    CRC_ERROR = "crc_error"  # something came back, corrupted
    GARBAGE = "garbage"  # bytes that were no frame at all
    WRONG_UNIT = "wrong_unit"  # another device answered (address conflict, echo)
    WRONG_FUNCTION = "wrong_function"
    EXCEPTION = "exception"  # the device refused (protocol exception / error reply)
    ERROR = "error"  # anything else that went wrong with the reply

    @property
    def garbled(self) -> bool:
        """Something came back, but not a sound answer: the device (or its wiring) is
        faulty, not merely silent."""
        return self in _GARBLED


_DOWN = frozenset({DeviceState.OFFLINE, DeviceState.FAULTY, DeviceState.REFUSING})
_GARBLED = frozenset(
    {Outcome.CRC_ERROR, Outcome.GARBAGE, Outcome.WRONG_UNIT, Outcome.WRONG_FUNCTION}
)


@dataclass
class Counters:
    requests: int = 0
    ok: int = 0
    timeout: int = 0
    crc_error: int = 0
    garbage: int = 0
    wrong_unit: int = 0
    wrong_function: int = 0
    exception: int = 0
    error: int = 0
    busy_s: float = 0.0
    mean_latency_ms: float | None = None

    def record(self, outcome: Outcome, duration_s: float) -> None:
        self.requests += 1
        setattr(self, outcome.value, getattr(self, outcome.value) + 1)
        self.busy_s += duration_s
        if outcome is Outcome.OK:
            latency_ms = duration_s * 1000
            previous = self.mean_latency_ms
            self.mean_latency_ms = (
                latency_ms if previous is None else previous * 0.8 + latency_ms * 0.2
            )


@dataclass
class DeviceHealth:
    name: str
    bus: str
    address: str
    profile: str
    offline_after: int
    state: DeviceState = DeviceState.UNKNOWN
    consecutive_failures: int = 0
    polls: int = 0
    counters: Counters = field(default_factory=Counters)
    last_error: str | None = None
    last_success_at: float | None = None
    state_since: float = field(default_factory=time.time)
    unsupported_points: list[str] = field(default_factory=list)
    suspect_values: int = 0  # readings that were NaN/inf or outside the profile's range
    slow: bool = False  # failing often (late or no answers): polled on a tight budget
    _results: deque[bool] = field(default_factory=lambda: deque(maxlen=SLOW_WINDOW), repr=False)
    _last_start: float | None = field(default=None, repr=False)
    _by_port: bool = field(default=False, repr=False)  # offline because its port went away
    _intervals: deque[float] = field(default_factory=lambda: deque(maxlen=20), repr=False)

    def poll_started(self) -> None:
        """Track the time between polls: what a dead neighbour on the bus costs this device."""
        now = time.monotonic()
        if self._last_start is not None:
            self._intervals.append(now - self._last_start)
        self._last_start = now

    @property
    def down(self) -> bool:
        """Offline, faulty or refusing: probed at a low rate, one request at a time."""
        return self.state in _DOWN

    @property
    def recent_failures(self) -> int:
        """Failed polls among the last ``SLOW_WINDOW``: what its budget is cut by."""
        return self._results.count(False)

    def _track(self, ok: bool) -> None:
        self._results.append(ok)
        failures = self.recent_failures
        if not self.slow and failures >= SLOW_AFTER:
            self._become_slow("fails often")
        elif self.slow and failures == 0 and len(self._results) == SLOW_WINDOW:
            self.slow = False
            log.info("device_slow_cleared", device=self.name, bus=self.bus, address=self.address)

    def _become_slow(self, reason: str) -> None:
        self.slow = True
        log.warning(
            "device_slow",
            device=self.name,
            bus=self.bus,
            address=self.address,
            reason=reason,
            failures=self.recent_failures,
            of_polls=len(self._results),
            error=self.last_error,
        )

    def port_lost(self, error: str) -> None:
        """Its bus's port or endpoint is unusable: nothing can reach the device, so it is
        offline whatever it answered before (never shown online behind a dead port). Not
        its fault: when the port is back it is not put on probation for it."""
        if self.down:
            return  # offline already, or faulty: its own error says more than the port's
        self.last_error = f"port unavailable: {error}"
        log.warning(
            "device_offline",
            device=self.name,
            bus=self.bus,
            address=self.address,
            reason="port unavailable",
            error=error,
        )
        self._by_port = True
        self._enter(DeviceState.OFFLINE)

    def poll_succeeded(self) -> None:
        self.polls += 1
        self.last_success_at = time.time()
        by_port, self._by_port = self._by_port, False
        if self.down and not self.slow and not by_port:
            # Back from offline or faulty: on probation (its budget) until SLOW_WINDOW clean
            # polls. On RTU a slow device's late answer is taken for the answer to a later
            # request now and then; without this it would flap back to full-rate polls.
            self._become_slow(f"back from {self.state.value}, on probation")
        self._track(True)
        if self.state is not DeviceState.ONLINE:
            log.info(
                "device_online",
                device=self.name,
                bus=self.bus,
                address=self.address,
                was=self.state.value,
                after_failures=self.consecutive_failures,
            )
            self._enter(DeviceState.ONLINE)
        self.consecutive_failures = 0
        self.last_error = None

    def poll_failed(
        self, error: str, *, garbled: bool = False, refused: bool = False, at_once: bool = False
    ) -> bool:
        """Count a failed poll; True when this failure took the device offline, faulty or
        refusing.

        ``garbled``: something came back that was no sound answer. A device that keeps
        doing that is faulty rather than offline: a technician looks at its wiring,
        termination or firmware, not at its power. ``refused``: it answered, with an
        exception: refusing, alive and wired right, but its profile, address map or own
        health is wrong. ``at_once``: the failure is no episode that may pass (every point
        of the device was refused one by one), so ``offline_after`` is not waited for.
        """
        self.polls += 1
        self.consecutive_failures += 1
        self.last_error = error
        self._track(False)
        if self.consecutive_failures < self.offline_after and not at_once:
            return False
        self._by_port = False  # it failed on a working port: its own doing from now on
        if garbled:
            state = DeviceState.FAULTY
        elif refused:
            state = DeviceState.REFUSING
        else:
            state = DeviceState.OFFLINE
        if self.state is state:
            return False
        log.warning(
            f"device_{state.value}",
            device=self.name,
            bus=self.bus,
            address=self.address,
            failures=self.consecutive_failures,
            error=error,
        )
        self._enter(state)
        return True

    def _enter(self, state: DeviceState) -> None:
        self.state = state
        self.state_since = time.time()

    def to_json(self) -> dict[str, object]:
        data = {k: v for k, v in asdict(self).items() if not k.startswith("_")}
        data["state"] = self.state.value
        data["recent_poll_intervals_s"] = [round(i, 4) for i in self._intervals]
        return data


@dataclass
class BusHealth:
    name: str
    endpoint: str
    settings: str
    state: BusState = BusState.STARTING
    last_error: str | None = None
    connects: int = 0
    link_losses: int = 0  # the link failed while in use (each one is followed by a reconnect)
    last_loss_at: float | None = None  # epoch seconds, for display
    state_write_failures: int = 0  # what the bus learnt of its devices could not be saved
    # serial lines: answers that came in the quiet period after a timeout (too late for
    # their request), dropped rather than taken for the next one; and every byte that came
    # while no request was waiting (late answers, noise). A slow device's sign.
    late_answers: int = 0
    stray_bytes: int = 0
    counters: Counters = field(default_factory=Counters)
    state_since: float = field(default_factory=time.time)
    _recent: deque[tuple[float, float]] = field(default_factory=deque, repr=False)
    _lost_mono: float | None = field(default=None, repr=False)

    def record(self, outcome: Outcome, duration_s: float) -> None:
        self.counters.record(outcome, duration_s)
        now = time.monotonic()
        self._recent.append((now, duration_s))
        while self._recent and self._recent[0][0] < now - UTILISATION_WINDOW_S:
            self._recent.popleft()

    def utilisation(self) -> float:
        """Share of the last minute the bus carried a request or waited for its answer."""
        if not self._recent:
            return 0.0
        now = time.monotonic()
        busy = sum(duration for at, duration in self._recent if at >= now - UTILISATION_WINDOW_S)
        return min(1.0, busy / UTILISATION_WINDOW_S)

    def connected(self) -> None:
        self.connects += 1
        if self.state is BusState.PORT_UNAVAILABLE:
            log.info("bus_port_available", bus=self.name, endpoint=self.endpoint)
        self.state = BusState.CONNECTED
        self.state_since = time.time()
        self.last_error = None

    def link_lost(self) -> None:
        self.link_losses += 1
        self.last_loss_at = time.time()
        self._lost_mono = time.monotonic()

    def link_lost_within(self, seconds: float) -> float | None:
        """Seconds since the last link loss, if it was within ``seconds`` (monotonic, so a
        wall-clock step neither hides nor invents one)."""
        if self._lost_mono is None:
            return None
        ago = time.monotonic() - self._lost_mono
        return ago if ago < seconds else None

    def unavailable(self, error: str) -> None:
        if self.state is not BusState.PORT_UNAVAILABLE:
            log.error("bus_port_unavailable", bus=self.name, endpoint=self.endpoint, error=error)
            self.state = BusState.PORT_UNAVAILABLE
            self.state_since = time.time()
        self.last_error = error

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "endpoint": self.endpoint,
            "settings": self.settings,
            "state": self.state.value,
            "last_error": self.last_error,
            "connects": self.connects,
            "link_losses": self.link_losses,
            "last_loss_at": self.last_loss_at,
            "counters": asdict(self.counters),
            "utilisation": round(self.utilisation(), 4),
            "state_since": self.state_since,
            "state_write_failures": self.state_write_failures,
            "late_answers": self.late_answers,
            "stray_bytes": self.stray_bytes,
        }
