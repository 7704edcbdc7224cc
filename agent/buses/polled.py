"""A bus whose devices are polled on a schedule, whatever its protocol.

Subclasses say how to open the line and how to poll one device; this class owns the
schedule, commands jumping the queue, request retries, offline detection with low-rate
probes, the counters, and the silence some lines need between frames. A dead device costs
the bus one probe request per probe interval, never a timeout per poll period. Getting the
line back after a failure is ``SupervisedBus``'s job.

Each device spends only its own budget of the bus. A device that has not answered yet, or
whose last poll failed, gets one request per poll and no retries (once it answers that
one, a protocol may read the rest of it in the same poll, still without retries; Modbus
does, and a failure in that rest is counted as the next poll's: ``BehindProbeError``);
from its second failure in a row its polls back off (doubling, up to ``offline_probe_s``).
A device that fails often, or has just come back from offline or faulty, is ``slow`` (on
probation): no retries, and its failed polls back off by its recent failures, until its
polls have succeeded a while. So a slow slave that times out again and again costs its
neighbours one reply timeout per backed-off interval, and on a shared RS-485 pair its late
answers, which spoil whatever else is on the wire (and can be taken for the answer to a
later request: RTU has no transaction id), become as rare as its polls. A device whose
failures are garbage (corrupt frames, another unit's reply, bytes that broke the link) is
``faulty`` rather than ``offline``, and one whose failures are exceptions (it answers, but
refuses every read, or has refused every point it has) is ``refusing``, with the same
budget. Its points say which (``REASONS``): a technician tells "refused by the device"
from "the device does not answer" in ``diag points``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from smartpole.agent.buses.supervised import SupervisedBus
from smartpole.agent.config.pole import DeviceConfig
from smartpole.agent.core.health import BusHealth, DeviceHealth, DeviceState, Outcome
from smartpole.agent.core.points import PointTable
from smartpole.drivers.errors import (
    DeviceExceptionError,
    DeviceTimeoutError,
    DriverError,
    TransportError,
)

RETRY_BACKOFF_S = 0.02
STALE_AFTER_PERIODS = 3
T = TypeVar("T")

# Why a point has no good reading (``diag points``, beside its quality). The first is a
# point's own; the others are its device's state.
REFUSED = "refused"  # the device answered this point's read with an exception
REASONS = {
    DeviceState.REFUSING: "device refusing",  # answers every read with an exception
    DeviceState.OFFLINE: "no answer",
    DeviceState.FAULTY: "garbled answers",
}
PORT_UNAVAILABLE = "port unavailable"


class NothingToReadError(DeviceExceptionError):
    """Every point of the device was refused: it answers, but there is nothing to read.

    No episode that may pass by itself, so the device is ``refusing`` at once; its probes
    ask one refused point again, and an answer makes it read in full once more."""


class BehindProbeError(DriverError):
    """The probe of a cautious poll was answered, then the full read behind it failed with
    ``cause``. Counted as what it would have been with the full read as the next poll: a
    poll that succeeded, then one that failed; so a device that drops some requests is
    slow (on probation), never offline: it does answer."""

    def __init__(self, cause: DriverError) -> None:
        super().__init__(str(cause))
        self.cause = cause


@dataclass
class PolledDevice:
    name: str
    config: DeviceConfig
    health: DeviceHealth
    next_due: float | None = None  # None: never scheduled; kept across reconnects
    # the last garbled outcome of the poll under way and its error, if any
    garbled: tuple[Outcome, str] | None = None


D = TypeVar("D", bound=PolledDevice)


class PolledBus(SupervisedBus, Generic[D]):
    """Polls its devices until cancelled; survives every device or port failure."""

    def __init__(
        self, name: str, health: BusHealth, table: PointTable, *, retries: int, silence_s: float
    ) -> None:
        super().__init__(name, health)
        self._table = table
        self._retries = retries
        self._silence_s = silence_s
        self._line_free_at = 0.0
        self._devices: dict[str, D] = {}

    # ----- what a protocol provides -----

    async def _poll_device(self, device: D, *, probe: bool) -> bool | None:
        """Read the device (``probe``: one cheap request first, no retries, and nothing
        more unless it is answered); raise DriverError on failure. True: the probe was
        answered and the device read in full in the same poll."""
        raise NotImplementedError

    def _outcome_of(self, exc: DriverError) -> Outcome:
        if isinstance(exc, DeviceTimeoutError):
            return Outcome.TIMEOUT
        if isinstance(exc, DeviceExceptionError):
            return Outcome.EXCEPTION
        return Outcome.ERROR

    # ----- shared behaviour -----

    @property
    def devices(self) -> list[DeviceHealth]:
        return [device.health for device in self._devices.values()]

    def device_names(self) -> list[str]:
        return list(self._devices)

    def _link_lost(self, error: str) -> None:
        super()._link_lost(error)
        for device in self._devices.values():
            self._table.mark_bad(device.name, PORT_UNAVAILABLE)

    async def _serve(self) -> None:
        await self._poll_forever()

    async def _poll_forever(self) -> None:
        # A reconnect keeps every device's schedule: a device backed off for babbling
        # (whose garbage broke the link) is not polled again the moment the link is back.
        start = time.monotonic()
        for device in self._devices.values():
            if device.next_due is None:
                device.next_due = start
        while True:
            device = min(self._devices.values(), key=_due)
            # Commands run first; the wait for the next poll is also the wait for commands.
            if await self.commands.run_next(_due(device) - time.monotonic()):
                continue
            await self._poll(device)

    async def _poll(self, device: D) -> None:
        health = device.health
        # Never answered yet, down, or its last poll failed: one cheap request and no retry
        # (its budget; a slow device gets no retries either, see _request). A retry pair
        # to a slow RTU slave comes back as a pair of late answers, which spoils a
        # neighbour's request and its retry alike.
        cautious = (
            health.state is DeviceState.UNKNOWN or health.down or health.consecutive_failures > 0
        )
        health.poll_started()
        self._forget_garbage(device)
        period = device.config.poll_period_s
        try:
            read_in_full = await self._poll_device(device, probe=cautious)
        except TransportError:
            if device.garbled is not None:
                # Its own garbage broke the link: the device is to blame, not the line.
                self._failed(device, f"{device.garbled[1]}; link reset", garbled=True)
                device.next_due = _due(device) + self._backoff(device)
            raise
        except BehindProbeError as exc:
            health.poll_succeeded()
            cause = exc.cause
            garbled = self._outcome_of(cause).garbled or device.garbled is not None
            refused = self._outcome_of(cause) is Outcome.EXCEPTION
            self._failed(device, str(cause), garbled=garbled, refused=refused, at_once=False)
            period = self._backoff(device)
        except DriverError as exc:
            outcome = self._outcome_of(exc)
            garbled = outcome.garbled or device.garbled is not None
            refused = outcome is Outcome.EXCEPTION
            at_once = isinstance(exc, NothingToReadError)
            self._failed(device, str(exc), garbled=garbled, refused=refused, at_once=at_once)
            period = self._backoff(device)
        else:
            health.poll_succeeded()
            if cautious and not read_in_full:
                period = 0.0  # it answered the probe: read it fully right away
        device.next_due = max(_due(device) + period, time.monotonic())

    @staticmethod
    def _forget_garbage(device: D) -> None:
        # A method rather than an assignment in _poll, so the type checker does not take
        # ``device.garbled`` for None still after the awaits that set it.
        device.garbled = None

    def _failed(
        self,
        device: D,
        error: str,
        *,
        garbled: bool,
        refused: bool = False,
        at_once: bool = False,
    ) -> None:
        health = device.health
        if health.poll_failed(error, garbled=garbled, refused=refused, at_once=at_once) or (
            health.down
        ):
            self._table.mark_bad(device.name, REASONS.get(health.state))

    def _backoff(self, device: D) -> float:
        """The wait after a poll of a failing device: the period, doubling from the second
        failure in a row (or among its recent polls), never longer than the device's probe
        interval (nor shorter than its period)."""
        period = device.config.poll_period_s
        health = device.health
        streak = health.consecutive_failures
        if health.slow:
            streak = max(streak, health.recent_failures - 1)
        if streak < 2:
            return period
        factor: float = 2.0 ** (streak - 1)
        return min(period * factor, max(period, device.config.offline_probe_s))

    async def _request(
        self, device: D, call: Callable[[], Awaitable[T]], *, retries: int | None = None
    ) -> T:
        """One request with retries (none for a slow device: its budget); every attempt
        is counted on the device and the bus."""
        if retries is None:
            retries = 0 if device.health.slow else self._retries
        attempts = 1 + retries
        for attempt in range(attempts):
            wait = self._line_free_at - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)  # the silence the line needs between frames
            started = time.monotonic()
            try:
                result = await call()
            except TransportError:
                raise
            except DriverError as exc:
                outcome = self._outcome_of(exc)
                self._count(device, outcome, started, str(exc))
                retryable = outcome not in (Outcome.EXCEPTION, Outcome.ERROR)
                if not retryable or attempt + 1 == attempts:
                    raise
                await asyncio.sleep(RETRY_BACKOFF_S * 2**attempt)
                continue
            self._count(device, Outcome.OK, started)
            return result
        raise AssertionError("unreachable")  # pragma: no cover

    def _late_answers(self) -> tuple[int, int]:
        """The line's late answers and stray bytes so far (its client's counters; a serial
        protocol's client counts them, see ``BusHealth``)."""
        return 0, 0

    def _count(self, device: D, outcome: Outcome, started: float, error: str = "") -> None:
        ended = time.monotonic()
        self._line_free_at = ended + self._silence_s
        device.health.counters.record(outcome, ended - started)
        self.health.record(outcome, ended - started)
        self.health.late_answers, self.health.stray_bytes = self._late_answers()
        if outcome.garbled:
            device.garbled = (outcome, error)


def _due(device: PolledDevice) -> float:
    return 0.0 if device.next_due is None else device.next_due
