"""The Modbus PDU: function codes, requests, answers and exceptions, for both roles.

A PDU is what every framing carries unchanged: RTU puts a unit id before it and a CRC
after it (``rtu``), Modbus TCP a 7-byte header before it (``mbap``). So the layouts live
here once, and the master that reads an answer and the simulated device that builds it
cannot disagree about one; hypothesis round-trips every request and answer through both.

The one rule both framers need is how long a message is, since RTU has no length field:
:func:`request_size` and :func:`response_size` read it from a message's first bytes, and
:func:`reply_size` says it for a request before any answer is on the line. All three count
data with :func:`data_bytes`, so they cannot drift apart.

Whatever bytes a device sends, a response parser raises nothing but
:class:`~smartpole.drivers.errors.ProtocolError`: a broken answer is the device's fault and
must be counted, never crash the bus task. The hot path is a block read of up to 125
registers many times a second, so register answers are unpacked with one precompiled
:class:`struct.Struct` per size, straight from the received buffer.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from smartpole.drivers.errors import DeviceExceptionError, DriverError, ProtocolError
from smartpole.drivers.modbus.points import RegisterKind

Buffer = bytes | bytearray

READ_COILS: Final = 1
READ_DISCRETE_INPUTS: Final = 2
READ_HOLDING_REGISTERS: Final = 3
READ_INPUT_REGISTERS: Final = 4
WRITE_SINGLE_COIL: Final = 5
WRITE_SINGLE_REGISTER: Final = 6
WRITE_MULTIPLE_COILS: Final = 15
WRITE_MULTIPLE_REGISTERS: Final = 16

EXCEPTION_FLAG: Final = 0x80
# Modbus Application Protocol 1.1b3, 4.1: the RS-485 ADU limit of 256 bytes less the unit
# id and the CRC; Modbus TCP keeps the same limit so a gateway can pass every PDU on.
MAX_PDU_BYTES: Final = 253
COIL_ON: Final = 0xFF00  # FC 05's word for "on"; 0x0000 is "off", anything else is refused
ECHO_BYTES: Final = 5  # a write's answer: function, address (2), value or quantity (2)
EXCEPTION_BYTES: Final = 2  # function with the exception flag, exception code

# The register-kind -> function-code table, and its inverse for whoever serves requests.
READ_FUNCTION: Final[Mapping[RegisterKind, int]] = {
    RegisterKind.COIL: READ_COILS,
    RegisterKind.DISCRETE: READ_DISCRETE_INPUTS,
    RegisterKind.HOLDING: READ_HOLDING_REGISTERS,
    RegisterKind.INPUT: READ_INPUT_REGISTERS,
}
READ_KIND: Final[Mapping[int, RegisterKind]] = {f: kind for kind, f in READ_FUNCTION.items()}
WRITE_KIND: Final[Mapping[int, RegisterKind]] = {
    WRITE_SINGLE_COIL: RegisterKind.COIL,
    WRITE_SINGLE_REGISTER: RegisterKind.HOLDING,
    WRITE_MULTIPLE_COILS: RegisterKind.COIL,
    WRITE_MULTIPLE_REGISTERS: RegisterKind.HOLDING,
}
SINGLE_WRITES: Final = frozenset({WRITE_SINGLE_COIL, WRITE_SINGLE_REGISTER})
MULTIPLE_WRITES: Final = frozenset({WRITE_MULTIPLE_COILS, WRITE_MULTIPLE_REGISTERS})
# The largest quantity one request may carry (Modbus Application Protocol 1.1b3, 6.1-6.12).
MAX_QUANTITY: Final[Mapping[int, int]] = {
    READ_COILS: 2000,
    READ_DISCRETE_INPUTS: 2000,
    READ_HOLDING_REGISTERS: 125,
    READ_INPUT_REGISTERS: 125,
    WRITE_MULTIPLE_COILS: 1968,
    WRITE_MULTIPLE_REGISTERS: 123,
}
_BIT_DATA: Final = frozenset({READ_COILS, READ_DISCRETE_INPUTS, WRITE_MULTIPLE_COILS})
_REGISTER_READS: Final = frozenset({READ_HOLDING_REGISTERS, READ_INPUT_REGISTERS})
_BIT_READS: Final = frozenset({READ_COILS, READ_DISCRETE_INPUTS})
_REQUEST_HEAD_BYTES: Final = 5  # function, address (2), quantity or value (2)

# A byte count is one byte, so an answer carries at most 127 registers; index = registers.
_REGISTERS: Final = tuple(struct.Struct(f">{n}H") for n in range(128))
_ECHO: Final = struct.Struct(">HH")


class ExceptionCode(enum.IntEnum):
    """Modbus exception codes (Modbus Application Protocol 1.1b3, 7)."""

    ILLEGAL_FUNCTION = 1
    ILLEGAL_DATA_ADDRESS = 2
    ILLEGAL_DATA_VALUE = 3
    SERVER_DEVICE_FAILURE = 4
    ACKNOWLEDGE = 5
    SERVER_DEVICE_BUSY = 6
    GATEWAY_PATH_UNAVAILABLE = 10
    GATEWAY_TARGET_FAILED_TO_RESPOND = 11


MODBUS_EXCEPTIONS: Final[Mapping[int, str]] = {
    code: code.name.lower().replace("_", " ") for code in ExceptionCode
}
# The refusal a master learns a device's register map from.
ILLEGAL_DATA_ADDRESS: Final = ExceptionCode.ILLEGAL_DATA_ADDRESS


class RequestRefusedError(DriverError):
    """A request a device answers with an exception instead of serving it.

    ``code`` is the exception code that goes back on the wire.
    """

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class Request:
    """One master request.

    ``values`` holds what a write carries: the raw 16-bit word for FC5/6 (so FC5's
    0xFF00/0x0000 rule can be enforced where answers are built), bits or registers for
    FC15/16. ``byte_count`` is None when the request's byte count agrees with ``count``; it
    is kept only for malformed requests, which the spec answers with exception 3.
    """

    unit_id: int
    function: int
    address: int
    count: int
    values: tuple[int, ...] = ()
    byte_count: int | None = None


def write_function(kind: RegisterKind, count: int) -> int:
    """The function that writes ``count`` values of ``kind``: FC 05/15 coils, FC 06/16 registers."""
    if kind is RegisterKind.COIL:
        return WRITE_SINGLE_COIL if count == 1 else WRITE_MULTIPLE_COILS
    if kind is RegisterKind.HOLDING:
        return WRITE_SINGLE_REGISTER if count == 1 else WRITE_MULTIPLE_REGISTERS
    raise ProtocolError(f"{kind.value} registers cannot be written")


# ----- lengths: the one rule the framers and the simulated devices share -------------------


def data_bytes(function: int, count: int) -> int:
    """Bytes that carry ``count`` values for ``function``: bits eight to a byte, else words."""
    return (count + 7) // 8 if function in _BIT_DATA else 2 * count


def reply_size(req: Request) -> int:
    """Length of the PDU a device answers ``req`` with when it serves it.

    An exception answer is :data:`EXCEPTION_BYTES` long instead, whatever the request.
    """
    if req.function in READ_KIND:
        return 2 + data_bytes(req.function, req.count)
    if req.function in WRITE_KIND:
        return ECHO_BYTES
    raise ProtocolError(f"function {req.function} has no known answer layout")


def response_size(buf: Buffer, at: int = 0) -> int | None:
    """Length of the answer PDU that starts at ``buf[at]``, from its first bytes.

    None while too few bytes are there to tell. Raises ProtocolError for a function code
    no answer of ours carries: nothing that starts there is an answer.
    """
    if len(buf) <= at:
        return None
    function = buf[at]
    if function & EXCEPTION_FLAG:
        return EXCEPTION_BYTES
    if function in READ_KIND:
        return 2 + buf[at + 1] if len(buf) > at + 1 else None
    if function in WRITE_KIND:
        return ECHO_BYTES
    raise ProtocolError(f"function {function} is no answer")


def request_size(buf: Buffer, at: int = 0) -> int | None:
    """Length of the request PDU that starts at ``buf[at]``, from its first bytes.

    None while too few bytes are there to tell. Raises ProtocolError where no request
    starts: an unknown function code, or a byte count that runs past :data:`MAX_PDU_BYTES`.
    """
    if len(buf) <= at:
        return None
    function = buf[at]
    if function in READ_KIND or function in SINGLE_WRITES:
        return _REQUEST_HEAD_BYTES
    if function in MULTIPLE_WRITES:
        if len(buf) <= at + _REQUEST_HEAD_BYTES:
            return None
        size = _REQUEST_HEAD_BYTES + 1 + buf[at + _REQUEST_HEAD_BYTES]
        if size > MAX_PDU_BYTES:
            raise ProtocolError(f"function {function} request of {size} bytes")
        return size
    raise ProtocolError(f"function {function} is no request")


# ----- requests ----------------------------------------------------------------------------


def pack_bits(bits: Sequence[int]) -> bytes:
    """Bits eight to a byte, the first in the least significant bit, as Modbus packs them."""
    out = bytearray((len(bits) + 7) // 8)
    for i, bit in enumerate(bits):
        if bit:
            out[i // 8] |= 1 << (i % 8)
    return bytes(out)


def _unpack_bits(data: Buffer, count: int) -> tuple[int, ...]:
    return tuple((data[i // 8] >> (i % 8)) & 1 for i in range(min(count, 8 * len(data))))


def pack_registers(values: Sequence[int]) -> bytes:
    return b"".join(v.to_bytes(2, "big") for v in values)


def encode_request(req: Request) -> bytes:
    """The request's PDU, function code onwards; ``req.unit_id`` belongs to the framing.

    Raises ValueError or OverflowError for what cannot be put into the layout.
    """
    head = bytes([req.function]) + req.address.to_bytes(2, "big")
    if req.function in READ_KIND:
        return head + req.count.to_bytes(2, "big")
    if req.function in SINGLE_WRITES:
        (word,) = req.values
        return head + word.to_bytes(2, "big")
    if req.function in MULTIPLE_WRITES:
        coils = req.function == WRITE_MULTIPLE_COILS
        data = pack_bits(req.values) if coils else pack_registers(req.values)
        n = len(data) if req.byte_count is None else req.byte_count
        data = data[:n].ljust(n, b"\0")
        return head + req.count.to_bytes(2, "big") + bytes([n]) + data
    raise ValueError(f"function {req.function} has no known request layout")


def parse_request(unit_id: int, pdu: Buffer) -> Request:
    """The request in ``pdu``, a whole PDU whose end the framing already knows.

    Raises RequestRefusedError carrying what a device answers: exception 1 for a function
    it does not implement, exception 3 when the PDU's length disagrees with its function's
    layout (the spec's "implied length is incorrect").
    """
    function = pdu[0] if pdu else 0
    if function not in READ_KIND and function not in WRITE_KIND:
        raise RequestRefusedError(
            f"function {function} not supported", ExceptionCode.ILLEGAL_FUNCTION
        )
    try:
        size = request_size(pdu)
    except ProtocolError:
        size = None
    if size != len(pdu):
        raise RequestRefusedError(
            f"function {function} PDU of {len(pdu)} bytes has the wrong length",
            ExceptionCode.ILLEGAL_DATA_VALUE,
        )
    address = int.from_bytes(pdu[1:3], "big")
    word = int.from_bytes(pdu[3:5], "big")
    if function in READ_KIND:
        return Request(unit_id, function, address, word)
    if function in SINGLE_WRITES:
        return Request(unit_id, function, address, 1, (word,))
    n = pdu[5]
    data = pdu[6 : 6 + n]
    if function == WRITE_MULTIPLE_COILS:
        values = _unpack_bits(data, word)
    else:
        values = tuple(int.from_bytes(data[i : i + 2], "big") for i in range(0, n - 1, 2))
        values = values[:word]
    byte_count = None if n == data_bytes(function, word) else n
    return Request(unit_id, function, address, word, values, byte_count)


# ----- answers -----------------------------------------------------------------------------


def encode_read_response(function: int, values: Sequence[int]) -> bytes:
    """A read's answer: function, byte count, then the bits or registers."""
    data = pack_bits(values) if function in _BIT_DATA else pack_registers(values)
    return bytes([function, len(data)]) + data


def encode_write_echo(function: int, address: int, value: int) -> bytes:
    """A write's answer: its address and its value (FC 05/06) or quantity (FC 15/16)."""
    return bytes([function]) + address.to_bytes(2, "big") + value.to_bytes(2, "big")


def encode_exception(function: int, code: int) -> bytes:
    """An exception answer: the function code with its top bit set, then the code."""
    return bytes([(function | EXCEPTION_FLAG) & 0xFF, code])


def exception_code(pdu: Buffer, function: int) -> int | None:
    """The exception code if ``pdu`` is ``function``'s exception answer, else None."""
    if not pdu or pdu[0] != function | EXCEPTION_FLAG:
        return None
    if len(pdu) != EXCEPTION_BYTES:
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
    if function not in _REGISTER_READS:
        raise ProtocolError(f"function {function} does not read registers")
    count = _checked_data(pdu, function)
    if count % 2:
        raise ProtocolError(f"odd byte count {count} in a register answer")
    return list(_REGISTERS[count >> 1].unpack_from(pdu, 2))


def parse_bits(pdu: Buffer, function: int) -> list[int]:
    """Every bit an FC 01/02 answer carries (whole bytes, least significant bit first)."""
    if function not in _BIT_READS:
        raise ProtocolError(f"function {function} does not read bits")
    _checked_data(pdu, function)
    return [(byte >> i) & 1 for byte in pdu[2:] for i in range(8)]


def parse_write_echo(pdu: Buffer, function: int) -> tuple[int, int]:
    """``(address, value)`` of an FC 05/06 echo, ``(address, quantity)`` for FC 15/16."""
    if function not in WRITE_KIND:
        raise ProtocolError(f"function {function} is not a write")
    if len(pdu) != ECHO_BYTES or pdu[0] != function:
        raise ProtocolError(f"not an echo of function {function}: {bytes(pdu[:8]).hex()}")
    address, value = _ECHO.unpack_from(pdu, 1)
    return address, value
