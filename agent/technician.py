"""``smartpole diag scan`` and ``diag readdress``: a technician's tools on the bus itself.

They speak Modbus RTU straight to a serial port, not through the daemon, so they are run in
the cabinet with the daemon stopped (``systemctl stop smartpole``): two masters on one
RS-485 pair garble each other. The port is opened with the exclusive lock the daemon's
serial clients take too, so a port in use is refused, never shared.

``scan`` asks every unit id at every baud rate one cheap question: a read of one register
(FC 03 at address 0, or the first register of ``--profile``; FC 04 / FC 01 / FC 02 when
that register is an input, coil or discrete input). Any answer proves a device, a Modbus
exception included; ``--thorough`` also tries FC 03 0, FC 04 0 and FC 01 0 on units that
stayed silent, for devices that ignore what they do not implement. A silent unit costs
the request's time on the wire plus ``--timeout``, so units 1-247 at 9600 baud take
about 27 s with the default 0.1 s, 15 s with 0.05 s. An answer that comes after the
timeout is still caught while the next unit is asked, and reported as late.

``readdress`` writes a new unit id (and baud code) to the registers a profile's
``addressing`` block names, then checks the device answers at the new address and no longer
at the old one. Every unit of such models ships as address 1, so each is re-addressed alone
on the bus before it joins the others.

Both are synchronous on purpose: one request is on the line at a time anyway, and a
``select`` with a deadline is the most precise "no answer within T" there is.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import re
import select
import sys
import termios
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self, TextIO

import serial

from smartpole.agent.config.loader import load_config, load_profile
from smartpole.agent.config.pole import NamePattern
from smartpole.agent.errors import AgentError, ConfigError, UsageError
from smartpole.drivers.modbus.client import MODBUS_EXCEPTIONS
from smartpole.drivers.modbus.crc import crc16_modbus
from smartpole.drivers.modbus.rtu_slave import Request, encode_request
from smartpole.drivers.profile import ModbusAddressing, ModbusProfile, RegisterKind

COMMANDS: Final = ("scan", "readdress")
EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT = 0, 1, 2
MAX_UNIT: Final = 247  # 0 is broadcast, 248-255 are reserved
BAUDRATES: Final = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200)
DEFAULT_BAUDS: Final = (2400, 4800, 9600, 19200)
DEFAULT_TIMEOUT_S: Final = 0.1
DEFAULT_BAUD: Final = 9600

# One character on the wire: start, 8 data, parity slot, stop (the simulators count the same).
_BITS_PER_CHAR: Final = 11
# Silence that ends an answer once it has started: 3.5 characters, but never shorter than
# what USB adapters' latency timers hold bytes back for.
_MIN_SILENCE_S: Final = 0.05
_MAX_RECEIVE: Final = 1024  # more than any answer: a babbling line, stop listening
_READ_FUNCTION: Final = {
    RegisterKind.COIL: 1,
    RegisterKind.DISCRETE: 2,
    RegisterKind.HOLDING: 3,
    RegisterKind.INPUT: 4,
}
_WRITE_SINGLE_REGISTER: Final = 6
_PARITIES: Final = {"N": serial.PARITY_NONE, "E": serial.PARITY_EVEN, "O": serial.PARITY_ODD}
_STOPBITS: Final = {1: serial.STOPBITS_ONE, 2: serial.STOPBITS_TWO}


class BusError(AgentError):
    """The bus cannot be used or did not do what was asked; exit 1 with this message."""


# ----- frames --------------------------------------------------------------------------


@dataclass(frozen=True)
class Frame:
    """One CRC-valid RTU frame a slave sent: an answer, an exception or a write's echo."""

    unit: int
    function: int  # without the exception bit
    exception: int | None
    data: bytes  # a read's data bytes (after the byte count); a write echo's 4 bytes

    def describe_exception(self) -> str:
        name = MODBUS_EXCEPTIONS.get(self.exception or 0, "unknown exception")
        return f"exception {self.exception} ({name})"


def _frame_length(buf: bytes, start: int) -> int | None:
    """Length of the slave frame at ``start``, from its function code; None if unknowable."""
    if len(buf) - start < 3:
        return None
    function = buf[start + 1]
    if function & 0x80:
        return 5
    if function in _READ_FUNCTION.values():
        return 5 + buf[start + 2]
    if function in (5, 6, 15, 16):
        return 8
    return None


