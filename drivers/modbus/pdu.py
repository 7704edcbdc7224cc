"""Modbus response PDUs as the master sees them: pure parsers for the answers it asks for.

The request side (``rtu_slave.encode_pdu``) and the answers (``rtu_slave.handle_pdu``) are
the simulators' code; these parsers are their inverse, so hypothesis can round-trip every
read and write through both. Whatever bytes a device sends, a parser raises nothing but
:class:`~smartpole.drivers.errors.ProtocolError`: a broken answer is the device's fault and
must be counted, never crash the bus task.

The hot path is a block read of up to 125 registers many times a second, so register
replies are unpacked with one precompiled :class:`struct.Struct` per size, straight from
the received buffer.
"""

from __future__ import annotations

import struct
from typing import Final

from smartpole.drivers.errors import DeviceExceptionError, ProtocolError
from smartpole.drivers.modbus.rtu_slave import (
    READ_COILS,
    READ_DISCRETE_INPUTS,
    READ_HOLDING_REGISTERS,
    READ_INPUT_REGISTERS,
    WRITE_MULTIPLE_COILS,
    WRITE_MULTIPLE_REGISTERS,
    WRITE_SINGLE_COIL,
    WRITE_SINGLE_REGISTER,
)

Buffer = bytes | bytearray

MODBUS_EXCEPTIONS: Final = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "server device failure",
    5: "acknowledge",
    6: "server device busy",
    10: "gateway path unavailable",
    11: "gateway target failed to respond",
}
ILLEGAL_DATA_ADDRESS: Final = 2

REGISTER_READS: Final = frozenset({READ_HOLDING_REGISTERS, READ_INPUT_REGISTERS})
BIT_READS: Final = frozenset({READ_COILS, READ_DISCRETE_INPUTS})
WRITES: Final = frozenset(
    {WRITE_SINGLE_COIL, WRITE_SINGLE_REGISTER, WRITE_MULTIPLE_COILS, WRITE_MULTIPLE_REGISTERS}
)
EXCEPTION_FLAG: Final = 0x80

# A byte count is one byte, so a reply carries at most 127 registers; index = registers.
_REGISTERS: Final = tuple(struct.Struct(f">{n}H") for n in range(128))
_ECHO: Final = struct.Struct(">HH")
_ECHO_BYTES: Final = 5  # function, address (2), value or quantity (2)


def exception_code(pdu: Buffer, function: int) -> int | None:
    """The exception code if ``pdu`` is ``function``'s exception answer, else None."""
    if not pdu or pdu[0] != function | EXCEPTION_FLAG:
        return None
    if len(pdu) != 2:
        raise ProtocolError(f"exception answer of {len(pdu)} bytes, expected 2")
    return pdu[1]


def exception_error(code: int, unit_id: int) -> DeviceExceptionError:
    name = MODBUS_EXCEPTIONS.get(code, "unknown exception")
    return DeviceExceptionError(f"unit {unit_id} answered exception {code} ({name})", code)


def _checked_data(pdu: Buffer, function: int) -> int:
    """The byte count of a read answer, once it agrees with the PDU's own length."""
    if len(pdu) < 2 or pdu[0] != function:
        raise ProtocolError(f"not an answer to function {function}: {bytes(pdu[:2]).hex()}")
    count = pdu[1]
    if len(pdu) != 2 + count:
        raise ProtocolError(f"byte count {count} but {len(pdu) - 2} data bytes")
    return count


def parse_registers(pdu: Buffer, function: int) -> list[int]:
    """Every register of an FC 03/04 answer, in order."""
    if function not in REGISTER_READS:
        raise ProtocolError(f"function {function} does not read registers")
    count = _checked_data(pdu, function)
    if count % 2:
        raise ProtocolError(f"odd byte count {count} in a register answer")
    return list(_REGISTERS[count >> 1].unpack_from(pdu, 2))


def parse_bits(pdu: Buffer, function: int) -> list[int]:
    """Every bit an FC 01/02 answer carries (whole bytes, least significant bit first)."""
    if function not in BIT_READS:
        raise ProtocolError(f"function {function} does not read bits")
    _checked_data(pdu, function)
    return [(byte >> i) & 1 for byte in pdu[2:] for i in range(8)]


def parse_write_echo(pdu: Buffer, function: int) -> tuple[int, int]:
    """``(address, value)`` of an FC 05/06 echo, ``(address, quantity)`` for FC 15/16."""
    if function not in WRITES:
        raise ProtocolError(f"function {function} is not a write")
    if len(pdu) != _ECHO_BYTES or pdu[0] != function:
        raise ProtocolError(f"not an echo of function {function}: {bytes(pdu[:8]).hex()}")
    address, value = _ECHO.unpack_from(pdu, 1)
    return address, value
