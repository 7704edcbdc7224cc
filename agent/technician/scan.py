"""``smartpole diag scan``: which units answer on a bus, at which baud rates.

Every unit id at every baud rate is asked one cheap question: a read of one register
(FC 03 at address 0, or the first register of ``--profile``; FC 04 / FC 01 / FC 02 when
that register is an input, coil or discrete input). Any answer proves a device, a Modbus
exception included; ``--thorough`` also tries FC 03 0, FC 04 0 and FC 01 0 on units that
stayed silent, for devices that ignore what they do not implement. A silent unit costs
the request's time on the wire plus ``--timeout``, so units 1-247 at 9600 baud take
about 27 s with the default 0.1 s, 15 s with 0.05 s. An answer that comes after the
timeout is still caught while the next unit is asked, and reported as late.

A profile with a probe unit (``addressing.probe_unit``) is also asked at that unit, which
the one device of its model on the bus answers whatever its address. This module finds
and records; :mod:`.report` turns the result into text.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from smartpole.agent.technician.port import RtuPort
from smartpole.agent.technician.probes import Probe
from smartpole.agent.technician.report import Progress, unit_ranges
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
            "devices": [f.as_json() for f in self.found],
            "probe_unit": [p.as_json() for p in self.probes],
            "noise": {str(baud): units for baud, units in self.noisy.items()},
            "requests": self.requests,
            "elapsed_s": round(self.elapsed_s, 3),
        }


def scan(
    line: RtuPort,
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
    line: RtuPort,
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


def _ask_probe_unit(line: RtuPort, baud: int, addressing: ModbusAddressing) -> ProbeAnswer:
    """``FF 03 07 D0 00 01``: the one device of the model on the bus says its address."""
    assert addressing.probe_unit is not None
    unit = addressing.probe_unit
    request = encode_request(Request(unit, READ_HOLDING_REGISTERS, addressing.address_register, 1))
    exchange = line.exchange(request, any_unit=True)
    garbled = exchange.answer is None and exchange.noise > 0
    return ProbeAnswer(baud, unit, exchange.answer, garbled)