def split_frames(raw: bytes) -> tuple[list[Frame], int]:
    """The valid frames in ``raw`` and how many bytes were noise around them.

    RTU has no start marker: where no valid frame starts, one byte is dropped and the next
    tried, so an answer behind noise (or behind another unit's late answer) is still found.
    """
    frames: list[Frame] = []
    noise = 0
    at = 0
    while at < len(raw):
        length = _frame_length(raw, at)
        candidate = raw[at : at + length] if length else b""
        if length and len(candidate) == length and crc16_modbus(candidate) == 0:
            unit, function = candidate[0], candidate[1]
            if function & 0x80:
                frames.append(Frame(unit, function & 0x7F, candidate[2], b""))
            elif function in _READ_FUNCTION.values():
                frames.append(Frame(unit, function, None, candidate[3:-2]))
            else:
                frames.append(Frame(unit, function, None, candidate[2:-2]))
            at += length
        else:
            noise += 1
            at += 1
    return frames, noise


@dataclass(frozen=True)
class Probe:
    """A read of one register (or bit) that a device likely has."""

    kind: RegisterKind
    address: int

    @property
    def function(self) -> int:
        return _READ_FUNCTION[self.kind]

    def request(self, unit: int) -> bytes:
        return encode_request(Request(unit, self.function, self.address, 1))

    def values(self, frame: Frame) -> list[int]:
        if self.kind.is_bit:
            return [frame.data[0] & 1] if frame.data else []
        return [int.from_bytes(frame.data[i : i + 2], "big") for i in range(0, len(frame.data), 2)]

    def __str__(self) -> str:
        return f"FC {self.function:02d} {self.kind.value} 0x{self.address:04X}"


DEFAULT_PROBE: Final = Probe(RegisterKind.HOLDING, 0)
FALLBACK_PROBES: Final = (
    Probe(RegisterKind.HOLDING, 0),
    Probe(RegisterKind.INPUT, 0),
    Probe(RegisterKind.COIL, 0),
)


def first_register(profile: ModbusProfile) -> Probe:
    spec = next(iter(profile.points.values()))
    return Probe(spec.kind, spec.address)


# ----- the line ------------------------------------------------------------------------


@dataclass(frozen=True)
class Exchange:
    """What came back for one request: the answer, other units' frames, noise bytes."""

    answer: Frame | None
    others: list[Frame] = field(default_factory=list)
    noise: int = 0

    @property
    def heard_something(self) -> bool:
        return self.answer is not None or bool(self.others) or self.noise > 0


def wire_time_s(n_bytes: int, baudrate: int) -> float:
    return n_bytes * _BITS_PER_CHAR / baudrate


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
        port.parity = _PARITIES[self.parity]
        port.stopbits = _STOPBITS[self.stopbits]
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

    @property
    def _char_gap_s(self) -> float:
        """The silence before a new frame: 3.5 characters, fixed at 1.75 ms above 19200."""
        return 0.00175 if self.baudrate > 19200 else 3.5 * _BITS_PER_CHAR / self.baudrate

    def exchange(self, request: bytes, *, any_unit: bool = False) -> Exchange:
        """Send ``request`` and listen until its answer, or ``timeout_s`` after it is sent.

        ``any_unit``: a probe unit's answer comes from the device's own id. Frames of other
        units (late answers to earlier requests) are returned in ``others``.
        """
        unit, function = request[0], request[1]
        earlier = self._receive(time.monotonic())  # late answers that came in between
        # RTU: a slave takes our bytes as a new frame only after 3.5 characters of silence.
        # This is line timing, like the wire's own, not a wait for anything to happen.
        silence = time.monotonic() - self._last_traffic
        if silence < self._char_gap_s:
            time.sleep(self._char_gap_s - silence)
        started = time.monotonic()
        self._send(request)
        self.requests += 1
        deadline = started + wire_time_s(len(request), self.baudrate) + self.timeout_s

        def answered(raw: bytes) -> bool:
            return any(_answers(f, unit, function, any_unit) for f in split_frames(raw)[0])

        raw = self._receive(deadline, answered)
        frames, noise = split_frames(raw)
        before, earlier_noise = split_frames(earlier)
        answer = next((f for f in frames if _answers(f, unit, function, any_unit)), None)
        others = before + [f for f in frames if f is not answer]
        return Exchange(answer, others, noise + earlier_noise)

    def collect(self, wait_s: float) -> Exchange:
        """Whatever arrives within ``wait_s`` without asking (answers to earlier requests)."""
        frames, noise = split_frames(self._receive(time.monotonic() + wait_s))
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
        quiet = max(3.5 * _BITS_PER_CHAR / self.baudrate, _MIN_SILENCE_S)
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


