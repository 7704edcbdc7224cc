"""The skeleton every simulator shares: an endpoint, a conversation per line, progress.

A simulator plays a device (or a bus of them) on one endpoint: a pseudo-terminal, for a
serial line, with one conversation for as long as the simulator runs, or a loopback TCP
listener with one conversation per connection. :class:`SimServer` opens the endpoint,
runs the subclass's ``_converse(line)`` for each line as a background task, counts the
connections, logs ``sim_started`` and ``sim_stopped``, and closes everything through
:class:`~smartpole.drivers.lifecycle.Lifecycle` (descriptors first, then the tasks), so a
protocol's simulator is only its conversation.

Rigs wait on a simulator's progress with :meth:`SimServer.wait_until`, never with sleeps:
a subclass calls ``_progress()`` whenever something a rig may wait for has changed. A
background task that crashes fails every waiter at once rather than leaving it to time out.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import structlog

from smartpole.drivers.lifecycle import BackgroundTaskError, Lifecycle
from smartpole.drivers.sim.pty import PtyEndpoint
from smartpole.drivers.sim.tcp import TcpLine, TcpListener

log = structlog.get_logger(__name__)

DEFAULT_WAIT_S = 5.0


class Line(Protocol):
    """One conversation's bytes, a pty or a TCP connection, as a simulator sees them."""

    @property
    def peer(self) -> str:
        """Who is at the other end, for logs."""
        ...

    async def read(self) -> bytes:
        """The next chunk the client sent; ``b""`` once a TCP peer has gone."""
        ...

    def write(self, data: bytes) -> bool:
        """Queue ``data`` for the client; False if the line cannot take it (closed, jammed)."""
        ...

    async def drain(self) -> None:
        """Until the line has taken what was written, as far as it has back-pressure."""
        ...


@dataclass(frozen=True)
class TcpAddress:
    """Where a TCP simulator listens; port 0 lets the OS pick a free one."""

    host: str = "127.0.0.1"
    port: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 0xFFFF:
            raise ValueError(f"port must be 0..65535, got {self.port}")


_Waiter = tuple[Callable[[], object], asyncio.Future[None]]


class SimServer(Lifecycle, abc.ABC):
    """A simulator on a fresh pty (``tcp=None``) or a TCP listener; an async context manager.

    ``name`` names the simulator in logs and task names. ``max_pending`` bounds the bytes a
    pty holds for a client that does not read (see :class:`PtyEndpoint`). ``_pty`` is the
    pty while it runs, for a simulator that also speaks unprompted (the MCU pushes events)
    rather than only in answer to what its conversation reads.
    """

    def __init__(
        self, name: str, *, tcp: TcpAddress | None = None, max_pending: int | None = None
    ) -> None:
        super().__init__()
        self.name = name
        self._tcp = tcp
        self._max_pending = max_pending
        self._pty: PtyEndpoint | None = None
        self._listener: TcpListener | None = None
        self._waiters: list[_Waiter] = []

    # ----- where clients find it ----------------------------------------------------------

    @property
    def path(self) -> str:
        """The tty path clients open; a pty simulator's, only while it runs."""
        if self._pty is None:
            raise RuntimeError(f"{self._what()} is not running on a pty")
        return self._pty.path

    @property
    def host(self) -> str:
        """The address clients connect to; a TCP simulator's, only while it runs."""
        return self._bound()[0]

    @property
    def port(self) -> int:
        """The bound port (the one the OS picked for port 0); only while it runs."""
        return self._bound()[1]

    @property
    def where(self) -> str:
        """What a rig passes on to the agent: the pty's path, or ``tcp://HOST:PORT``."""
        if self._tcp is None:
            return self.path
        return f"tcp://{self.host}:{self.port}"

    # ----- progress -----------------------------------------------------------------------

    async def wait_until(
        self, predicate: Callable[[], object], timeout_s: float | None = DEFAULT_WAIT_S
    ) -> None:
        """Until ``predicate()`` holds, checked whenever the simulator makes progress.
        TimeoutError after ``timeout_s`` (None: no limit); BackgroundTaskError if the
        simulator's own task crashes meanwhile, RuntimeError if it stops."""
        if predicate():
            return
        if not self.running:
            raise RuntimeError(f"{self._what()} is not running")
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry: _Waiter = (predicate, waiter)
        self._waiters.append(entry)
        try:
            async with asyncio.timeout(timeout_s):
                await waiter
        finally:
            with contextlib.suppress(ValueError):
                self._waiters.remove(entry)

    def _progress(self) -> None:
        """Something a rig may wait for has changed: wake the waiters it satisfies."""
        for entry in list(self._waiters):
            predicate, waiter = entry
            if not waiter.done() and predicate():
                waiter.set_result(None)
                self._waiters.remove(entry)

    # ----- what a protocol fills in -------------------------------------------------------

    @abc.abstractmethod
    async def _converse(self, line: Line) -> None:
        """Serve one line until it ends (a pty's never does; it is cancelled at close)."""

    def _start_fields(self) -> dict[str, object]:
        """What ``sim_started`` says about the devices served."""
        return {}

    def _stop_fields(self) -> dict[str, object]:
        """What ``sim_stopped`` says: the counters, typically."""
        return {}

    def _connection(self, *, opened: bool) -> None:
        """A TCP connection was accepted (``opened``) or has closed."""

    # ----- Lifecycle's hooks --------------------------------------------------------------

    async def _start(self) -> None:
        if self._tcp is None:
            pty = PtyEndpoint(max_pending=self._max_pending)
            pty.open()
            self._pty = pty
            self.spawn(self._converse(pty), name=f"{self.name} {pty.path}")
        else:
            listener = TcpListener(self._accepted)
            await listener.open(self._tcp.host, self._tcp.port)
            self._listener = listener
        log.info("sim_started", sim=self.name, at=self.where, **self._start_fields())

    def _release(self) -> None:
        pty, listener = self._pty, self._listener
        self._pty = self._listener = None
        if pty is not None:
            pty.close()
        if listener is not None:
            listener.close()
        self._fail_waiters(RuntimeError(f"{self.name} simulator stopped"))

    async def _stopped(self) -> None:
        log.info("sim_stopped", sim=self.name, **self._stop_fields())

    def _task_failed(self, error: BackgroundTaskError) -> None:
        self._fail_waiters(error)

    # ----- internals ----------------------------------------------------------------------

    def _accepted(self, line: TcpLine) -> None:
        # Called by the listener before anything can await, so a close never misses it.
        self.spawn(self._serve_connection(line), name=f"{self.name} conn {line.peer}")

    async def _serve_connection(self, line: TcpLine) -> None:
        self._connection(opened=True)
        self._progress()
        log.debug("sim_connected", sim=self.name, peer=line.peer)
        try:
            if self.running:
                await self._converse(line)
        except OSError as exc:  # the peer reset or vanished mid-answer
            log.debug("sim_connection_lost", sim=self.name, peer=line.peer, error=str(exc))
        finally:
            self._connection(opened=False)
            self._progress()
            await line.aclose(abort=not self.running)
            log.debug("sim_disconnected", sim=self.name, peer=line.peer)

    def _bound(self) -> tuple[str, int]:
        if self._listener is None:
            raise RuntimeError(f"{self._what()} is not running on TCP")
        return self._listener.host, self._listener.port

    def _what(self) -> str:
        return f"the {self.name} simulator"

    def _fail_waiters(self, error: BaseException) -> None:
        waiters, self._waiters = self._waiters, []
        for _, waiter in waiters:
            if not waiter.done():
                waiter.set_exception(error)
