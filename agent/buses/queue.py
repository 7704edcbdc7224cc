"""Commands that jump a bus's polling queue.

A bus is half duplex, so everything that uses it, polls and commands alike, goes through
the one task that owns it. Commands wait at most for the request on the wire to finish.
"""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

Job = Callable[[], Awaitable[Any]]


@dataclass(order=True)
class _Queued:
    priority: int
    sequence: int
    job: Job = field(compare=False)
    result: asyncio.Future[Any] = field(compare=False)


class CommandQueue:
    """Commands for a bus, run by its task between two requests, in priority order.

    The bus task waits here between polls (50 times a second on a busy gateway), and a
    wait usually ends by its timeout, so it is one future and one timer rather than
    ``asyncio.wait_for`` on a queue, which makes and cancels a task every time.
    """

    COMMAND = 0  # writes and operator actions
    DIAGNOSTIC = 1  # technician reads

    def __init__(self) -> None:
        self._heap: list[_Queued] = []
        self._sequence = 0
        self._waiter: asyncio.Future[None] | None = None

    async def submit(self, job: Job, priority: int = COMMAND) -> Any:
        """Queue ``job`` for the bus task and wait for its result (or its exception)."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._sequence += 1
        heapq.heappush(self._heap, _Queued(priority, self._sequence, job, future))
        _wake(self._waiter)
        return await future

    def pending(self) -> bool:
        return bool(self._heap)

    async def run_next(self, timeout_s: float) -> bool:
        """Run one queued command, waiting up to ``timeout_s`` for one; False if none came."""
        if not self._heap:
            if timeout_s <= 0:
                return False
            loop = asyncio.get_running_loop()
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiter = waiter
            timer = loop.call_later(timeout_s, _wake, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
                self._waiter = None
            if not self._heap:
                return False
        item = heapq.heappop(self._heap)
        if item.result.cancelled():
            return True
        try:
            value = await item.job()
        except asyncio.CancelledError:
            item.result.cancel()
            raise
        except Exception as exc:  # noqa: BLE001 - handed to the caller who asked, not lost
            item.result.set_exception(exc)
        else:
            item.result.set_result(value)
        return True


def _wake(waiter: asyncio.Future[None] | None) -> None:
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


class QueuedPoints:
    """Reads and writes of single points, run by the bus's own task ahead of its polls.

    For a bus that owns ``commands`` and implements ``_read_point``/``_write_point``: the
    public methods only queue them, so the line stays the task's alone.
    """

    commands: CommandQueue

    async def write_point(
        self, device: str, point: str, value: object, actor: str, *, audit: bool = True
    ) -> object:
        """Write one point, checked, read back and audited; returns the read-back.

        ``audit=False`` is for lease refreshes that rewrite an unchanged value every few
        minutes; a failed write is audited all the same.
        """
        return await self.commands.submit(
            lambda: self._write_point(device, point, value, actor, audit)
        )

    async def read_point(self, device: str, point: str) -> object:
        return await self.commands.submit(
            lambda: self._read_point(device, point), CommandQueue.DIAGNOSTIC
        )

    async def _write_point(
        self, device: str, point: str, value: object, actor: str, audit: bool
    ) -> object:
        raise NotImplementedError

    async def _read_point(self, device: str, point: str) -> object:
        raise NotImplementedError
