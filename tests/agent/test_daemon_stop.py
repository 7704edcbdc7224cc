"""The daemon's stop: every task ends, even one whose first cancellation was lost."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from structlog.testing import capture_logs

from smartpole.agent import daemon
from smartpole.agent.daemon import _stop_when_set, _StopRequestedError


async def _loses_first_cancel(started: asyncio.Event, ended: asyncio.Event) -> None:
    """Behaves like a poll loop around Python 3.11's wait_for when a reply and the
    cancellation arrive together: the first cancellation vanishes, the loop goes on."""
    started.set()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.Event().wait()
    try:
        await asyncio.Event().wait()
    finally:
        ended.set()


async def _forever(started: asyncio.Event) -> None:
    started.set()
    await asyncio.Event().wait()


@pytest.mark.asyncio
async def test_a_task_that_lost_its_cancel_is_named_and_cancelled_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(daemon, "CANCEL_GRACE_S", 0.05)
    ended = asyncio.Event()
    started = [asyncio.Event(), asyncio.Event()]
    stubborn = asyncio.create_task(_loses_first_cancel(started[0], ended), name="bus:stubborn")
    polite = asyncio.create_task(_forever(started[1]), name="bus:polite")
    for event in started:
        await event.wait()
    stop = asyncio.Event()
    stop.set()
    with capture_logs() as logs, pytest.raises(_StopRequestedError):
        await _stop_when_set(stop, [stubborn, polite])
    assert ended.is_set()
    assert stubborn.cancelled()
    assert polite.cancelled()
    outlived = [e for e in logs if e["event"] == "task_outlived_cancel"]
    assert [e["task"] for e in outlived] == ["bus:stubborn"]


@pytest.mark.asyncio
async def test_tasks_that_end_when_cancelled_are_cancelled_once() -> None:
    cancels: list[str] = []
    started = [asyncio.Event() for _ in range(3)]

    async def counts(name: str, started: asyncio.Event) -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancels.append(name)
            raise

    tasks = [asyncio.create_task(counts(f"t{i}", started[i]), name=f"t{i}") for i in range(3)]
    for event in started:
        await event.wait()
    stop = asyncio.Event()
    stop.set()
    with capture_logs() as logs, pytest.raises(_StopRequestedError):
        await _stop_when_set(stop, tasks)
    assert sorted(cancels) == ["t0", "t1", "t2"]
    assert not [e for e in logs if e["event"] == "task_outlived_cancel"]
