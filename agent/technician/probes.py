"""The reads the technician tools probe a bus with: one register a device likely has.

Requests are framed by :func:`~smartpole.drivers.modbus.rtu.encode_request` and answers
found by :func:`~smartpole.drivers.modbus.rtu.split_replies`, the framer the simulators
and the daemon's serial client use too; this module only says which register to ask for
and what its answer's values are.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from smartpole.drivers.modbus.pdu import READ_FUNCTION, Request
from smartpole.drivers.modbus.points import RegisterKind
from smartpole.drivers.modbus.profile import ModbusProfile
from smartpole.drivers.modbus.rtu import ReplyFrame, encode_request


@dataclass(frozen=True)
class Probe:
    """A read of one register (or bit) that a device likely has."""

    kind: RegisterKind
    address: int

    @property
    def function(self) -> int:
        return READ_FUNCTION[self.kind]

    def request(self, unit: int) -> bytes:
        return encode_request(Request(unit, self.function, self.address, 1))

    def values(self, frame: ReplyFrame) -> list[int]:
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
