"""Modbus TCP (MBAP) framing, for the client and the simulated devices alike: pure, no I/O.

An MBAP frame is a 7-byte header and the same PDU RTU carries::

    transaction id (2) | protocol id (2, always 0) | length (2) | unit id (1) | PDU

``length`` counts the unit id and the PDU, so it alone delimits frames (:func:`frame_size`,
which both roles' stream readers use). Unlike RTU there is no silence and no CRC to
resynchronise on: once a header is wrong, every later byte of the stream is suspect. So a
reader never skips bytes; :class:`~smartpole.drivers.errors.ProtocolError` tells it to drop
the connection, which is what the client's reconnect logic is built to recover from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from smartpole.drivers.errors import ProtocolError
from smartpole.drivers.modbus.pdu import (
    MAX_PDU_BYTES,
    Buffer,
    Request,
    RequestRefusedError,
    parse_request,
)
from smartpole.drivers.modbus.pdu import (
    encode_request as encode_request_pdu,
)

HEADER_BYTES: Final = 7  # transaction id, protocol id, length, unit id
MAX_ADU_BYTES: Final = HEADER_BYTES + MAX_PDU_BYTES  # 260
# The length field counts the unit id and the PDU, which has at least a function code.
MIN_LENGTH: Final = 2
MAX_LENGTH: Final = 1 + MAX_PDU_BYTES
MODBUS_PROTOCOL_ID: Final = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class MbapRequest:
    """One decoded Modbus TCP request.

    ``function`` .. ``byte_count`` mean what they mean on
    :class:`~smartpole.drivers.modbus.pdu.Request`. ``error_code`` is set when the
    frame was delimited fine but its PDU cannot be served (1: unknown function, 3: the PDU
    length disagrees with the function's layout); it is the exception a device answers,
    and then only ``function`` is meaningful. ``protocol_id`` is always 0 in decoded
    requests; :func:`encode_request` honours other values so tests can build bad frames.
    """

    transaction_id: int
    protocol_id: int = MODBUS_PROTOCOL_ID
    unit_id: int
    function: int
    address: int = 0
    count: int = 0
    values: tuple[int, ...] = ()
    byte_count: int | None = None
    error_code: int | None = None

    @property
    def request(self) -> Request:
        """The framing-free request."""
        return Request(
            self.unit_id, self.function, self.address, self.count, self.values, self.byte_count
        )


def _check_u16(name: str, value: int) -> None:
    if not 0 <= value <= 0xFFFF:
        raise ValueError(f"{name} {value} outside 0..0xFFFF")


def encode_adu(
    transaction_id: int, unit_id: int, pdu: bytes, *, protocol_id: int = MODBUS_PROTOCOL_ID
) -> bytes:
    """Wrap ``pdu`` in an MBAP header; refuses what no conforming peer could send."""
    _check_u16("transaction id", transaction_id)
    _check_u16("protocol id", protocol_id)
    if not 0 <= unit_id <= 0xFF:
        raise ValueError(f"unit id {unit_id} outside 0..255")
    if not 1 <= len(pdu) <= MAX_PDU_BYTES:
        raise ValueError(f"PDU of {len(pdu)} bytes outside 1..{MAX_PDU_BYTES}")
    return (
        transaction_id.to_bytes(2, "big")
        + protocol_id.to_bytes(2, "big")
        + (1 + len(pdu)).to_bytes(2, "big")
        + bytes([unit_id])
        + pdu
    )


def encode_response(transaction_id: int, unit_id: int, pdu: bytes) -> bytes:
    """Frame an answer: the request's transaction and unit id echoed, protocol id 0."""
    return encode_adu(transaction_id, unit_id, pdu)


def encode_request(req: MbapRequest) -> bytes:
    """Frame a request as a client would."""
    pdu = encode_request_pdu(req.request)
    return encode_adu(req.transaction_id, req.unit_id, pdu, protocol_id=req.protocol_id)


def frame_size(buf: Buffer) -> int | None:
    """Length of the frame at the start of ``buf``; None until its header is in.

    Raises ProtocolError as soon as the header shows the stream is not MBAP (protocol id
    not 0, or a length outside 2..254, i.e. an ADU over 260 bytes).
    """
    if len(buf) >= 4 and (protocol_id := int.from_bytes(buf[2:4], "big")) != MODBUS_PROTOCOL_ID:
        raise ProtocolError(f"MBAP protocol id {protocol_id}, not Modbus (0)")
    if len(buf) < 6:
        return None
    length = int.from_bytes(buf[4:6], "big")
    if not MIN_LENGTH <= length <= MAX_LENGTH:
        raise ProtocolError(f"MBAP length {length} outside {MIN_LENGTH}..{MAX_LENGTH}")
    return 6 + length


def decode_request(buf: Buffer) -> tuple[int, MbapRequest | None]:
    """Find the request at the start of ``buf``.

    Returns ``(0, None)`` for "need more bytes" and ``(n, request)`` for a whole frame of
    ``n`` bytes; raises ProtocolError where :func:`frame_size` does, since with no resync
    marker there is nothing sound to skip to. A frame that is delimited fine but whose PDU
    is bad is returned with ``error_code``, because a device answers that with an exception
    and carries on.
    """
    size = frame_size(buf)
    if size is None or len(buf) < size:
        return 0, None
    transaction_id = int.from_bytes(buf[0:2], "big")
    unit_id, pdu = buf[6], bytes(buf[HEADER_BYTES:size])
    try:
        req = parse_request(unit_id, pdu)
    except RequestRefusedError as exc:
        bad = MbapRequest(
            transaction_id=transaction_id, unit_id=unit_id, function=pdu[0], error_code=exc.code
        )
        return size, bad
    return size, MbapRequest(
        transaction_id=transaction_id,
        unit_id=unit_id,
        function=req.function,
        address=req.address,
        count=req.count,
        values=req.values,
        byte_count=req.byte_count,
    )