def _answers(frame: Frame, unit: int, function: int, any_unit: bool) -> bool:
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


# ----- scan ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Found:
    unit: int
    baud: int
    probe: Probe
    frame: Frame
    late: bool = False

    def answer(self) -> str:
        if self.frame.exception is not None:
            text = f"{self.frame.describe_exception()} to {self.probe}"
        else:
            values = ", ".join(f"{v} (0x{v:04X})" for v in self.probe.values(self.frame))
            text = f"{self.probe} = {values}"
        return f"{text}; late, raise --timeout" if self.late else text

    def as_json(self) -> dict[str, object]:
        return {
            "unit": self.unit,
            "baud": self.baud,
            "function": self.probe.function,
            "kind": self.probe.kind.value,
            "address": self.probe.address,
            "answer": "exception" if self.frame.exception is not None else "data",
            "exception": self.frame.exception,
            "values": [] if self.frame.exception is not None else self.probe.values(self.frame),
            "late": self.late,
        }


@dataclass(frozen=True)
class ProbeAnswer:
    """What the profile's probe unit said at one baud rate."""

    baud: int
    probe_unit: int
    frame: Frame | None  # None: silent or garbled
    garbled: bool = False

    @property
    def address(self) -> int | None:
        """The address register's value in the answer."""
        frame = self.frame
        if frame is None or frame.exception is not None or len(frame.data) < 2:
            return None
        return int.from_bytes(frame.data[:2], "big")

    def describe(self, model: str) -> str:
        head = f"probe unit {self.probe_unit} at {self.baud} baud"
        if self.frame is None:
            if self.garbled:
                return f"{head}: garbled answer; several {model} answering at once?"
            return f"{head}: no answer"
        if self.frame.exception is not None:
            return f"{head}: unit {self.frame.unit} answered {self.frame.describe_exception()}"
        return f"{head}: a {model} answered, its address is {self.address}"

    def as_json(self) -> dict[str, object]:
        return {
            "baud": self.baud,
            "unit": self.probe_unit,
            "answered": self.frame is not None,
            "garbled": self.garbled,
            "from_unit": self.frame.unit if self.frame is not None else None,
            "address": self.address,
            "exception": self.frame.exception if self.frame is not None else None,
        }


@dataclass
class ScanResult:
    port: str
    settings: str
    bauds: list[int]
    units: list[int]
    timeout_s: float
    found: list[Found] = field(default_factory=list)
    probes: list[ProbeAnswer] = field(default_factory=list)
    noisy: dict[int, list[int]] = field(default_factory=dict)  # baud -> units
    requests: int = 0
    elapsed_s: float = 0.0

    def as_json(self) -> dict[str, object]:
        return {
            "port": self.port,
            "line": self.settings,
            "bauds": self.bauds,
            "units": _unit_ranges(self.units),
            "timeout_s": self.timeout_s,
            "devices": [f.as_json() for f in self.found],
            "probe_unit": [p.as_json() for p in self.probes],
            "noise": {str(baud): units for baud, units in self.noisy.items()},
            "requests": self.requests,
            "elapsed_s": round(self.elapsed_s, 3),
        }


class Progress:
    """A one-line progress bar on a terminal; nothing at all when not on one."""

    WIDTH: Final = 28

    def __init__(self, stream: TextIO, total: int) -> None:
        self._stream = stream
        self._enabled = stream.isatty()
        self._total = max(total, 1)
        self._done = 0
        self._started = time.monotonic()
        self._drawn = 0.0

    def step(self, baud: int, unit: int, found: int) -> None:
        self._done += 1
        now = time.monotonic()
        if not self._enabled or (now - self._drawn < 0.05 and self._done < self._total):
            return
        self._drawn = now
        filled = self.WIDTH * self._done // self._total
        bar = "#" * filled + "." * (self.WIDTH - filled)
        self._stream.write(
            f"\r\x1b[K{baud:>6} baud  unit {unit:>3}  [{bar}] {100 * self._done // self._total:3d}%"
            f"  {found} found  {now - self._started:5.1f} s"
        )
        self._stream.flush()

    def close(self) -> None:
        if self._enabled and self._drawn:
            self._stream.write("\r\x1b[K")
            self._stream.flush()


