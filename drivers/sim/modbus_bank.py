"""A simulated Modbus device's memory and the answers it gives: the server role.

Pure (no I/O, no clock), so every rule of what a device answers can be property-tested
byte by byte; the servers (RTU on a pty, Modbus TCP) only frame, move bytes and add timing.
The layouts come from :mod:`smartpole.drivers.modbus.pdu`, the same code the agent's
client parses answers with.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

from smartpole.drivers.modbus import pdu
from smartpole.drivers.modbus.pdu import ExceptionCode, Request, RequestRefusedError
from smartpole.drivers.modbus.points import RegisterKind
from smartpole.drivers.modbus.rtu import BROADCAST_UNIT, encode_frame

_BIT_KINDS: Final = frozenset({RegisterKind.COIL, RegisterKind.DISCRETE})
_WRITABLE_KINDS: Final = frozenset({RegisterKind.COIL, RegisterKind.HOLDING})


class IllegalAddressError(RequestRefusedError):
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
        # The device's own read limit (registers, or bits for coils and discrete inputs):
        # a longer read is refused with exception 3, as cheap meters with small buffers
        # do (libmodbus devices built with a small MAX_READ_REGISTERS alike). None: the
        # Modbus maximum of the function only.
        self.max_read: int | None = None

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


def _check_quantity(function: int, count: int) -> None:
    limit = pdu.MAX_QUANTITY[function]
    if not 1 <= count <= limit:
        raise RequestRefusedError(
            f"quantity {count} outside 1..{limit}", ExceptionCode.ILLEGAL_DATA_VALUE
        )


def _execute(bank: RegisterBank, req: Request) -> bytes:
    """Apply ``req`` to ``bank`` and return the answer's PDU."""
    fc = req.function
    if fc in pdu.READ_KIND:
        _check_quantity(fc, req.count)
        if bank.max_read is not None and req.count > bank.max_read:
            raise RequestRefusedError(
                f"quantity {req.count} above this device's {bank.max_read}",
                ExceptionCode.ILLEGAL_DATA_VALUE,
            )
        return pdu.encode_read_response(fc, bank.get(pdu.READ_KIND[fc], req.address, req.count))
    if fc in pdu.SINGLE_WRITES:
        if len(req.values) != 1 or (
            fc == pdu.WRITE_SINGLE_COIL and req.values[0] not in (0, pdu.COIL_ON)
        ):
            raise RequestRefusedError(f"bad value {req.values}", ExceptionCode.ILLEGAL_DATA_VALUE)
        word = req.values[0]
        if fc == pdu.WRITE_SINGLE_COIL:
            bank.write(RegisterKind.COIL, req.address, [1 if word else 0])
        else:
            bank.write(RegisterKind.HOLDING, req.address, [word])
        return pdu.encode_write_echo(fc, req.address, word)
    if fc in pdu.MULTIPLE_WRITES:
        _check_quantity(fc, req.count)
        if req.byte_count is not None or len(req.values) != req.count:
            raise RequestRefusedError(
                "byte count disagrees with quantity", ExceptionCode.ILLEGAL_DATA_VALUE
            )
        bank.write(pdu.WRITE_KIND[fc], req.address, req.values)
        return pdu.encode_write_echo(fc, req.address, req.count)
    raise RequestRefusedError(f"function {fc} not supported", ExceptionCode.ILLEGAL_FUNCTION)


def handle_pdu(bank: RegisterBank, req: Request) -> bytes:
    """Serve ``req`` on one device and return the answer's PDU, an exception PDU included.

    ``req.unit_id`` is not looked at: the caller has already picked the bank.
    """
    try:
        return _execute(bank, req)
    except RequestRefusedError as exc:
        return pdu.encode_exception(req.function, exc.code)


def handle_request(banks: Mapping[int, RegisterBank], req: Request) -> bytes | None:
    """Serve ``req`` on an RTU bus and return the whole answer frame, or None where the bus
    stays silent.

    Silence covers units nobody serves (another device may own them) and broadcasts
    (unit 0), whose writes are applied to every bank that accepts them.
    """
    if req.unit_id == BROADCAST_UNIT:
        if req.function in pdu.WRITE_KIND:
            for each in banks.values():
                try:
                    _execute(each, req)
                except RequestRefusedError:
                    continue  # a broadcast has no one to report a refusal to
        return None
    bank = banks.get(req.unit_id)
    if bank is None:
        return None
    return encode_frame(req.unit_id, handle_pdu(bank, req))


def exception_response(unit_id: int, function: int, code: int) -> bytes:
    """An RTU exception frame; the servers also use it to fake a failing device."""
    return encode_frame(unit_id, pdu.encode_exception(function, code))
