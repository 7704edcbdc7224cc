"""The bytes of the technician tools: the frames slaves answer with, and the reads we ask.

Pure (no port, no clock) so the RTU rules are testable byte by byte. Requests are framed by
:func:`~smartpole.drivers.modbus.rtu_slave.encode_request`, the simulators' own encoder;
this module adds what a master needs and a slave does not: finding answer frames (data,
exception or a write's echo) in whatever came back, noise and other units' late answers
included.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from smartpole.drivers.modbus.crc import crc16_modbus
from smartpole.drivers.modbus.pdu import MODBUS_EXCEPTIONS
from smartpole.drivers.modbus.points import RegisterKind
from smartpole.drivers.modbus.profile import ModbusProfile
from smartpole.drivers.modbus.rtu_slave import (
    READ_COILS,
    READ_DISCRETE_INPUTS,
    READ_HOLDING_REGISTERS,
    READ_INPUT_REGISTERS,
    WRITE_MULTIPLE_COILS,
    WRITE_MULTIPLE_REGISTERS,
    WRITE_SINGLE_COIL,
    WRITE_SINGLE_REGISTER,
    Request,
    encode_request,
)

_READ_FUNCTION: Final = {
    RegisterKind.COIL: READ_COILS,
    RegisterKind.DISCRETE: READ_DISCRETE_INPUTS,
    RegisterKind.HOLDING: READ_HOLDING_REGISTERS,
    RegisterKind.INPUT: READ_INPUT_REGISTERS,
}
_WRITE_FUNCTIONS: Final = (
    WRITE_SINGLE_COIL,
    WRITE_SINGLE_REGISTER,
    WRITE_MULTIPLE_COILS,
    WRITE_MULTIPLE_REGISTERS,
)


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
    if function in _WRITE_FUNCTIONS:
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


def dedupe(probes: Sequence[Probe]) -> list[Probe]:
    """``probes`` in order, each once."""
    return list(dict.fromkeys(probes))
