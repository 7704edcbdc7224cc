"""The bus task's command queue: commands jump the polls, in order, and wake a waiting bus."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from smartpole.agent.buses.queue import CommandQueue


@pytest.mark.asyncio
async def test_commands_run_before_diagnostics_in_submission_order() -> None:
    queue = CommandQueue()
    ran: list[str] = []

    def job(name: str) -> Callable[[], Any]:
        async def run() -> str:
            ran.append(name)
            return name

        return run

    waiting = [
        asyncio.create_task(queue.submit(job("diag-1"), CommandQueue.DIAGNOSTIC)),
        asyncio.create_task(queue.submit(job("write-1"))),
        asyncio.create_task(queue.submit(job("write-2"))),
    ]
    while len(ran) < 3:
        assert await queue.run_next(1.0)
    assert ran == ["write-1", "write-2", "diag-1"]
    assert [await task for task in waiting] == ["diag-1", "write-1", "write-2"]
    assert not await queue.run_next(0.0)


@pytest.mark.asyncio
async def test_a_command_wakes_a_waiting_bus_at_once_and_its_error_goes_to_the_caller() -> None:
    queue = CommandQueue()

    async def failing() -> None:
        raise ValueError("refused by the device")

    loop = asyncio.get_running_loop()
    started = loop.time()
    waiting = asyncio.create_task(queue.run_next(30.0))  # a poll due in 30 s
    submitted = asyncio.create_task(queue.submit(failing))
    assert await waiting  # woken by the command, long before its 30 s
    assert loop.time() - started < 5.0
    with pytest.raises(ValueError, match="refused by the device"):
        await submitted
    assert not queue.pending()


@pytest.mark.asyncio
async def test_a_wait_without_commands_ends_false_and_a_cancelled_wait_leaves_no_waiter() -> None:
    queue = CommandQueue()
    assert not await queue.run_next(0.01)
    waiting = asyncio.create_task(queue.run_next(30.0))
    await asyncio.sleep(0)  # let it start waiting
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting

    async def job() -> str:
        return "ran"

    submitted = asyncio.create_task(queue.submit(job))
    assert await queue.run_next(1.0)
    assert await submitted == "ran"
