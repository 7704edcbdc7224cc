"""A serial port: the part every RS-485 client shares, driven from the event loop or not.

pyserial opens the port and applies the line settings (it knows each platform's termios
quirks); after that the descriptor is ours and made non-blocking. :class:`AsyncSerialPort`
reads it with ``loop.add_reader`` and writes it with ``os.write`` plus ``loop.add_writer``
when the kernel's buffer is full, so a slow 2400-baud line never stalls the loop.
:class:`SerialPort` waits on it with ``select`` deadlines instead, for a tool that has
nothing else to do meanwhile. Every OS-level failure (missing device node, lock held by
another program, adapter unplugged) becomes :class:`~smartpole.drivers.errors.TransportError`,
the only thing callers above the driver boundary catch. What the bytes mean is the
caller's business: bytes are handed over as the kernel delivers them, without framing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import termios
import time
from collections.abc import Callable
from typing import Any, Final, Self

import serial

from smartpole.drivers.errors import TransportError
from smartpole.drivers.lifecycle import Closing, Lifecycle

_READ_CHUNK: Final = 4096
# The line settings by the letters and numbers configs use, as pyserial spells them.
PARITIES: Final = {
    "N": serial.PARITY_NONE,
    "E": serial.PARITY_EVEN,
    "O": serial.PARITY_ODD,
    "M": serial.PARITY_MARK,
    "S": serial.PARITY_SPACE,
}
STOPBITS: Final = {1: serial.STOPBITS_ONE, 2: serial.STOPBITS_TWO}


class _PortSettings:
    """A port's path and line settings, checked when given, and how to open it with them.

    ``exclusive`` takes pyserial's advisory lock (``flock``), so a second master on the
    same bus (another daemon, a technician tool) is refused instead of garbling both.
    """

    def __init__(
        self, path: str, *, baudrate: int, parity: str, stopbits: int, exclusive: bool
    ) -> None:
        if parity not in PARITIES:
            raise ValueError(f"parity must be one of {', '.join(PARITIES)}, got {parity!r}")
        if stopbits not in STOPBITS:
            raise ValueError(f"stopbits must be 1 or 2, got {stopbits!r}")
        self.path = path
        self.baudrate = baudrate
        self.parity = parity
        self.stopbits = stopbits
        self.exclusive = exclusive

    def _open(self) -> tuple[Any, int]:
        """Open and configure the port through pyserial; its descriptor, made non-blocking,
        is the caller's from then on. TransportError (from pyserial's or the OS's error) if
        the port is missing, locked or unusable."""
        port = serial.Serial()
        port.port = self.path
        port.baudrate = self.baudrate
        port.bytesize = serial.EIGHTBITS
        port.parity = PARITIES[self.parity]
        port.stopbits = STOPBITS[self.stopbits]
        port.timeout = 0
        port.write_timeout = 0
        if self.exclusive:
            port.exclusive = True
        try:
            port.open()  # O_NONBLOCK open + termios; does not wait on the line
            fd = port.fileno()
            _make_nonblocking(fd)
        except (serial.SerialException, OSError, ValueError, termios.error) as exc:
            _close_quietly(port)
            raise TransportError(f"cannot open serial port {self.path}: {exc}") from exc
        return port, fd


class AsyncSerialPort(_PortSettings, Lifecycle):
    """One serial port, opened by one owner, read through ``on_data``.

    ``on_data(bytes)`` runs on the loop with what the kernel held when the port became
    readable (a frame may be split across calls, or several may come in one).
    ``on_failure(TransportError)`` runs once when the port fails under its owner (read or
    write error, the line hanging up); from then on :meth:`check` and :meth:`write` raise
    that failure until the port is closed, after which they say it is not open.
    """

    def __init__(
        self,
        path: str,
        *,
        baudrate: int,
        parity: str = "N",
        stopbits: int = 1,
        exclusive: bool = True,
        on_data: Callable[[bytes], None],
        on_failure: Callable[[TransportError], None] | None = None,
    ) -> None:
        _PortSettings.__init__(
            self, path, baudrate=baudrate, parity=parity, stopbits=stopbits, exclusive=exclusive
        )
        Lifecycle.__init__(self)
        self._on_data = on_data
        self._on_failure = on_failure
        self._serial: Any = None
        self._fd: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._failure: TransportError | None = None
        self._writable: asyncio.Future[None] | None = None
        self._write_lock = asyncio.Lock()

    # ----- life cycle (``async with`` through Lifecycle's hooks) ---------------------------

    async def _start(self) -> None:
        self.open()

    def _release(self) -> None:
        self.close()

    @property
    def is_open(self) -> bool:
        return self._fd is not None

    def open(self) -> None:
        """Open and configure the port; TransportError if it is missing, locked or unusable.

        Synchronous (opening a tty does not wait on the line) but needs the running loop,
        which will watch the descriptor."""
        if self._fd is not None:
            raise RuntimeError(f"{self.path} is already open")
        loop = asyncio.get_running_loop()
        port, fd = self._open()
        try:
            loop.add_reader(fd, self._on_readable)
        except (OSError, ValueError) as exc:
            _close_quietly(port)
            raise TransportError(f"cannot open serial port {self.path}: {exc}") from exc
        self._serial, self._fd, self._loop = port, fd, loop
        self._failure = None
        self._write_lock = asyncio.Lock()

    def close(self) -> None:
        """Release the descriptor (and its lock); safe to call twice and from a cancelled
        task. A write still waiting for room fails with TransportError."""
        port, fd, loop = self._serial, self._fd, self._loop
        self._serial = self._fd = None
        self._failure = None  # from now on the port is simply "not open"
        if fd is not None and loop is not None:
            loop.remove_reader(fd)
            loop.remove_writer(fd)
        if port is not None:
            with contextlib.suppress(OSError, serial.SerialException):
                port.close()
        self._wake_writer(TransportError(f"serial port {self.path} was closed"))

    def check(self) -> None:
        """Raise TransportError unless the port is open and has not failed."""
        if self._failure is not None:
            raise TransportError(str(self._failure)) from self._failure.__cause__
        if self._fd is None:
            raise TransportError(f"serial port {self.path} is not open")

    # ----- bytes --------------------------------------------------------------------------

    async def write(self, data: bytes) -> None:
        """Hand ``data`` to the kernel, waiting (without blocking the loop) while its buffer
        is full. Returning says nothing about the bytes having left the wire.

        Writes are serialised, so one call's bytes are never interleaved with another's.
        Cancelled part-way, the rest is dropped: half a frame already on the wire is noise
        to the far end, but left queued it would prefix the next frame."""
        async with self._write_lock:
            view = memoryview(data)
            while view:
                self.check()
                fd = self._fd
                assert fd is not None
                try:
                    view = view[os.write(fd, view) :]
                except (BlockingIOError, InterruptedError):
                    pass
                except OSError as exc:
                    raise self._fail(exc) from exc
                if view:
                    await self._until_writable(fd)

    def discard_input(self) -> bytes:
        """Take everything already received, without waiting, so what is read after comes
        later; the bytes are returned (not passed to ``on_data``) for the caller to account
        for. A failure found meanwhile goes to ``on_failure`` and is raised by the next
        :meth:`check` or :meth:`write`, never here."""
        received, failed = self._read_available()
        if failed is not None:
            self._fail(failed)
        return received

    # ----- the descriptor -----------------------------------------------------------------

    def _on_readable(self) -> None:
        received, failed = self._read_available()
        if received:
            self._on_data(received)
        if failed is not None:
            self._fail(failed)

    def _read_available(self) -> tuple[bytes, OSError | None]:
        """Read until the kernel has nothing more. With VMIN=1 (see ``_make_nonblocking``)
        an empty port raises EAGAIN, so an empty read means the line hung up. Bytes read
        before a failure are returned with it, so they are not lost."""
        fd = self._fd
        received = bytearray()
        if fd is None or self._failure is not None:
            return b"", None
        while True:
            try:
                chunk = os.read(fd, _READ_CHUNK)
            except (BlockingIOError, InterruptedError):
                return bytes(received), None
            except OSError as exc:  # EIO: the adapter was unplugged
                return bytes(received), exc
            if not chunk:
                return bytes(received), OSError("the line hung up (end of file)")
            received += chunk

    def _fail(self, exc: OSError) -> TransportError:
        """The port failed under its owner: stop watching it and tell whoever waits."""
        fd, loop = self._fd, self._loop
        if self._failure is not None:
            return self._failure
        if fd is not None and loop is not None:
            loop.remove_reader(fd)
            loop.remove_writer(fd)
        failure = TransportError(f"serial port {self.path} failed: {exc}")
        failure.__cause__ = exc
        self._failure = failure
        self._wake_writer(failure)
        if self._on_failure is not None:
            self._on_failure(failure)
        return failure

    async def _until_writable(self, fd: int) -> None:
        loop = self._loop
        assert loop is not None
        ready: asyncio.Future[None] = loop.create_future()
        self._writable = ready
        loop.add_writer(fd, self._wake_writer)
        try:
            await ready
        finally:
            self._writable = None
            if self._fd == fd:
                loop.remove_writer(fd)

    def _wake_writer(self, failure: TransportError | None = None) -> None:
        """Room in the kernel's buffer (``failure`` None), or the port is gone."""
        ready = self._writable
        if ready is None or ready.done():
            return
        if failure is None:
            ready.set_result(None)
        else:
            ready.set_exception(failure)