def scan(
    line: RtuLine,
    *,
    bauds: Sequence[int],
    units: Sequence[int],
    probes: Sequence[Probe],
    addressing: ModbusAddressing | None = None,
    progress: Progress | None = None,
) -> ScanResult:
    """Ask every unit at every baud rate; ``probes[1:]`` only where ``probes[0]`` got silence."""
    result = ScanResult(line.port, line.settings, list(bauds), list(units), line.timeout_s)
    started = time.monotonic()
    for baud in bauds:
        line.set_baudrate(baud)
        if addressing is not None and addressing.probe_unit is not None:
            result.probes.append(_ask_probe_unit(line, baud, addressing))
        _scan_units(line, baud, units, probes, result, progress)
    result.requests = line.requests
    result.elapsed_s = time.monotonic() - started
    result.found.sort(key=lambda f: (f.baud, f.unit))
    return result


def _scan_units(
    line: RtuLine,
    baud: int,
    units: Sequence[int],
    probes: Sequence[Probe],
    result: ScanResult,
    progress: Progress | None,
) -> None:
    asked: dict[int, Probe] = {}  # unit -> what it was asked last, to credit late answers
    found: set[int] = set()

    def add(unit: int, probe: Probe, frame: Frame, *, late: bool = False) -> None:
        if unit not in found:
            found.add(unit)
            result.found.append(Found(unit, baud, probe, frame, late=late))

    def credit_late(frames: Sequence[Frame]) -> None:
        for frame in frames:
            probe = asked.get(frame.unit)
            if probe is not None and probe.function == frame.function:
                add(frame.unit, probe, frame, late=True)

    for unit in units:
        for probe in probes:
            asked[unit] = probe
            exchange = line.exchange(probe.request(unit))
            credit_late(exchange.others)
            if exchange.answer is None and exchange.others:
                # A late answer was on the line while we asked: ask again, once.
                exchange = line.exchange(probe.request(unit))
                credit_late(exchange.others)
            if exchange.noise and unit not in result.noisy.get(baud, []):
                result.noisy.setdefault(baud, []).append(unit)
            if exchange.answer is not None:
                add(unit, probe, exchange.answer)
                break
        if progress is not None:
            progress.step(baud, unit, len(result.found))
    credit_late(line.collect(line.timeout_s).others)  # the last units' late answers


def _ask_probe_unit(line: RtuLine, baud: int, addressing: ModbusAddressing) -> ProbeAnswer:
    """``FF 03 07 D0 00 01``: the one device of the model on the bus says its address."""
    assert addressing.probe_unit is not None
    unit = addressing.probe_unit
    request = encode_request(Request(unit, 3, addressing.address_register, 1))
    exchange = line.exchange(request, any_unit=True)
    garbled = exchange.answer is None and exchange.noise > 0
    return ProbeAnswer(baud, unit, exchange.answer, garbled)


def render_scan(result: ScanResult, model: str) -> str:
    lines: list[str] = []
    lines += [probe.describe(model) for probe in result.probes]
    if result.found:
        lines.append(f"{'UNIT':>4}  {'BAUD':>6}  ANSWER")
        lines += [f"{f.unit:>4}  {f.baud:>6}  {f.answer()}" for f in result.found]
    for baud, units in result.noisy.items():
        lines.append(
            f"garbled answers at {baud} baud (units {_unit_ranges(units)}): another device "
            "at a different baud rate or parity, two devices on one address, or bad wiring"
        )
    where = (
        f"{result.port}, units {_unit_ranges(result.units)} at "
        f"{', '.join(map(str, result.bauds))} baud, timeout {result.timeout_s:g} s"
    )
    count = len(result.found)
    if count:
        lines.append(
            f"{count} device{'s' if count != 1 else ''} found on {where}: "
            f"{result.requests} requests in {result.elapsed_s:.1f} s"
        )
    else:
        lines.append(
            f"no device answered on {where}: {result.requests} requests in "
            f"{result.elapsed_s:.1f} s. Check the A/B wires, the parity (--parity), the "
            "baud rates (--bauds), or try --thorough"
        )
    return "\n".join(lines)


