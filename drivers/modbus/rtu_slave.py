"""Modbus RTU slave logic for the simulators: device memory, request framing, answers.

Pure (no I/O, no clock) so every protocol rule can be property-tested byte by byte, and
the transports (a pseudo-terminal today) only move bytes and add timing.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from smartpole.drivers.errors import DriverError
from smartpole.drivers.modbus.crc import append_crc, crc16_modbus
from smartpole.drivers.modbus.points import RegisterKind

BROADCAST_UNIT: Final = 0
MAX_FRAME_BYTES: Final = 256  # the spec's RTU ADU limit; longer "frames" are line noise

READ_COILS: Final = 1
READ_DISCRETE_INPUTS: Final = 2
READ_HOLDING_REGISTERS: Final = 3
READ_INPUT_REGISTERS: Final = 4
WRITE_SINGLE_COIL: Final = 5
WRITE_SINGLE_REGISTER: Final = 6
WRITE_MULTIPLE_COILS: Final = 15
WRITE_MULTIPLE_REGISTERS: Final = 16

_FIXED_LENGTH_FUNCTIONS: Final = frozenset({1, 2, 3, 4, 5, 6})
_VARIABLE_LENGTH_FUNCTIONS: Final = frozenset({15, 16})
_WRITE_FUNCTIONS: Final = frozenset({5, 6, 15, 16})
_COIL_ON: Final = 0xFF00


_BIT_KINDS: Final = frozenset({RegisterKind.COIL, RegisterKind.DISCRETE})
_WRITABLE_KINDS: Final = frozenset({RegisterKind.COIL, RegisterKind.HOLDING})
# function -> (table, largest quantity the spec allows in one request)
_READS: Final[Mapping[int, tuple[RegisterKind, int]]] = {
    READ_COILS: (RegisterKind.COIL, 2000),
    READ_DISCRETE_INPUTS: (RegisterKind.DISCRETE, 2000),
    READ_HOLDING_REGISTERS: (RegisterKind.HOLDING, 125),
    READ_INPUT_REGISTERS: (RegisterKind.INPUT, 125),
}
_MULTI_WRITES: Final[Mapping[int, tuple[RegisterKind, int]]] = {
    WRITE_MULTIPLE_COILS: (RegisterKind.COIL, 1968),
    WRITE_MULTIPLE_REGISTERS: (RegisterKind.HOLDING, 123),
}


class ExceptionCode(enum.IntEnum):
    """Modbus exception codes the simulated devices can answer with."""

    ILLEGAL_FUNCTION = 1
    ILLEGAL_DATA_ADDRESS = 2
    ILLEGAL_DATA_VALUE = 3
    SERVER_DEVICE_FAILURE = 4


class SlaveExceptionError(DriverError):
    """A request the simulated device refuses; ``code`` is what goes back on the wire."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class IllegalAddressError(SlaveExceptionError):
    """Part of the requested range is unmapped, which real devices refuse as a whole."""

    def __init__(self, message: str) -> None:
        super().__init__(message, ExceptionCode.ILLEGAL_DATA_ADDRESS)


def _check_values(kind: RegisterKind, address: int, values: Sequence[int]) -> None:
    if address < 0 or address + len(values) > 0x10000:
        raise ValueError(f"{kind} range {address}+{len(values)} outside 0..0xFFFF")
    limit = 1 if kind in _BIT_KINDS else 0xFFFF
    if any(not 0 <= v <= limit for v in values):
        raise ValueError(f"{kind} values must be within 0..{limit}: {list(values)}")


class RegisterBank:
    """The memory of one simulated device.

    Sparse, because real devices expose scattered blocks and refuse everything between
    them; a dense array would answer reads a real device rejects and hide client bugs.
    """

    def __init__(self) -> None:
        self._tables: dict[RegisterKind, dict[int, int]] = {kind: {} for kind in RegisterKind}

    def set(self, kind: RegisterKind, address: int, values: Sequence[int]) -> None:
        """Define (or overwrite) addresses from the simulator's side, any table allowed."""
        _check_values(kind, address, values)
        self._tables[kind].update(zip(range(address, address + len(values)), values, strict=True))

    def get(self, kind: RegisterKind, address: int, count: int) -> list[int]:
        """Read a range, refusing it whole if any address in it is unmapped."""
        table = self._tables[kind]
        try:
            return [table[a] for a in range(address, address + count)]
        except KeyError as exc:
            raise IllegalAddressError(f"{kind} {exc.args[0]} is not mapped") from None

    def write(self, kind: RegisterKind, address: int, values: Sequence[int]) -> None:
        """Apply a master's write: all or nothing, only onto already-defined writable cells."""
        if kind not in _WRITABLE_KINDS:
            raise IllegalAddressError(f"{kind} is read-only for a master")
        table = self._tables[kind]
        addresses = range(address, address + len(values))
        if missing := [a for a in addresses if a not in table]:
            raise IllegalAddressError(f"{kind} {missing[0]} is not mapped")
        _check_values(kind, address, values)
        table.update(zip(addresses, values, strict=True))


