"""The lifecycle bases: idempotent close, cancellation re-raised, failed tasks surfaced;
and the synchronous one, whose ``with`` always closes."""

from __future__ import annotations

import asyncio

import pytest
import structlog

from smartpole.drivers.lifecycle import BackgroundTaskError, Closing, Lifecycle


class Service(Lifecycle):
    """Counts its hooks; ``start_error`` makes ``_start`` fail after opening."""

    def __init__(self, start_error: BaseException | None = None) -> None:
        super().__init__()
        self.start_error = start_error
        self.opened = self.released = self.stopped = 0
        self.failures: list[BackgroundTaskError] = []
        self.task: asyncio.Task[None] | None = None

    async def _start(self) -> None:
        self.opened += 1
        self.task = self.spawn(_forever(), name="idle")
        if self.start_error is not None:
            raise self.start_error

    def _release(self) -> None:
        self.released += 1

    async def _stopped(self) -> None:
        self.stopped += 1

    def _task_failed(self, error: BackgroundTaskError) -> None:
        self.failures.append(error)

    @property
    def idle_cancelled(self) -> bool:
        """The task ``_start`` spawned was cancelled by a close."""
        assert self.task is not None
        return self.task.cancelled()


async def _forever() -> None:
    await asyncio.Event().wait()


async def _fail(exc: BaseException) -> None:
    raise exc


@pytest.mark.asyncio
async def test_close_is_idempotent_and_stops_once() -> None:
    service = Service()
    async with service:
        assert service.running
    assert (service.running, service.idle_cancelled) == (False, True)
    await service.aclose()
    await service.aclose()
    assert (service.opened, service.stopped) == (1, 1)
    assert service.released == 3  # every close releases: the hook must be idempotent


@pytest.mark.asyncio
async def test_entering_twice_is_refused_but_a_closed_service_can_run_again() -> None:
    service = Service()
    async with service:
        with pytest.raises(RuntimeError, match="already running"):
            await service.__aenter__()
    async with service:
        assert service.running
    assert (service.opened, service.stopped) == (2, 2)


@pytest.mark.asyncio
async def test_a_failed_start_releases_what_it_opened() -> None:
    service = Service(start_error=OSError("no pty"))
    with pytest.raises(OSError, match="no pty"):
        await service.__aenter__()
    assert service.idle_cancelled
    assert (service.released, service.stopped, service.running) == (1, 0, False)


@pytest.mark.asyncio
async def test_a_cancelled_start_releases_and_is_re_raised() -> None:
    service = Service(start_error=asyncio.CancelledError())
    with pytest.raises(asyncio.CancelledError):
        await service.__aenter__()
    assert (service.released, service.running) == (1, False)


@pytest.mark.asyncio
async def test_cancelling_the_owner_cancels_the_tasks_and_propagates() -> None:
    service = Service()
    entered = asyncio.Event()

    async def owner() -> None:
        async with service:
            entered.set()
            await _forever()

    running = asyncio.create_task(owner())
    await entered.wait()
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert service.idle_cancelled
    assert (service.released, service.stopped) == (1, 1)


@pytest.mark.asyncio
async def test_a_cancelled_close_has_released_already_and_a_second_close_finishes() -> None:
    service = Service()
    cancel_seen = asyncio.Event()
    may_end = asyncio.Event()

    async def slow_to_stop() -> None:
        try:
            await _forever()
        except asyncio.CancelledError:
            cancel_seen.set()
            await may_end.wait()  # winds down for a while, as a real connection might
            raise

    async with service:
        stubborn = service.spawn(slow_to_stop(), name="stubborn")
        closing = asyncio.create_task(service.aclose())
        await cancel_seen.wait()
        assert service.released == 1  # before the first await: nothing can leak now
        closing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await closing
        assert not stubborn.done()
        may_end.set()
        await service.aclose()
        assert stubborn.cancelled()
    assert service.stopped == 0  # the run was ended by the first close, not completed


@pytest.mark.asyncio
async def test_a_failed_task_is_logged_when_it_fails_and_raised_by_the_close() -> None:
    service = Service()
    with structlog.testing.capture_logs() as logs:
        await service.__aenter__()
        task = service.spawn(_fail(ValueError("bad frame")), name="rx")
        await asyncio.wait({task})
        assert [e["event"] for e in logs] == ["background_task_failed"]
        assert (logs[0]["task"], logs[0]["owner"]) == ("rx", "Service")
    assert len(service.failures) == 1
    with pytest.raises(BackgroundTaskError, match="rx failed") as caught:
        await service.aclose()
    assert isinstance(caught.value.__cause__, ValueError)
    assert service.idle_cancelled
    await service.aclose()  # raised once; the service is simply closed now


@pytest.mark.asyncio
async def test_a_failed_task_fails_a_clean_exit_but_not_over_the_bodys_own_error() -> None:
    service = Service()
    with pytest.raises(BackgroundTaskError):
        async with service:
            await asyncio.wait({service.spawn(_fail(ValueError("x")), name="rx")})

    async def failing_body() -> None:
        async with service:
            await asyncio.wait({service.spawn(_fail(ValueError("x")), name="rx")})
            raise KeyError("the body's own")

    with pytest.raises(KeyError):
        await failing_body()
    async with service:  # the swallowed failure does not haunt the next run
        pass


@pytest.mark.asyncio
async def test_a_task_may_close_its_own_owner() -> None:
    service = Service()
    await service.__aenter__()

    async def close_from_inside() -> None:
        await service.aclose()

    task = service.spawn(close_from_inside(), name="closer")
    await asyncio.wait({task})
    assert task.exception() is None
    assert service.idle_cancelled
    assert (service.running, service.stopped) == (False, 1)


class Handle(Closing):
    def __init__(self) -> None:
        self.closed = 0

    def close(self) -> None:
        self.closed += 1


def test_with_gives_the_object_and_closes_it_whatever_happens_inside() -> None:
    handle = Handle()
    with handle as entered:
        assert entered is handle
        assert handle.closed == 0
    assert handle.closed == 1
    with pytest.raises(KeyError), handle:
        raise KeyError("the body's own")  # not swallowed
    assert handle.closed == 2


def test_a_closing_without_close_cannot_be_made() -> None:
    class Forgetful(Closing):
        pass

    with pytest.raises(TypeError, match="abstract"):
        Forgetful()  # type: ignore[abstract]