def _unit_ranges(units: Sequence[int]) -> str:
    """``1-20,200`` for a sorted list of unit ids."""
    parts: list[str] = []
    ordered = sorted(set(units))
    start = prev = ordered[0] if ordered else 0
    for unit in [*ordered[1:], None]:
        if unit is not None and unit == prev + 1:
            prev = unit
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if unit is not None:
            start = prev = unit
    return ",".join(parts) if ordered else ""


# ----- readdress -----------------------------------------------------------------------


@dataclass
class Readdress:
    """One device moved from ``old`` to ``new`` (and optionally to ``new_baud``)."""

    line: RtuLine
    profile_name: str
    profile: ModbusProfile
    addressing: ModbusAddressing
    old: int
    new: int
    new_baud: int | None
    out: TextIO
    _step: int = 0
    _baud: int = field(init=False)  # the rate the device talks at before we change it

    def __post_init__(self) -> None:
        self._baud = self.line.baudrate

    def say(self, text: str) -> None:
        self._step += 1
        print(f"{self._step}. {text}", file=self.out, flush=True)

    def read_address(self, unit: int) -> Exchange:
        request = encode_request(Request(unit, 3, self.addressing.address_register, 1))
        return self.line.exchange(request)

    def run(self) -> int:
        register = f"0x{self.addressing.address_register:04X}"
        print(
            f"readdress a {self.profile_name} on {self.line.port} at {self.line.settings}: "
            f"unit {self.old} -> {self.new}"
            + (f", {self.line.baudrate} -> {self.new_baud} baud" if self._baud_changes else ""),
            file=self.out,
            flush=True,
        )
        self._check_device()
        if self.new != self.old:
            self._check_free(self.new, self.line.baudrate)
        if self._baud_changes and self.new_baud is not None:
            # Another device at the new rate would share the address once this one switches.
            self._check_free(self.new, self.new_baud)
        if self.new != self.old:
            self._write(self.old, self.addressing.address_register, self.new, "address")
            self._verify_moved(register)
        if not self._baud_changes:
            print(f"done: the {self.profile_name} answers at unit {self.new}", file=self.out)
            return EXIT_OK
        return self._change_baud()

    @property
    def _baud_changes(self) -> bool:
        return self.new_baud is not None and self.new_baud != self._baud

    def _check_device(self) -> None:
        register = f"0x{self.addressing.address_register:04X}"
        exchange = self.read_address(self.old)
        frame = exchange.answer
        if frame is None:
            hint = ""
            if self.addressing.probe_unit is not None:
                hint = (
                    "; if its address is unknown, `smartpole diag scan --profile "
                    f"{self.profile_name}` asks probe unit {self.addressing.probe_unit}"
                )
            if exchange.noise or exchange.others:
                raise BusError(
                    f"unit {self.old}: garbled answer, two devices on unit {self.old}? Connect "
                    "the new device alone, re-address it, then connect the next; nothing written"
                )
            raise BusError(
                f"no answer from unit {self.old} at {self.line.settings} within "
                f"{self.line.timeout_s:g} s; nothing written (scan for it: smartpole diag scan "
                f"--port {self.line.port}){hint}"
            )
        if frame.exception is not None:
            raise BusError(
                f"unit {self.old} answered {frame.describe_exception()} reading its address "
                f"register {register}: not a {self.profile_name}? nothing written"
            )
        value = int.from_bytes(frame.data[:2], "big")
        if value != self.old:
            raise BusError(
                f"unit {self.old} says its address register {register} holds {value}: "
                f"not a {self.profile_name}? nothing written"
            )
        self.say(f"unit {self.old} answers: address register {register} = {value}")

    def _check_free(self, unit: int, baud: int) -> None:
        """Any answer at ``unit`` (data, exception, even garbled) means it is taken."""
        old_baud = self.line.baudrate
        own = Probe(RegisterKind.HOLDING, self.addressing.address_register)
        probes = _dedupe([own, first_register(self.profile), *FALLBACK_PROBES])
        self.line.set_baudrate(baud)
        try:
            for probe in probes:
                exchange = self.line.exchange(probe.request(unit))
                if exchange.answer is not None or exchange.noise:
                    how = (
                        exchange.answer.describe_exception()
                        if exchange.answer is not None and exchange.answer.exception is not None
                        else "an answer"
                        if exchange.answer is not None
                        else "garbled bytes"
                    )
                    raise BusError(
                        f"unit {unit} is already taken at {baud} baud: {how} to {probe}. "
                        f"Choose another --to (smartpole diag scan --port {self.line.port} "
                        "lists the units in use); nothing written"
                    )
        finally:
            self.line.set_baudrate(old_baud)
        self.say(
            f"unit {unit} is free at {baud} baud: no answer to " + ", ".join(str(p) for p in probes)
        )

    def _write(self, unit: int, register: int, value: int, what: str) -> None:
        request = encode_request(Request(unit, _WRITE_SINGLE_REGISTER, register, 1, (value,)))
        exchange = self.line.exchange(request)
        frame = exchange.answer
        if frame is not None and frame.exception is not None:
            raise BusError(
                f"unit {unit} refused {value} in its {what} register 0x{register:04X}: "
                f"{frame.describe_exception()}"
            )
        echo = "echoed" if frame is not None else "no echo, checking whether it took"
        self.say(f"wrote {value} to {what} register 0x{register:04X} of unit {unit} ({echo})")

    def _verify_moved(self, register: str) -> None:
        for _ in range(3):  # a device may be busy writing its EEPROM for a moment
            exchange = self.read_address(self.new)
            if exchange.answer is not None:
                break
        frame = exchange.answer
        if frame is None or frame.exception is not None:
            raise BusError(
                f"no answer at the new unit {self.new}: the write did not take (some models "
                "apply it at power-up: power-cycle the device, then run diag scan)"
            )
        value = int.from_bytes(frame.data[:2], "big")
        if value != self.new:
            raise BusError(f"unit {self.new} answers, but its address register holds {value}")
        self.say(f"unit {self.new} answers: address register {register} = {value}")
        if self.read_address(self.old).heard_something:
            raise BusError(
                f"unit {self.old} still answers too: another device on {self.old}, or this "
                f"model keeps answering both until it is power-cycled"
            )
        self.say(f"unit {self.old} is silent now")

    def _change_baud(self) -> int:
        assert self.new_baud is not None
        register = self.addressing.baud_register
        assert register is not None
        code = next(c for c, rate in self.addressing.baud_codes.items() if rate == self.new_baud)
        old_baud = self.line.baudrate
        self._write(self.new, register, code, f"baud ({self.new_baud})")
        self.line.set_baudrate(self.new_baud)
        if self.read_address(self.new).answer is not None:
            self.say(f"unit {self.new} answers at {self.new_baud} baud")
            print(
                f"done: the {self.profile_name} answers at unit {self.new}, {self.new_baud} baud",
                file=self.out,
            )
            return EXIT_OK
        self.line.set_baudrate(old_baud)
        if self.read_address(self.new).answer is not None:
            self.say(
                f"unit {self.new} still answers at {old_baud} baud, not yet at {self.new_baud}"
            )
            print(
                f"pending: the {self.profile_name} takes {self.new_baud} baud when it is next "
                f"powered up; power-cycle it, then check: smartpole diag scan --port "
                f"{self.line.port} --bauds {self.new_baud} --units {self.new}",
                file=self.out,
            )
            return EXIT_OK
        raise BusError(
            f"unit {self.new} answers neither at {self.new_baud} nor at {old_baud} baud: "
            f"smartpole diag scan --port {self.line.port} looks at every rate"
        )


