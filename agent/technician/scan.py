"""``smartpole diag scan``: which units answer on a bus, at which baud rates.

Every unit id at every baud rate is asked one cheap question: a read of one register
(FC 03 at address 0, or the first register of ``--profile``; FC 04 / FC 01 / FC 02 when
that register is an input, coil or discrete input). Any answer proves a device, a Modbus
exception included; ``--thorough`` also tries FC 03 0, FC 04 0 and FC 01 0 on units that
stayed silent, for devices that ignore what they do not implement.

Devices listen to the whole line, not only to their own unit: after a request for another
unit, libmodbus (and many RS-485 devices) take the next frame for that unit's answer and
throw it away, waiting up to their response timeout (libmodbus: 0.5 s). Asking the next
unit 0.1 s after a silent one is therefore not heard by them. So after a request that
nothing answered, the line is kept quiet for ``--quiet`` (0.6 s, counted from the end of
the request on the wire) before the next; after an answer (which ends the listeners' wait)
only the RTU 3.5-character gap is kept. A silent unit costs ``max(--timeout, --quiet)``
plus the request's wire time: units 1-247 take about 150 s per baud rate, and
:func:`estimate_s` says so before the scan starts. The alternatives cost more for the same
certainty: re-asking each silent unit after a long quiet period pays the quiet and a
second request, a second pass over the silent units pays the quiet on nearly all of them
again; putting frames on the line that only serve to end listeners' waits would misframe
devices that read the frame they ignore by an answer's length rules (libmodbus does). An
answer that comes after the timeout is still caught during the quiet period, and
reported as late.

A profile with a probe unit (``addressing.probe_unit``) is also asked at that unit, which
the one device of its model on the bus answers whatever its address. This module finds
and records; :mod:`.report` turns the result into text.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from smartpole.agent.technician.port import Exchange, RtuPort
from smartpole.agent.technician.probes import Probe
from smartpole.agent.technician.report import Progress, unit_ranges
from smartpole.drivers.line import wire_time_s
from smartpole.drivers.modbus.pdu import READ_HOLDING_REGISTERS, Request
from smartpole.drivers.modbus.profile import ModbusAddressing
from smartpole.drivers.modbus.rtu import ReplyFrame, encode_request


@dataclass(frozen=True)
class Found:
    unit: int
    baud: int
    probe: Probe
    frame: ReplyFrame
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
    frame: ReplyFrame | None  # None: silent or garbled
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
    quiet_s: float = 0.0
    estimate_s: float = 0.0
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
            "units": unit_ranges(self.units),
            "timeout_s": self.timeout_s,
            "quiet_s": self.quiet_s,
            "estimate_s": round(self.estimate_s, 1),
            "devices": [f.as_json() for f in self.found],
            "probe_unit": [p.as_json() for p in self.probes],
            "noise": {str(baud): units for baud, units in self.noisy.items()},
            "requests": self.requests,
            "elapsed_s": round(self.elapsed_s, 3),
        }


REQUEST_BYTES: Final = 8  # every probe: unit, function, address, count, CRC


def estimate_s(
    *,
    bauds: Sequence[int],
    units: int,
    probes: int,
    timeout_s: float,
    quiet_s: float,
    probe_unit: bool = False,
) -> float:
    """How long a scan of silent units takes: each request's wire time, then the longer of
    the timeout and the quiet period before the next; after the very last one, its timeout
    and one more for late answers. Each device found saves most of a quiet period."""
    total = 0.0
    wire = 0.0
    for baud in bauds:
        wire = wire_time_s(REQUEST_BYTES, baud)
        total += (units * probes + (1 if probe_unit else 0)) * (wire + max(timeout_s, quiet_s))
    if total:  # the last request waits for no next one
        total += 2 * timeout_s - max(timeout_s, quiet_s)
    return total


class PacedLine:
    """The port as a scan uses it: after a request nothing answered, the next one waits
    until the line has been quiet for ``quiet_s`` after that request's end, so devices that
    took it for another unit's request have stopped waiting for that unit's answer."""

    def __init__(self, line: RtuPort, quiet_s: float) -> None:
        self.line = line
        self.quiet_s = quiet_s
        self._quiet = 0.0  # before the next request

    def exchange(self, request: bytes, *, any_unit: bool = False) -> Exchange:
        exchange = self.line.exchange(request, any_unit=any_unit, quiet_s=self._quiet)
        # Only our own answer surely came after the request: a late one may have come before.
        answered = exchange.answer is not None
        wire = wire_time_s(len(request), self.line.baudrate)
        self._quiet = 0.0 if answered else wire + self.quiet_s
        return exchange


def scan(
    line: RtuPort,
    *,
    bauds: Sequence[int],
    units: Sequence[int],
    probes: Sequence[Probe],
    quiet_s: float,
    addressing: ModbusAddressing | None = None,
    progress: Progress | None = None,
) -> ScanResult:
    """Ask every unit at every baud rate; ``probes[1:]`` only where ``probes[0]`` got silence."""
    probe_unit = addressing is not None and addressing.probe_unit is not None
    result = ScanResult(
        line.port, line.settings, list(bauds), list(units), line.timeout_s, quiet_s,
        estimate_s(
            bauds=bauds, units=len(units), probes=len(probes), timeout_s=line.timeout_s,
            quiet_s=quiet_s, probe_unit=probe_unit,
        ),
    )  # fmt: skip
    paced = PacedLine(line, quiet_s)
    started = time.monotonic()
    for baud in bauds:
        line.set_baudrate(baud)
        if addressing is not None and addressing.probe_unit is not None:
            result.probes.append(_ask_probe_unit(paced, baud, addressing))
        _scan_units(paced, baud, units, probes, result, progress)
        if progress is not None:
            progress.baud_done(baud, len([f for f in result.found if f.baud == baud]))
    result.requests = line.requests
    result.elapsed_s = time.monotonic() - started
    result.found.sort(key=lambda f: (f.baud, f.unit))
    return result


def _scan_units(
    paced: PacedLine,
    baud: int,
    units: Sequence[int],
    probes: Sequence[Probe],
    result: ScanResult,
    progress: Progress | None,
) -> None:
    asked: dict[int, Probe] = {}  # unit -> what it was asked last, to credit late answers
    found: set[int] = set()

    def add(unit: int, probe: Probe, frame: ReplyFrame, *, late: bool = False) -> None:
        if unit not in found:
            found.add(unit)
            result.found.append(Found(unit, baud, probe, frame, late=late))

    def credit_late(frames: Sequence[ReplyFrame]) -> None:
        for frame in frames:
            probe = asked.get(frame.unit)
            if probe is not None and probe.function == frame.function:
                add(frame.unit, probe, frame, late=True)

    for unit in units:
        for probe in probes:
            asked[unit] = probe
            exchange = paced.exchange(probe.request(unit))
            credit_late(exchange.others)
            if exchange.answer is None and exchange.talked_over:
                # A late answer was on the line while we asked: ask again, once.
                exchange = paced.exchange(probe.request(unit))
                credit_late(exchange.others)
            if exchange.noise and unit not in result.noisy.get(baud, []):
                result.noisy.setdefault(baud, []).append(unit)
            if exchange.answer is not None:
                add(unit, probe, exchange.answer)
                break
        if progress is not None:
            progress.step(baud, unit, len(result.found))
    line = paced.line
    credit_late(line.collect(line.timeout_s).others)  # the last units' late answers


def _ask_probe_unit(paced: PacedLine, baud: int, addressing: ModbusAddressing) -> ProbeAnswer:
    """``FF 03 07 D0 00 01``: the one device of the model on the bus says its address."""
    assert addressing.probe_unit is not None
    unit = addressing.probe_unit
    request = encode_request(Request(unit, READ_HOLDING_REGISTERS, addressing.address_register, 1))
    exchange = paced.exchange(request, any_unit=True)
    garbled = exchange.answer is None and exchange.noise > 0
    return ProbeAnswer(baud, unit, exchange.answer, garbled)
