"""A bus whose devices are polled on a schedule, whatever its protocol.

Subclasses say how to open the line and how to poll one device; this class owns the
schedule, commands jumping the queue, request retries, offline detection with low-rate
probes, the counters, and the silence some lines need between frames. A dead device costs
the bus one probe request per probe interval, never a timeout per poll period. Getting the
line back after a failure is ``SupervisedBus``'s job.
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


@dataclass
class PolledDevice:
    name: str
    config: DeviceConfig
    health: DeviceHealth
    next_due: float = 0.0


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

    async def _poll_device(self, device: D, *, probe: bool) -> None:
        """Read the device (``probe``: one cheap request only); raise DriverError on failure."""
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
            self._table.mark_bad(device.name)

    async def _serve(self) -> None:
        await self._poll_forever()

    async def _poll_forever(self) -> None:
        start = time.monotonic()
        for device in self._devices.values():
            device.next_due = start
        while True:
            device = min(self._devices.values(), key=lambda d: d.next_due)
            # Commands run first; the wait for the next poll is also the wait for commands.
            if await self.commands.run_next(device.next_due - time.monotonic()):
                continue
            await self._poll(device)

    async def _poll(self, device: D) -> None:
        health = device.health
        offline = health.state is DeviceState.OFFLINE
        health.poll_started()
        period = device.config.poll_period_s
        try:
            await self._poll_device(device, probe=offline)
        except TransportError:
            raise
        except DriverError as exc:
            if health.poll_failed(str(exc)) or health.state is DeviceState.OFFLINE:
                self._table.mark_bad(device.name)
            if health.state is DeviceState.OFFLINE:
                missed = health.consecutive_failures - device.config.offline_after
                probe_max = max(period, device.config.offline_probe_s)
                period = min(period * 2 ** (missed + 1), probe_max)
        else:
            health.poll_succeeded()
            if offline:
                period = 0.0  # it answered the probe: read it fully right away
        device.next_due = max(device.next_due + period, time.monotonic())

    async def _request(
        self, device: D, call: Callable[[], Awaitable[T]], *, retries: int | None = None
    ) -> T:
        """One request with retries; every attempt is counted on the device and the bus."""
        attempts = 1 + (self._retries if retries is None else retries)
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
                self._count(device, outcome, started)
                retryable = outcome not in (Outcome.EXCEPTION, Outcome.ERROR)
                if not retryable or attempt + 1 == attempts:
                    raise
                await asyncio.sleep(RETRY_BACKOFF_S * 2**attempt)
                continue
            self._count(device, Outcome.OK, started)
            return result
        raise AssertionError("unreachable")  # pragma: no cover

    def _count(self, device: D, outcome: Outcome, started: float) -> None:
        ended = time.monotonic()
        self._line_free_at = ended + self._silence_s
        device.health.counters.record(outcome, ended - started)
        self.health.record(outcome, ended - started)
