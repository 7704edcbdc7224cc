"""One lifecycle for everything that is opened, may run in the background, and is closed.

Every driver client and simulator is an async context manager (``async with`` opens it,
leaving closes it, ``aclose()`` closes it early), as STYLE.md takes from aiomqtt. The rules
that make closing safe are easy to get subtly wrong when every class writes them again, so
:class:`Lifecycle` keeps them once:

* closing is idempotent: a second ``aclose()``, or one after a failed start, is harmless;
* synchronous resources (descriptors, timers) are released before the first ``await``, so
  a cancellation that arrives while background tasks wind down cannot leak them;
* background tasks are cancelled and awaited, and the caller's own cancellation is always
  re-raised, never swallowed (a second ``aclose()`` waits for whatever is still winding
  down);
* a background task that dies of an exception is logged when it dies and raised from
  ``aclose()`` as :class:`BackgroundTaskError`, so a server that quietly stopped answering
  fails the rig that used it instead of only leaving a line in a log.

Objects that hold only synchronous resources (a file, a socket, a database) need none of
that: :class:`Closing` makes ``with`` call their ``close()``, which is all they share.

It lives at the bottom of ``smartpole.drivers`` so the agent can build on it too.
"""

from __future__ import annotations

import abc
import asyncio
import enum
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, Self

import structlog

log = structlog.get_logger(__name__)


class BackgroundTaskError(RuntimeError):
    """A background task ended with an exception; ``__cause__`` is that exception."""


class Closing(abc.ABC):
    """Base for objects with a synchronous ``close()``: ``with`` returns the object and
    closes it on the way out, whatever happened inside. A subclass that opens on entry
    overrides ``__enter__``; ``close()`` must be safe to call twice, since callers may
    also close early.
    """

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @abc.abstractmethod
    def close(self) -> None:
        """Release what the object holds; idempotent."""


class AsyncClosing(abc.ABC):
    """Base for objects opened by a synchronous ``open()`` and closed by an awaited
    ``aclose()`` that their owner may also call directly (the MCU link and connection):
    ``async with`` opens on entry and closes on the way out, whatever happened inside.
    ``aclose()`` must be safe to call twice."""

    async def __aenter__(self) -> Self:
        self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    @abc.abstractmethod
    def open(self) -> None:
        """Open what the object needs; raise if it cannot."""

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Release what the object holds; idempotent."""


class _State(enum.Enum):
    IDLE = enum.auto()
    STARTING = enum.auto()
    RUNNING = enum.auto()


class Lifecycle:
    """Base for objects with an open/run/close life. Subclasses fill in the hooks they need:

    * ``_start()`` (async) opens and starts background work with :meth:`spawn`; if it
      raises, or is cancelled, what it had opened is released before the error propagates;
    * ``_release()`` (sync) frees what ``_start`` or a public ``open()`` took. It runs on
      every close, so it must be idempotent;
    * ``_stopped()`` (async) runs once per completed start, after every background task has
      ended: the place for a final log line with the counters;
    * ``_task_failed(error)`` (sync) runs as soon as a background task has died, so whoever
      waits on that task's progress can be told at once.

    Reusable, not re-entrant: after a close it may be entered again; entering it while it
    runs is a RuntimeError. The base's own state is name-mangled so that it never collides
    with a subclass's attributes.
    """

    def __init__(self) -> None:
        self.__state = _State.IDLE
        self.__tasks: set[asyncio.Task[None]] = set()
        self.__failure: BackgroundTaskError | None = None

    @property
    def running(self) -> bool:
        """Entered and not yet closed."""
        return self.__state is _State.RUNNING

    async def __aenter__(self) -> Self:
        if self.__state is not _State.IDLE:
            raise RuntimeError(f"{type(self).__name__} is already running")
        self.__state = _State.STARTING
        self.__failure = None
        try:
            await self._start()
        except BaseException:
            await self.__close(raise_failure=False)
            raise
        self.__state = _State.RUNNING
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # The body's own exception wins; a task failure behind it was logged when it happened.
        await self.__close(raise_failure=exc is None)

    async def aclose(self) -> None:
        """Release, cancel and await the background tasks; BackgroundTaskError (once) if
        one of them had failed. Safe to call any number of times."""
        await self.__close(raise_failure=True)

    def spawn(self, coro: Coroutine[Any, Any, None], *, name: str) -> asyncio.Task[None]:
        """Run ``coro`` in the background until the close; needs the running loop."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self.__tasks.add(task)
        task.add_done_callback(self.__task_done)
        return task

    # ----- hooks --------------------------------------------------------------------------

    async def _start(self) -> None:
        """Open and start; the default has nothing to open."""

    def _release(self) -> None:
        """Free synchronous resources; idempotent; the default holds none."""

    async def _stopped(self) -> None:
        """After a completed run's tasks have all ended; the default does nothing."""

    def _task_failed(self, error: BackgroundTaskError) -> None:
        """A background task has just failed (already logged); the default does nothing."""

    # ----- the rules ----------------------------------------------------------------------

    async def __close(self, *, raise_failure: bool) -> None:
        completed = self.__state is _State.RUNNING
        self.__state = _State.IDLE
        try:
            self._release()
        finally:
            await self.__cancel_tasks()
        if completed:
            await self._stopped()
        failure, self.__failure = self.__failure, None
        if failure is not None and raise_failure:
            raise failure

    async def __cancel_tasks(self) -> None:
        # A task may spawn another while we wait (a connection accepted just before its
        # listener closed): go round until none is left. A close from inside one of our own
        # tasks must not wait for itself.
        me = asyncio.current_task()
        while pending := {task for task in self.__tasks if task is not me}:
            for task in pending:
                task.cancel()
            # wait() does not raise the tasks' CancelledError, but does raise ours.
            await asyncio.wait(pending)
            self.__tasks -= pending

    def __task_done(self, task: asyncio.Task[None]) -> None:
        self.__tasks.discard(task)
        if task.cancelled() or (exc := task.exception()) is None:
            return
        log.error(
            "background_task_failed", owner=type(self).__name__, task=task.get_name(), exc_info=exc
        )
        error = BackgroundTaskError(f"{task.get_name()} failed: {exc!r}")
        error.__cause__ = exc
        if self.__failure is None:
            self.__failure = error
        self._task_failed(error)