@dataclass(frozen=True, slots=True)
class Request:
    """One decoded master request.

    ``values`` holds what a write carries: the raw 16-bit word for FC5/6 (so FC5's
    0xFF00/0x0000 rule can be enforced where answers are built), bits or registers for
    FC15/16. ``byte_count`` is None when the frame's byte count agrees with ``count``; it
    is kept only for malformed requests, which the spec answers with exception 3.
    """

    unit_id: int
    function: int
    address: int
    count: int
    values: tuple[int, ...] = ()
    byte_count: int | None = None


def _pack_bits(bits: Sequence[int]) -> bytes:
    out = bytearray((len(bits) + 7) // 8)
    for i, bit in enumerate(bits):
        if bit:
            out[i // 8] |= 1 << (i % 8)
    return bytes(out)


def _unpack_bits(data: bytes, count: int) -> tuple[int, ...]:
    return tuple((data[i // 8] >> (i % 8)) & 1 for i in range(min(count, 8 * len(data))))


def _pack_registers(values: Sequence[int]) -> bytes:
    return b"".join(v.to_bytes(2, "big") for v in values)


def _expected_byte_count(function: int, count: int) -> int:
    return (count + 7) // 8 if function == WRITE_MULTIPLE_COILS else 2 * count


def encode_request(req: Request) -> bytes:
    """Frame a request as a master would; test rigs use it to talk to the simulators."""
    head = bytes([req.unit_id, req.function]) + req.address.to_bytes(2, "big")
    if req.function in _READS:
        return append_crc(head + req.count.to_bytes(2, "big"))
    if req.function in (WRITE_SINGLE_COIL, WRITE_SINGLE_REGISTER):
        (word,) = req.values
        return append_crc(head + word.to_bytes(2, "big"))
    if req.function in _MULTI_WRITES:
        coils = req.function == WRITE_MULTIPLE_COILS
        data = _pack_bits(req.values) if coils else _pack_registers(req.values)
        n = len(data) if req.byte_count is None else req.byte_count
        data = data[:n].ljust(n, b"\0")
        return append_crc(head + req.count.to_bytes(2, "big") + bytes([n]) + data)
    raise ValueError(f"function {req.function} has no known request layout")


def encode_pdu(req: Request) -> bytes:
    """The request's PDU (function code onwards), for framings without address and CRC.

    Modbus TCP carries the same PDU as RTU; only the envelope differs.
    """
    return encode_request(req)[1:-2]


def _frame_size(buf: bytes | bytearray) -> int | None:
    """Length of the frame starting at buf[0]; None if unknown yet, 0 if it cannot be one."""
    if len(buf) < 2:
        return None
    function = buf[1]
    if function in _FIXED_LENGTH_FUNCTIONS:
        return 8
    if function in _VARIABLE_LENGTH_FUNCTIONS:
        if len(buf) < 7:
            return None
        size = 9 + buf[6]
        return size if size <= MAX_FRAME_BYTES else 0
    return 0


def _parse(frame: bytes) -> Request:
    unit_id, function = frame[0], frame[1]
    address = int.from_bytes(frame[2:4], "big")
    word = int.from_bytes(frame[4:6], "big")
    if function in _READS:
        return Request(unit_id, function, address, word)
    if function in (WRITE_SINGLE_COIL, WRITE_SINGLE_REGISTER):
        return Request(unit_id, function, address, 1, (word,))
    n = frame[6]
    data = frame[7 : 7 + n]
    if function == WRITE_MULTIPLE_COILS:
        values = _unpack_bits(data, word)
    else:
        values = tuple(int.from_bytes(data[i : i + 2], "big") for i in range(0, n - 1, 2))
        values = values[:word]
    byte_count = None if n == _expected_byte_count(function, word) else n
    return Request(unit_id, function, address, word, values, byte_count)


def parse_pdu(unit_id: int, pdu: bytes) -> Request:
    """Parse a request PDU whose end the transport already knows (Modbus TCP's length field).

    Raises SlaveExceptionError carrying what a device answers: exception 1 for a function
    it does not implement, exception 3 when the PDU's length disagrees with its function's
    layout (the spec's "implied length is incorrect").
    """
    if not pdu or pdu[0] not in _FIXED_LENGTH_FUNCTIONS | _VARIABLE_LENGTH_FUNCTIONS:
        function = pdu[0] if pdu else 0
        raise SlaveExceptionError(
            f"function {function} not supported", ExceptionCode.ILLEGAL_FUNCTION
        )
    frame = bytes([unit_id]) + pdu + b"\0\0"  # a placeholder CRC, so the RTU layout applies
    if _frame_size(frame) != len(frame):
        raise SlaveExceptionError(
            f"function {pdu[0]} PDU of {len(pdu)} bytes has the wrong length",
            ExceptionCode.ILLEGAL_DATA_VALUE,
        )
    return _parse(frame)


def decode_request(buf: bytes | bytearray, *, at_end: bool = False) -> tuple[int, Request | None]:
    """Find the request at the start of ``buf``, pymodbus-style.

    Returns ``(0, None)`` for "need more bytes", ``(n, None)`` for "drop n bytes and call
    again", ``(n, request)`` for a whole valid frame. RTU has no start marker, so on a bad
    CRC or an unknown function exactly one byte is dropped: a valid frame that follows line
    noise is still found. ``at_end`` says the line has gone silent (the RTU 3.5-character
    gap), so nothing more will complete the frame: "need more" becomes "drop one byte",
    which stops noise that claims a long frame from swallowing the next real request.
    """
    size = _frame_size(buf)
    if size == 0:
        return 1, None
    if size is None or len(buf) < size:
        return (1 if at_end and buf else 0), None
    frame = bytes(buf[:size])
    if crc16_modbus(frame) != 0:
        return 1, None
    return size, _parse(frame)


def exception_response(unit_id: int, function: int, code: int) -> bytes:
    """Build an exception frame; the server also uses it to fake a failing device."""
    return append_crc(bytes([unit_id]) + exception_pdu(function, code))


def exception_pdu(function: int, code: int) -> bytes:
    """An exception answer's PDU: the function code with its top bit set, then the code."""
    return bytes([(function | 0x80) & 0xFF, code])


def _check_quantity(count: int, limit: int) -> None:
    if not 1 <= count <= limit:
        raise SlaveExceptionError(
            f"quantity {count} outside 1..{limit}", ExceptionCode.ILLEGAL_DATA_VALUE
        )


def _execute(bank: RegisterBank, req: Request) -> bytes:
    """Apply ``req`` to ``bank`` and return the response PDU (function code onwards)."""
    fc, addr = req.function, req.address.to_bytes(2, "big")
    if fc in _READS:
        kind, limit = _READS[fc]
        _check_quantity(req.count, limit)
        values = bank.get(kind, req.address, req.count)
        data = _pack_bits(values) if kind in _BIT_KINDS else _pack_registers(values)
        return bytes([fc, len(data)]) + data
    if fc in (WRITE_SINGLE_COIL, WRITE_SINGLE_REGISTER):
        if len(req.values) != 1 or (fc == WRITE_SINGLE_COIL and req.values[0] not in (0, _COIL_ON)):
            raise SlaveExceptionError(f"bad value {req.values}", ExceptionCode.ILLEGAL_DATA_VALUE)
        word = req.values[0]
        if fc == WRITE_SINGLE_COIL:
            bank.write(RegisterKind.COIL, req.address, [1 if word else 0])
        else:
            bank.write(RegisterKind.HOLDING, req.address, [word])
        return bytes([fc]) + addr + word.to_bytes(2, "big")
    if fc in _MULTI_WRITES:
        kind, limit = _MULTI_WRITES[fc]
        _check_quantity(req.count, limit)
        if req.byte_count is not None or len(req.values) != req.count:
            raise SlaveExceptionError(
                "byte count disagrees with quantity", ExceptionCode.ILLEGAL_DATA_VALUE
            )
        bank.write(kind, req.address, req.values)
        return bytes([fc]) + addr + req.count.to_bytes(2, "big")
    raise SlaveExceptionError(f"function {fc} not supported", ExceptionCode.ILLEGAL_FUNCTION)


def handle_request(banks: Mapping[int, RegisterBank], req: Request) -> bytes | None:
    """Serve ``req`` and return the whole response frame, or None where a bus stays silent.

    Silence covers units nobody serves (another device may own them) and broadcasts
    (unit 0), whose writes are applied to every bank that accepts them.
    """
    if req.unit_id == BROADCAST_UNIT:
        if req.function in _WRITE_FUNCTIONS:
            for each in banks.values():
                try:
                    _execute(each, req)
                except SlaveExceptionError:
                    continue  # a broadcast has no one to report a refusal to
        return None
    bank = banks.get(req.unit_id)
    if bank is None:
        return None
    return append_crc(bytes([req.unit_id]) + handle_pdu(bank, req))


def handle_pdu(bank: RegisterBank, req: Request) -> bytes:
    """Serve ``req`` on one device and return the response PDU, an exception PDU included.

    The framing-free core of :func:`handle_request`, shared with the Modbus TCP simulator;
    ``req.unit_id`` is not looked at, the caller has already picked the bank.
    """
    try:
        return _execute(bank, req)
    except SlaveExceptionError as exc:
        return exception_pdu(req.function, exc.code)
