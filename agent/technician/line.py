"""The serial port of a technician tool: opened exclusively, one RTU request at a time.

The daemon's serial clients take the same exclusive lock, so a port in use is refused,
never shared: two masters on one RS-485 pair garble each other.

Synchronous on purpose: one request is on the line at a time anyway, and a ``select`` with
a deadline is the most precise "no answer within T" there is. The wire's timing (character
time, the 3.5-character gap) is the simulators' own, from :mod:`smartpole.drivers.sim.wire`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import termios
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final, Self

import serial

from smartpole.agent.core.errors import AgentError
from smartpole.drivers.line import frame_gap_s, wire_time_s
from smartpole.drivers.modbus.rtu import ReplyFrame, split_replies

# Silence that ends an answer once it has started: 3.5 characters, but never shorter than
# what USB adapters' latency timers hold bytes back for.
_MIN_SILENCE_S: Final = 0.05
_MAX_RECEIVE: Final = 1024  # more than any answer: a babbling line, stop listening
PARITIES: Final = {"N": serial.PARITY_NONE, "E": serial.PARITY_EVEN, "O": serial.PARITY_ODD}
STOPBITS: Final = {1: serial.STOPBITS_ONE, 2: serial.STOPBITS_TWO}


class BusError(AgentError):
    """The bus cannot be used or did not do what was asked; exit 1 with this message."""


@dataclass(frozen=True)
class Exchange:
    """What came back for one request: the answer, other units' frames, noise bytes."""

    answer: ReplyFrame | None
    others: list[ReplyFrame] = field(default_factory=list)
    noise: int = 0

    @property
    def heard_something(self) -> bool:
        return self.answer is not None or bool(self.others) or self.noise > 0


class RtuLine:
    """A serial port opened exclusively for one Modbus RTU master, one request at a time.

    pyserial opens the port and sets the line; reads and writes go to its descriptor with
    ``select`` deadlines (pyserial's own timeout setter re-applies termios on every change).
    """

    def __init__(
        self, port: str, *, baudrate: int, parity: str = "N", stopbits: int = 1, timeout_s: float
    ) -> None:
        self.port = port
        self.baudrate = baudrate
        self.parity = parity
        self.stopbits = stopbits
        self.timeout_s = timeout_s
        self.requests = 0
        self._serial: Any = None
        self._fd = -1
        self._last_traffic = 0.0

    def __enter__(self) -> Self:
        port = serial.Serial()
        port.port = self.port
        port.baudrate = self.baudrate
        port.bytesize = serial.EIGHTBITS
        port.parity = PARITIES[self.parity]
        port.stopbits = STOPBITS[self.stopbits]
        port.timeout = 0
        port.exclusive = True  # the daemon locks its port the same way: one master per bus
        try:
            port.open()
            fd = port.fileno()
            os.set_blocking(fd, False)
        except (serial.SerialException, OSError, ValueError, termios.error) as exc:
            with contextlib.suppress(Exception):
                port.close()
            raise BusError(_open_failure(self.port, exc)) from exc
        self._serial, self._fd = port, fd
        self._last_traffic = time.monotonic()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._serial is not None:
            self._serial.close()
        self._serial, self._fd = None, -1

    @property
    def settings(self) -> str:
        return f"{self.baudrate} 8{self.parity}{self.stopbits}"

    def set_baudrate(self, baudrate: int) -> None:
        if baudrate == self.baudrate:
            return
        try:
            self._serial.baudrate = baudrate
            termios.tcflush(self._fd, termios.TCIFLUSH)  # bytes heard at the old speed
        except (serial.SerialException, OSError, ValueError, termios.error) as exc:
            raise BusError(f"{self.port}: cannot set {baudrate} baud: {exc}") from exc
        self.baudrate = baudrate

    def exchange(self, request: bytes, *, any_unit: bool = False) -> Exchange:
        """Send ``request`` and listen until its answer, or ``timeout_s`` after it is sent.

        ``any_unit``: a probe unit's answer comes from the device's own id. Frames of other
        units (late answers to earlier requests) are returned in ``others``.
        """
        unit, function = request[0], request[1]
        earlier = self._receive(time.monotonic())  # late answers that came in between
        # RTU: a slave takes our bytes as a new frame only after 3.5 characters of silence.
        # This is line timing, like the wire's own, not a wait for anything to happen.
        gap = frame_gap_s(self.baudrate)
        silence = time.monotonic() - self._last_traffic
        if silence < gap:
            time.sleep(gap - silence)
        started = time.monotonic()
        self._send(request)
        self.requests += 1
        deadline = started + wire_time_s(len(request), self.baudrate) + self.timeout_s

        def answered(raw: bytes) -> bool:
            return any(_answers(f, unit, function, any_unit) for f in split_replies(raw)[0])

        raw = self._receive(deadline, answered)
        frames, noise = split_replies(raw)
        before, earlier_noise = split_replies(earlier)
        answer = next((f for f in frames if _answers(f, unit, function, any_unit)), None)
        others = before + [f for f in frames if f is not answer]
        return Exchange(answer, others, noise + earlier_noise)

    def collect(self, wait_s: float) -> Exchange:
        """Whatever arrives within ``wait_s`` without asking (answers to earlier requests)."""
        frames, noise = split_replies(self._receive(time.monotonic() + wait_s))
        return Exchange(None, frames, noise)

    def _send(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self._fd, view) :]
            except BlockingIOError:
                select.select([], [self._fd], [], 1.0)
            except OSError as exc:
                raise BusError(f"{self.port}: write failed: {exc}") from exc
        self._last_traffic = time.monotonic()

    def _receive(self, deadline: float, done: Callable[[bytes], bool] | None = None) -> bytes:
        """Bytes until ``done`` says so, or the deadline has passed and the line is quiet."""
        buf = bytearray()
        quiet = max(frame_gap_s(self.baudrate), _MIN_SILENCE_S)
        while len(buf) < _MAX_RECEIVE:
            wait = deadline - time.monotonic()
            if buf:
                wait = max(wait, quiet)  # once bytes come, listen until the line is quiet
            try:
                ready, _, _ = select.select([self._fd], [], [], max(wait, 0.0))
                if not ready:
                    break
                chunk = os.read(self._fd, 4096)
            except BlockingIOError:
                continue
            except OSError as exc:
                raise BusError(f"{self.port}: read failed: {exc}") from exc
            if not chunk:
                raise BusError(f"{self.port}: the port was closed")
            buf += chunk
            self._last_traffic = time.monotonic()
            if done is not None and done(bytes(buf)):
                break
        return bytes(buf)


def _answers(frame: ReplyFrame, unit: int, function: int, any_unit: bool) -> bool:
    return (any_unit or frame.unit == unit) and frame.function == function


def _open_failure(port: str, exc: BaseException) -> str:
    text = str(exc)
    number = getattr(exc, "errno", None)
    if "lock" in text.lower() or number in (errno.EAGAIN, errno.EWOULDBLOCK):
        return (
            f"{port} is in use by another program, most likely the smartpole daemon; "
            "stop it first (systemctl stop smartpole): two masters on one bus garble each other"
        )
    if number == errno.ENOENT or "No such file" in text:
        return f"no serial port {port}"
    if number == errno.EACCES or "Permission denied" in text:
        return f"no permission to open {port} (run as root or join the dialout group)"
    return f"cannot open {port}: {text}"