def _dedupe(probes: Sequence[Probe]) -> list[Probe]:
    return list(dict.fromkeys(probes))


# ----- the command line ----------------------------------------------------------------


def unit_id(text: str) -> int:
    try:
        unit = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a unit id (1..{MAX_UNIT})") from None
    if not 1 <= unit <= MAX_UNIT:
        raise argparse.ArgumentTypeError(
            f"{unit} is not a unit id: a device's address is 1..{MAX_UNIT}"
        )
    return unit


def unit_list(text: str) -> list[int]:
    """``1-247``, ``1,7,200`` or ``1-10,200``."""
    units: set[int] = set()
    for part in text.split(","):
        low, sep, high = part.strip().partition("-")
        first = unit_id(low)
        last = unit_id(high) if sep else first
        if last < first:
            raise argparse.ArgumentTypeError(f"{part!r}: the range goes backwards")
        units.update(range(first, last + 1))
    return sorted(units)


def baudrate(text: str) -> int:
    try:
        rate = int(text)
    except ValueError:
        rate = 0
    if rate not in BAUDRATES:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a baud rate ({', '.join(map(str, BAUDRATES))})"
        )
    return rate


def baud_list(text: str) -> list[int]:
    return list(dict.fromkeys(baudrate(part.strip()) for part in text.split(",")))