class SerialPort(_PortSettings, Closing):
    """One serial port driven synchronously, for a tool that puts one request on the line
    at a time and waits for its answer (the technician's ``diag scan``).

    Blocking on purpose: with nothing else to do meanwhile, a ``select`` with a deadline is
    the most precise "no answer within T" there is. Opened like :class:`AsyncSerialPort`
    (exclusive lock included), then read and written on the descriptor with ``select``
    deadlines: pyserial's own timeout setter re-applies termios on every change.
    ``last_traffic`` is when a byte last went out or came in, for the silence RTU keeps
    between frames. Every failure is a TransportError whose cause is the OS's error.
    """

    def __init__(
        self,
        path: str,
        *,
        baudrate: int,
        parity: str = "N",
        stopbits: int = 1,
        exclusive: bool = True,
    ) -> None:
        super().__init__(
            path, baudrate=baudrate, parity=parity, stopbits=stopbits, exclusive=exclusive
        )
        self.last_traffic = 0.0
        self._serial: Any = None
        self._fd = -1

    def __enter__(self) -> Self:
        self.open()
        return self

    def open(self) -> None:
        if self._serial is not None:
            raise RuntimeError(f"{self.path} is already open")
        port, fd = self._open()
        self._serial, self._fd = port, fd
        self.last_traffic = time.monotonic()

    def close(self) -> None:
        port, self._serial, self._fd = self._serial, None, -1
        if port is not None:
            port.close()

    def set_baudrate(self, baudrate: int) -> None:
        """Switch the line's speed; what was heard at the old speed is thrown away."""
        if baudrate == self.baudrate:
            return
        try:
            self._serial.baudrate = baudrate  # pyserial re-applies every termios setting
            _make_nonblocking(self._fd)
            termios.tcflush(self._fd, termios.TCIFLUSH)
        except (serial.SerialException, OSError, ValueError, termios.error) as exc:
            raise TransportError(f"{self.path}: cannot set {baudrate} baud: {exc}") from exc
        self.baudrate = baudrate

    def write(self, data: bytes) -> None:
        """Hand all of ``data`` to the kernel, waiting while its buffer is full."""
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self._fd, view) :]
            except BlockingIOError:
                select.select([], [self._fd], [], 1.0)
            except OSError as exc:
                raise TransportError(f"{self.path}: write failed: {exc}") from exc
        self.last_traffic = time.monotonic()

    def read(
        self,
        deadline: float,
        *,
        quiet_s: float,
        limit: int,
        done: Callable[[bytes], bool] | None = None,
    ) -> bytes:
        """Bytes until ``done`` says so, ``limit`` of them have come, or the ``deadline``
        (``time.monotonic``) has passed with the line quiet for ``quiet_s``: once bytes come,
        an answer is read to its end however late it started."""
        buf = bytearray()
        while len(buf) < limit:
            wait = deadline - time.monotonic()
            if buf:
                wait = max(wait, quiet_s)
            try:
                ready, _, _ = select.select([self._fd], [], [], max(wait, 0.0))
                if not ready:
                    break
                chunk = os.read(self._fd, _READ_CHUNK)
            except BlockingIOError:
                continue
            except OSError as exc:
                raise TransportError(f"{self.path}: read failed: {exc}") from exc
            if not chunk:
                raise TransportError(f"{self.path}: the port was closed")
            buf += chunk
            self.last_traffic = time.monotonic()
            if done is not None and done(bytes(buf)):
                break
        return bytes(buf)


def _close_quietly(port: Any) -> None:
    with contextlib.suppress(Exception):
        port.close()


def _make_nonblocking(fd: int) -> None:
    """O_NONBLOCK with VMIN=1: an empty port reads as EAGAIN, so a read of 0 bytes means
    the line hung up (pyserial leaves VMIN=0, where "no data" and "gone" both read as 0)."""
    os.set_blocking(fd, False)
    attrs = termios.tcgetattr(fd)
    attrs[6][termios.VMIN] = 1
    attrs[6][termios.VTIME] = 0
    termios.tcsetattr(fd, termios.TCSANOW, attrs)
