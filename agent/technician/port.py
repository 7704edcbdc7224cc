"""The serial port of a technician tool: opened exclusively, one RTU request at a time.

The daemon's serial clients take the same exclusive lock, so a port in use is refused,
never shared: two masters on one RS-485 pair garble each other.

The bytes go through the drivers' synchronous :class:`~smartpole.drivers.serial_port.SerialPort`
and are framed by :mod:`smartpole.drivers.modbus.rtu`; the wire's timing (character time,
the 3.5-character gap) is :mod:`smartpole.drivers.line`'s, the simulators' own. What is
left here is a master's side of one exchange: keep the gap, send, listen until the
answer or the timeout, and tell the answer from other units' late ones and from noise.
"""

from __future__ import annotations

import errno
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, Self

from smartpole.agent.core.errors import AgentError
from smartpole.drivers.errors import TransportError
from smartpole.drivers.lifecycle import Closing
from smartpole.drivers.line import frame_gap_s, wire_time_s
from smartpole.drivers.modbus.rtu import ReplyFrame, split_replies
from smartpole.drivers.serial_port import SerialPort

# Silence that ends an answer once it has started: 3.5 characters, but never shorter than
# what USB adapters' latency timers hold bytes back for.
_MIN_SILENCE_S: Final = 0.05
_MAX_RECEIVE: Final = 1024  # more than any answer: a babbling line, stop listening


class BusError(AgentError):
    """The bus cannot be used or did not do what was asked; exit 1 with this message."""


@dataclass(frozen=True)
class Exchange:
    """What came back for one request: the answer, other units' frames, noise bytes."""

    answer: ReplyFrame | None
    others: list[ReplyFrame] = field(default_factory=list)
    noise: int = 0
    talked_over: bool = False  # another frame came while the answer was awaited

    @property
    def heard_something(self) -> bool:
        return self.answer is not None or bool(self.others) or self.noise > 0


class RtuPort(Closing):
    """A serial port opened exclusively for one Modbus RTU master, one request at a time."""

    def __init__(
        self, port: str, *, baudrate: int, parity: str = "N", stopbits: int = 1, timeout_s: float
    ) -> None:
        self.port = port
        self.timeout_s = timeout_s
        self.requests = 0
        self._serial = SerialPort(port, baudrate=baudrate, parity=parity, stopbits=stopbits)

    def __enter__(self) -> Self:
        try:
            self._serial.open()
        except TransportError as exc:
            raise BusError(_open_failure(self.port, exc.__cause__ or exc)) from exc
        return self

    def close(self) -> None:
        self._serial.close()

    @property
    def baudrate(self) -> int:
        return self._serial.baudrate

    @property
    def settings(self) -> str:
        return f"{self.baudrate} 8{self._serial.parity}{self._serial.stopbits}"

    def set_baudrate(self, baudrate: int) -> None:
        try:
            self._serial.set_baudrate(baudrate)
        except TransportError as exc:
            raise BusError(str(exc)) from exc

    def exchange(self, request: bytes, *, any_unit: bool = False, quiet_s: float = 0.0) -> Exchange:
        """Send ``request`` and listen until its answer, or ``timeout_s`` after it is sent.

        ``any_unit``: a probe unit's answer comes from the device's own id. Frames of other
        units (late answers to earlier requests) are returned in ``others``. ``quiet_s``:
        the silence the line must have kept since its last byte before the request goes
        out, if longer than the RTU gap (listening devices need it after a silent request).
        """
        unit, function = request[0], request[1]
        # RTU: a slave takes our bytes as a new frame only after 3.5 characters of silence.
        # This is line timing, like the wire's own, not a wait for anything to happen;
        # what arrives meanwhile (late answers) is kept and returned in ``others``.
        quiet = max(frame_gap_s(self.baudrate), quiet_s)
        earlier = self._receive(self._serial.last_traffic + quiet)
        while (silence := time.monotonic() - self._serial.last_traffic) < quiet:
            earlier += self._receive(time.monotonic() + quiet - silence)
        started = time.monotonic()
        try:
            self._serial.write(request)
        except TransportError as exc:
            raise BusError(str(exc)) from exc
        self.requests += 1
        deadline = started + wire_time_s(len(request), self.baudrate) + self.timeout_s

        def answered(raw: bytes) -> bool:
            return any(_answers(f, unit, function, any_unit) for f in split_replies(raw)[0])

        raw = self._receive(deadline, answered)
        frames, noise = split_replies(raw)
        before, earlier_noise = split_replies(earlier)
        answer = next((f for f in frames if _answers(f, unit, function, any_unit)), None)
        during = [f for f in frames if f is not answer]
        return Exchange(answer, before + during, noise + earlier_noise, bool(during))

    def collect(self, wait_s: float) -> Exchange:
        """Whatever arrives within ``wait_s`` without asking (answers to earlier requests)."""
        frames, noise = split_replies(self._receive(time.monotonic() + wait_s))
        return Exchange(None, frames, noise)

    def _receive(self, deadline: float, done: Callable[[bytes], bool] | None = None) -> bytes:
        """Bytes until ``done`` says so, or the deadline has passed and the line is quiet."""
        quiet_s = max(frame_gap_s(self.baudrate), _MIN_SILENCE_S)
        try:
            return self._serial.read(deadline, quiet_s=quiet_s, limit=_MAX_RECEIVE, done=done)
        except TransportError as exc:
            raise BusError(str(exc)) from exc


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