def timeout(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 10:
        raise argparse.ArgumentTypeError(f"{text!r}: a timeout is 0 to 10 seconds")
    return value


_OPTIONS: Final = (
    "port", "bauds", "units", "parity", "stopbits", "timeout", "thorough", "profile",
    "config", "from_unit", "to_unit", "baud", "new_baud",
)  # fmt: skip


def add_commands(diag: argparse.ArgumentParser) -> None:
    """Add ``scan`` and ``readdress`` to the ``diag`` parser, after its handler is set."""
    daemon_handler = diag.get_default("handler")
    if daemon_handler is None:
        raise RuntimeError("add_commands needs the diag parser's handler set first")
    # argparse has no public way to reach an action once added; the positional is found by
    # its dest and fails loudly here if the diag parser's shape changes.
    what = next(a for a in diag._actions if a.dest == "what")
    if what.choices is None:
        raise RuntimeError("the diag parser's 'what' has no choices")
    what.choices = [*what.choices, *COMMANDS]
    group = diag.add_argument_group(
        "scan and readdress",
        "talk to a Modbus RTU bus directly, without the daemon: stop it first "
        "(systemctl stop smartpole)",
    )
    group.add_argument("--port", help="serial port of the bus, e.g. /dev/ttyUSB0")
    group.add_argument(
        "--bauds",
        type=baud_list,
        metavar="B,B",
        help=f"scan: baud rates to try (default {','.join(map(str, DEFAULT_BAUDS))})",
    )
    group.add_argument(
        "--units", type=unit_list, metavar="RANGES", help="scan: unit ids, e.g. 1-247 or 1,7,200"
    )
    group.add_argument("--parity", choices=sorted(_PARITIES), help="default N")
    group.add_argument("--stopbits", type=int, choices=sorted(_STOPBITS), help="default 1")
    group.add_argument(
        "--timeout",
        type=timeout,
        metavar="S",
        help=f"seconds to wait for an answer after a request (default {DEFAULT_TIMEOUT_S})",
    )
    group.add_argument(
        "--thorough",
        action="store_true",
        default=None,
        help="scan: also try FC 03 0, FC 04 0, FC 01 0 on silent units (about 3x longer)",
    )
    group.add_argument("--profile", help="device profile name (needs --config)")
    group.add_argument(
        "--config", type=Path, help="pole config whose profiles folder holds --profile"
    )
    group.add_argument(
        "--from", dest="from_unit", type=unit_id, metavar="UNIT", help="readdress: current unit"
    )
    group.add_argument(
        "--to", dest="to_unit", type=unit_id, metavar="UNIT", help="readdress: new unit 1..247"
    )
    group.add_argument(
        "--baud", type=baudrate, help=f"readdress: the device's baud rate now ({DEFAULT_BAUD})"
    )
    group.add_argument(
        "--new-baud", type=baudrate, metavar="B", help="readdress: also switch it to this rate"
    )

    def handler(args: argparse.Namespace) -> int:
        if args.what in COMMANDS:
            return run(args)
        given = [name for name in _OPTIONS if getattr(args, name) is not None]
        if given:
            flag = "--" + given[0].removesuffix("_unit").replace("_", "-")
            raise UsageError(f"{flag} applies to diag scan and diag readdress only")
        result: int = daemon_handler(args)
        return result

    diag.set_defaults(handler=handler)


def run(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    if args.device is not None:
        raise UsageError(f"diag {args.what} takes options only, not {args.device!r}")
    if args.port is None:
        raise UsageError(f"diag {args.what} needs --port (the bus's serial port)")
    try:
        if args.what == "scan":
            return _run_scan(args, out, err)
        return _run_readdress(args, out)
    except BusError as exc:
        print(f"smartpole: {exc}", file=err)
        return EXIT_FAILURE


def _run_scan(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    for name in ("from_unit", "to_unit", "baud", "new_baud"):
        if getattr(args, name) is not None:
            raise UsageError(f"--{name.removesuffix('_unit').replace('_', '-')} is for readdress")
    profile = None
    if args.profile is not None or args.config is not None:
        profile = _modbus_profile(args.profile, args.config)
    probes = [first_register(profile) if profile is not None else DEFAULT_PROBE]
    if args.thorough:
        probes = _dedupe([*probes, *FALLBACK_PROBES])
    bauds: list[int] = args.bauds or list(DEFAULT_BAUDS)
    units: list[int] = args.units or list(range(1, MAX_UNIT + 1))
    line = RtuLine(
        args.port,
        baudrate=bauds[0],
        parity=args.parity or "N",
        stopbits=args.stopbits or 1,
        timeout_s=args.timeout or DEFAULT_TIMEOUT_S,
    )
    progress = Progress(err, len(bauds) * len(units))
    with line:
        try:
            result = scan(
                line,
                bauds=bauds,
                units=units,
                probes=probes,
                addressing=profile.addressing if profile is not None else None,
                progress=progress,
            )
        finally:
            progress.close()
    if args.json:
        print(json.dumps(result.as_json(), indent=2), file=out)
    else:
        print(render_scan(result, args.profile or "device"), file=out)
    return EXIT_OK if result.found else EXIT_FAILURE


def _run_readdress(args: argparse.Namespace, out: TextIO) -> int:
    missing = [
        flag
        for flag, value in (
            ("--profile", args.profile),
            ("--config", args.config),
            ("--from", args.from_unit),
            ("--to", args.to_unit),
        )
        if value is None
    ]
    if missing:
        raise UsageError(f"diag readdress needs {', '.join(missing)}")
    for name in ("bauds", "units", "thorough"):
        if getattr(args, name) is not None:
            raise UsageError(f"--{name} is for scan")
    profile = _modbus_profile(args.profile, args.config)
    addressing = profile.addressing
    if addressing is None:
        raise UsageError(
            f"profile {args.profile} has no addressing block: its unit id cannot be changed "
            "over the bus (set it as its manual says, e.g. with DIP switches)"
        )
    current_baud = args.baud or DEFAULT_BAUD
    if args.new_baud is not None and args.new_baud != current_baud:
        if addressing.baud_register is None or not addressing.baud_codes:
            raise UsageError(
                f"profile {args.profile} lists no baud codes: this tool cannot change its "
                "baud rate (its manual can)"
            )
        if args.new_baud not in addressing.baud_codes.values():
            known = ", ".join(str(r) for r in sorted(addressing.baud_codes.values()))
            raise UsageError(
                f"profile {args.profile} has no baud code for {args.new_baud} (it has {known})"
            )
    if args.to_unit == args.from_unit and (args.new_baud or current_baud) == current_baud:
        raise UsageError(f"--from and --to are both {args.to_unit}: nothing to change")
    line = RtuLine(
        args.port,
        baudrate=current_baud,
        parity=args.parity or "N",
        stopbits=args.stopbits or 1,
        timeout_s=args.timeout or DEFAULT_TIMEOUT_S,
    )
    with line:
        job = Readdress(
            line, args.profile, profile, addressing, args.from_unit, args.to_unit,
            args.new_baud, out,
        )  # fmt: skip
        return job.run()


def _modbus_profile(name: str | None, config_path: Path | None) -> ModbusProfile:
    """A profile by name: one the config uses, or any file in the config's profiles folder."""
    if name is None or config_path is None:
        raise UsageError("--profile and --config go together (the config names the profiles)")
    if not re.fullmatch(NamePattern, name):
        raise UsageError(f"{name!r} is not a profile name")
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        raise UsageError(_problems(config_path, exc)) from exc
    profile = config.profiles.get(name)
    if profile is None:
        folder = Path(os.path.normpath(config.path.parent / config.pole.profiles_dir))
        file = folder / f"{name}.yaml"
        if not file.is_file():
            known = ", ".join(sorted(p.stem for p in folder.glob("*.yaml"))) or "none"
            raise UsageError(f"no profile {name!r} in {folder} (profiles: {known})")
        try:
            profile = load_profile(file)
        except ConfigError as exc:
            raise UsageError(_problems(file, exc)) from exc
    if not isinstance(profile, ModbusProfile):
        raise UsageError(f"profile {name} speaks {profile.protocol}, not Modbus")
    return profile


def _problems(path: Path, exc: ConfigError) -> str:
    return "\n".join([*(str(p) for p in exc.problems), f"{path}: {exc}"])
