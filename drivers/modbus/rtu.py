"""Modbus RTU framing: a PDU between a unit id and a CRC, for the master and the device alike.

An RTU frame has no start marker and no length field. Where it ends follows from its
function code (:func:`~smartpole.drivers.modbus.pdu.request_size` for requests,
:func:`~smartpole.drivers.modbus.pdu.response_size` for answers), and a frame is believed
only once its CRC checks. So both directions find frames the same way, pymodbus-style:
where no valid frame starts, one byte is dropped and the next tried, so a frame behind line
noise (or behind another unit's late answer) is still found.

Decoders take a buffer that grows as bytes arrive and answer ``(0, None)`` for "need more
bytes", ``(n, None)`` for "drop n bytes and call again" and ``(n, frame)`` for a whole
valid frame. ``at_end`` says the line has gone silent (the RTU 3.5-character gap), so
nothing more will complete the frame: "need more" becomes "drop one byte", which stops
noise that claims a long frame from swallowing the next real one.

Pure (no port, no clock), so every rule can be property-tested byte by byte; the
transports only move bytes and keep time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from smartpole.drivers.errors import ProtocolError
from smartpole.drivers.modbus import pdu
from smartpole.drivers.modbus.crc import append_crc, crc16_modbus
from smartpole.drivers.modbus.faults import ReplyFault

BROADCAST_UNIT: Final = 0  # a write to every device; none answers it
MAX_FRAME_BYTES: Final = 256  # the spec's RTU ADU limit; longer "frames" are line noise
ENVELOPE_BYTES: Final = 3  # the unit id before the PDU and the CRC after it

_PduSize = Callable[[pdu.Buffer, int], int | None]


def encode_frame(unit_id: int, body: bytes) -> bytes:
    """``body`` (a PDU) framed for the line: unit id first, CRC last."""
    return append_crc(bytes([unit_id]) + body)


def encode_request(req: pdu.Request) -> bytes:
    """Frame a request as a master puts it on the line."""
    return encode_frame(req.unit_id, pdu.encode_request(req))


def _next_frame(
    buf: pdu.Buffer, start: int, pdu_size: _PduSize, *, at_end: bool
) -> tuple[int, bytes | None]:
    """The frame at ``buf[start]``, in the decoders' ``(used, frame)`` terms."""
    try:
        size = pdu_size(buf, start + 1)
    except ProtocolError:
        return 1, None
    left = len(buf) - start
    if size is None or left < size + ENVELOPE_BYTES:
        return (1 if at_end and left else 0), None
    end = start + size + ENVELOPE_BYTES
    frame = bytes(buf[start:end])
    if crc16_modbus(frame) != 0:
        return 1, None
    return end - start, frame


# ----- requests, as a device receives them -------------------------------------------------


def decode_request(buf: pdu.Buffer, *, at_end: bool = False) -> tuple[int, pdu.Request | None]:
    """Find the request at the start of ``buf`` (see the module for the answer's meaning).

    A request whose byte count disagrees with its quantity is returned with ``byte_count``
    set: it is well delimited, and a device answers it with exception 3.
    """
    used, frame = _next_frame(buf, 0, pdu.request_size, at_end=at_end)
    if frame is None:
        return used, None
    return used, pdu.parse_request(frame[0], frame[1:-2])


# ----- answers, as a master receives them --------------------------------------------------


@dataclass(frozen=True)
class ReplyFrame:
    """One CRC-valid frame a device sent: an answer, an exception or a write's echo."""

    unit: int
    function: int  # without the exception flag
    exception: int | None
    data: bytes  # a read's data bytes (after the byte count); a write echo's 4 bytes

    def describe_exception(self) -> str:
        name = pdu.MODBUS_EXCEPTIONS.get(self.exception or 0, "unknown exception")
        return f"exception {self.exception} ({name})"


def decode_reply(
    buf: pdu.Buffer, start: int = 0, *, at_end: bool = False
) -> tuple[int, ReplyFrame | None]:
    """Find the answer at ``buf[start]`` (see the module for the answer's meaning)."""
    used, frame = _next_frame(buf, start, pdu.response_size, at_end=at_end)
    if frame is None:
        return used, None
    unit, function = frame[0], frame[1]
    if function & pdu.EXCEPTION_FLAG:
        return used, ReplyFrame(unit, function & ~pdu.EXCEPTION_FLAG, frame[2], b"")
    if function in pdu.READ_KIND:
        return used, ReplyFrame(unit, function, None, frame[3:-2])
    return used, ReplyFrame(unit, function, None, frame[2:-2])


def split_replies(raw: pdu.Buffer) -> tuple[list[ReplyFrame], int]:
    """The valid answers in bytes the line has finished sending, and how many were noise."""
    frames: list[ReplyFrame] = []
    noise = 0
    at = 0
    while at < len(raw):
        used, frame = decode_reply(raw, at, at_end=True)
        if frame is None:
            noise += used
        else:
            frames.append(frame)
        at += used
    return frames, noise


def classify_reply(raw: pdu.Buffer, unit_id: int, function: int) -> ReplyFault:
    """Why bytes that arrived were not a valid answer to ``function`` from ``unit_id``."""
    for frame in split_replies(raw)[0]:
        if frame.unit != unit_id:
            return ReplyFault.WRONG_UNIT
        if frame.function != function:
            return ReplyFault.WRONG_FUNCTION
    if len(raw) >= 4 and raw[0] == unit_id and raw[1] in (function, function | pdu.EXCEPTION_FLAG):
        return ReplyFault.CRC_ERROR  # the header of our answer, with a broken body or CRC
    return ReplyFault.GARBAGE
