"""DL/T 645-2007 framing and data codecs: pure functions, no I/O, no clock.

A frame on the wire::

    [FE FE FE FE]  68  A0 A1 A2 A3 A4 A5  68  C  L  DATA(L bytes)  CS  16

* The optional ``FE`` bytes wake the receiver up; decoders skip them like any other noise.
* The address is 12 BCD digits, sent least-significant byte first: the printed address
  ``000000000001`` goes out as ``01 00 00 00 00 00``. ``AA`` in a byte is a wildcard (the
  all-``AA`` address reaches whichever meter is on the bus); ``99..99`` is the broadcast
  address of time sync.
* ``C`` is the control code: bit 7 set in replies, bit 6 set in abnormal (error) replies,
  bit 5 set when follow-up frames come, bits 4..0 the function (0x11 read data, 0x13 read
  communication address, 0x08 broadcast time sync).
* ``L`` counts the data bytes (at most 200 in a read reply); every data byte is sent
  ``+0x33`` modulo 256.
* ``CS`` is the sum modulo 256 of every byte from the first ``68`` through the last data byte.

Values are BCD, least-significant byte first, with a fixed decimal layout per data
identifier (DI) such as ``XXX.X``; for signed quantities the top bit of the highest byte is
the sign (0 positive, 1 negative).
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Final, NoReturn

from smartpole.drivers.errors import CodecError, DeviceExceptionError, ProtocolError

START: Final = 0x68
END: Final = 0x16
WAKEUP: Final = b"\xfe\xfe\xfe\xfe"
DATA_OFFSET: Final = 0x33
# The standard caps L at 200 for reads (50 for writes); a bigger L is line noise.
MAX_DATA_LEN: Final = 200
FRAME_OVERHEAD: Final = 12  # 68, six address bytes, 68, C, L, CS, 16
MAX_FRAME_LEN: Final = FRAME_OVERHEAD + MAX_DATA_LEN

WILDCARD_ADDRESS: Final = "AAAAAAAAAAAA"
BROADCAST_ADDRESS: Final = "999999999999"

# Control code bits and functions.
REPLY_BIT: Final = 0x80
ABNORMAL_BIT: Final = 0x40
FOLLOW_UP_BIT: Final = 0x20
FUNCTION_MASK: Final = 0x1F
BROADCAST_TIME_SYNC: Final = 0x08
READ_DATA: Final = 0x11
READ_ADDRESS: Final = 0x13

_ADDRESS_PATTERN: Final = re.compile(r"^[0-9A-Fa-f]{12}$")
_FORMAT_PATTERN: Final = re.compile(r"^(X+)(?:\.(X+))?$")
MAX_FORMAT_DIGITS: Final = 16


class ErrorBit(enum.IntFlag):
    """Bits of the error information byte (ERR) an abnormal reply carries."""

    OTHER = 0x01
    NO_REQUESTED_DATA = 0x02
    PASSWORD_OR_UNAUTHORISED = 0x04
    BAUD_RATE_NOT_CHANGEABLE = 0x08
    TOO_MANY_YEAR_ZONES = 0x10
    TOO_MANY_DAY_PERIODS = 0x20
    TOO_MANY_TARIFFS = 0x40


_ERROR_NAMES: Final = {
    ErrorBit.OTHER: "other error",
    ErrorBit.NO_REQUESTED_DATA: "no requested data",
    ErrorBit.PASSWORD_OR_UNAUTHORISED: "password wrong or not authorised",
    ErrorBit.BAUD_RATE_NOT_CHANGEABLE: "baud rate cannot be changed",
    ErrorBit.TOO_MANY_YEAR_ZONES: "too many year time zones",
    ErrorBit.TOO_MANY_DAY_PERIODS: "too many daily time periods",
    ErrorBit.TOO_MANY_TARIFFS: "too many tariffs",
}


def describe_error(code: int) -> str:
    """Human-readable meaning of an error byte; several bits may be set at once."""
    names = [name for bit, name in _ERROR_NAMES.items() if code & bit]
    if code & 0x80:
        names.append("reserved bit 7")
    return ", ".join(names) or "no error bit set"


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded frame. ``address`` is the printed form (most significant digit first,
    12 hex digits, so wildcards read ``AA``); ``data`` has the 0x33 offset removed."""

    address: str
    control: int
    data: bytes

    @property
    def is_reply(self) -> bool:
        return bool(self.control & REPLY_BIT)

    @property
    def is_abnormal(self) -> bool:
        return bool(self.control & ABNORMAL_BIT)

    @property
    def function(self) -> int:
        return self.control & FUNCTION_MASK


# ----- addresses -------------------------------------------------------------------------


def normalize_address(address: str) -> str:
    """The canonical printed form: 12 upper-case hex digits (BCD digits, ``AA`` wildcards)."""
    if not isinstance(address, str) or not _ADDRESS_PATTERN.match(address):
        raise ValueError(f"a DL/T 645 address is 12 digits, got {address!r}")
    return address.upper()


def address_to_wire(address: str) -> bytes:
    """``"000000000001"`` -> ``01 00 00 00 00 00`` (least-significant byte first)."""
    return bytes.fromhex(normalize_address(address))[::-1]


def address_from_wire(raw: bytes | bytearray) -> str:
    if len(raw) != 6:
        raise ValueError(f"an address is 6 bytes, got {len(raw)}")
    return bytes(raw[::-1]).hex().upper()


def address_matches(pattern: str, address: str) -> bool:
    """Whether ``address`` is reached by ``pattern``, where an ``AA`` byte matches anything."""
    pattern, address = normalize_address(pattern), normalize_address(address)
    return all(
        p == "AA" or p == a
        for p, a in zip(
            (pattern[i : i + 2] for i in range(0, 12, 2)),
            (address[i : i + 2] for i in range(0, 12, 2)),
            strict=True,
        )
    )


# ----- frames ----------------------------------------------------------------------------


def checksum(data: bytes | bytearray | memoryview) -> int:
    return sum(data) & 0xFF


def encode_frame(address: str, control: int, data: bytes, *, preamble: bool = True) -> bytes:
    """Build a frame; ``data`` is given without the 0x33 offset, which is added here."""
    if not 0 <= control <= 0xFF:
        raise ValueError(f"control code {control} is not a byte")
    if len(data) > MAX_DATA_LEN:
        raise ValueError(f"{len(data)} data bytes exceed the maximum of {MAX_DATA_LEN}")
    body = bytearray([START, *address_to_wire(address), START, control, len(data)])
    body += bytes((b + DATA_OFFSET) & 0xFF for b in data)
    body += bytes([checksum(body), END])
    return (WAKEUP if preamble else b"") + bytes(body)


class _Verdict(enum.Enum):
    FRAME = "frame"
    NEED_MORE = "need more"
    NOT_A_FRAME = "not a frame"  # no plausible header at the start
    CORRUPT = "corrupt"  # a complete frame whose checksum or closing 16 is wrong


def _scan(buf: bytes | bytearray, at_end: bool) -> tuple[int, Frame | None, _Verdict]:
    n = len(buf)
    if n == 0:
        return 0, None, _Verdict.NEED_MORE
    if buf[0] != START:
        # Wake-up bytes and noise: drop everything up to the next possible frame start.
        nxt = buf.find(START)
        return (n if nxt < 0 else nxt), None, _Verdict.NOT_A_FRAME
    header_ok = n < 8 or buf[7] == START
    header_ok = header_ok and (n < 10 or buf[9] <= MAX_DATA_LEN)
    if not header_ok:
        return 1, None, _Verdict.NOT_A_FRAME
    size = FRAME_OVERHEAD + buf[9] if n >= 10 else MAX_FRAME_LEN
    if n < size:
        # "Need more" unless the line has gone quiet: then nothing will complete this
        # candidate, and holding on to it would swallow a real frame inside it.
        return (1 if at_end else 0), None, (_Verdict.NOT_A_FRAME if at_end else _Verdict.NEED_MORE)
    if buf[size - 1] != END or checksum(memoryview(buf)[: size - 2]) != buf[size - 2]:
        return 1, None, _Verdict.CORRUPT
    frame = Frame(
        address=address_from_wire(buf[1:7]),
        control=buf[8],
        data=bytes((b - DATA_OFFSET) & 0xFF for b in buf[10 : size - 2]),
    )
    return size, frame, _Verdict.FRAME


def decode_frame(buf: bytes | bytearray, *, at_end: bool = False) -> tuple[int, Frame | None]:
    """Find the frame at the start of ``buf``.

    Returns ``(0, None)`` for "need more bytes", ``(n, None)`` for "drop n bytes and call
    again" (wake-up bytes, noise, a bad checksum), ``(n, frame)`` for a whole valid frame
    of n bytes. On a bad checksum exactly one byte is dropped, so a real frame hidden
    behind a false ``68`` is still found. ``at_end`` says no more bytes will come (the line
    went quiet): an incomplete candidate is then dropped instead of waited for.
    """
    used, frame, _ = _scan(buf, at_end)
    return used, frame


class FrameReader:
    """Accumulates received bytes and yields frames, counting what it had to throw away.

    ``crc_errors`` counts complete candidate frames (both ``68``, a sane ``L``) whose
    checksum or closing ``16`` was wrong; ``garbage_bytes`` counts dropped bytes other than
    ``FE`` wake-up bytes.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self.crc_errors = 0
        self.garbage_bytes = 0

    @property
    def pending(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes, *, at_end: bool = False) -> list[Frame]:
        self._buf += data
        return list(self._drain(at_end))

    def flush(self) -> list[Frame]:
        """The line went quiet: settle everything buffered (frames still come out)."""
        return self.feed(b"", at_end=True)

    def clear(self) -> None:
        """Forget buffered bytes (stale input before a new request); counted as garbage."""
        self._count_dropped(self._buf)
        self._buf.clear()

    def _drain(self, at_end: bool) -> Iterator[Frame]:
        while self._buf:
            used, frame, verdict = _scan(self._buf, at_end)
            if used == 0:
                return
            if frame is None:
                if verdict is _Verdict.CORRUPT:
                    self.crc_errors += 1
                self._count_dropped(self._buf[:used])
            del self._buf[:used]
            if frame is not None:
                yield frame

    def _count_dropped(self, dropped: bytes | bytearray) -> None:
        self.garbage_bytes += len(dropped) - dropped.count(0xFE)


# ----- requests and replies --------------------------------------------------------------


def di_to_wire(di: int) -> bytes:
    """DI3..DI0 as printed (``0x02010100``) -> DI0 first on the wire (``00 01 01 02``)."""
    if not 0 <= di <= 0xFFFFFFFF:
        raise ValueError(f"data identifier {di:#x} is not 4 bytes")
    return di.to_bytes(4, "little")


def read_data_request(address: str, di: int, *, preamble: bool = True) -> bytes:
    return encode_frame(address, READ_DATA, di_to_wire(di), preamble=preamble)


def read_address_request(*, preamble: bool = True) -> bytes:
    """Read the communication address of whichever meter is on the bus (one meter only)."""
    return encode_frame(WILDCARD_ADDRESS, READ_ADDRESS, b"", preamble=preamble)


def read_data_reply(address: str, di: int, value: bytes, *, preamble: bool = True) -> bytes:
    return encode_frame(address, READ_DATA | REPLY_BIT, di_to_wire(di) + value, preamble=preamble)


def read_address_reply(address: str, *, preamble: bool = True) -> bytes:
    return encode_frame(
        address, READ_ADDRESS | REPLY_BIT, address_to_wire(address), preamble=preamble
    )


def error_reply(address: str, function: int, code: int, *, preamble: bool = True) -> bytes:
    """An abnormal reply (``0xD1`` for read data) carrying one error byte."""
    if not 0 <= code <= 0xFF:
        raise ValueError(f"error code {code} is not a byte")
    control = (function & FUNCTION_MASK) | REPLY_BIT | ABNORMAL_BIT
    return encode_frame(address, control, bytes([code]), preamble=preamble)


def _raise_abnormal(frame: Frame, what: str) -> NoReturn:
    if len(frame.data) != 1:
        raise ProtocolError(
            f"meter {frame.address} sent an error reply to {what} with {len(frame.data)} "
            "data bytes instead of one error byte"
        )
    code = frame.data[0]
    raise DeviceExceptionError(
        f"meter {frame.address} refused {what}: error {code:#04x} ({describe_error(code)})",
        code,
    )


def parse_read_reply(frame: Frame, di: int) -> bytes:
    """The value bytes (BCD, LSB first, 0x33 already removed) of a reply to "read ``di``"."""
    what = f"read of DI {di:08X}"
    if frame.control == READ_DATA | REPLY_BIT | ABNORMAL_BIT:
        _raise_abnormal(frame, what)
    if frame.control == READ_DATA | REPLY_BIT | FOLLOW_UP_BIT:
        raise ProtocolError(f"meter {frame.address} answered {what} with follow-up frames")
    if frame.control != READ_DATA | REPLY_BIT:
        raise ProtocolError(
            f"expected control code 0x91 in answer to {what}, got {frame.control:#04x}"
        )
    if len(frame.data) < 4:
        raise ProtocolError(f"reply to {what} has {len(frame.data)} data bytes, no DI")
    got = int.from_bytes(frame.data[:4], "little")
    if got != di:
        raise ProtocolError(f"reply to {what} carries DI {got:08X}")
    return frame.data[4:]


def parse_address_reply(frame: Frame) -> str:
    """The address a meter reports in answer to "read communication address" (0x13)."""
    what = "read of the communication address"
    if frame.control == READ_ADDRESS | REPLY_BIT | ABNORMAL_BIT:
        _raise_abnormal(frame, what)
    if frame.control != READ_ADDRESS | REPLY_BIT:
        raise ProtocolError(
            f"expected control code 0x93 in answer to {what}, got {frame.control:#04x}"
        )
    if len(frame.data) != 6:
        raise ProtocolError(f"reply to {what} has {len(frame.data)} data bytes, not 6")
    address = address_from_wire(frame.data)
    if address != frame.address:
        raise ProtocolError(f"reply from {frame.address} reports a different address {address}")
    return address


# ----- BCD values ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BcdLayout:
    """A format such as ``XXX.X``: ``digits`` BCD digits of which ``decimals`` follow the point."""

    digits: int
    decimals: int

    @property
    def length(self) -> int:
        return self.digits // 2

    def largest(self, signed: bool) -> Decimal:
        """The largest magnitude the layout holds (the sign bit takes the top digit's 8)."""
        top = 8 * 10 ** (self.digits - 1) - 1 if signed else 10**self.digits - 1
        return Decimal(top).scaleb(-self.decimals)


def parse_format(fmt: str) -> BcdLayout:
    """Check a layout (``X`` digits, at most one ``.``, whole bytes) and return its shape."""
    match = _FORMAT_PATTERN.match(fmt) if isinstance(fmt, str) else None
    if match is None:
        raise ValueError(f"format {fmt!r} is not 'X' digits with at most one '.', e.g. 'XXX.X'")
    whole, fraction = match.group(1), match.group(2) or ""
    digits = len(whole) + len(fraction)
    if digits % 2:
        raise ValueError(f"format {fmt!r} has {digits} digits; BCD needs whole bytes (even)")
    if digits > MAX_FORMAT_DIGITS:
        raise ValueError(f"format {fmt!r} has more than {MAX_FORMAT_DIGITS} digits")
    return BcdLayout(digits, len(fraction))


def _layout(fmt: str) -> BcdLayout:
    try:
        return parse_format(fmt)
    except ValueError as exc:
        raise CodecError(str(exc)) from None


def encode_bcd(value: float, fmt: str, signed: bool) -> bytes:
    """A value in the layout ``fmt``, rounded half away from zero to its last digit."""
    layout = _layout(fmt)
    if not math.isfinite(value):
        raise CodecError(f"{value} cannot be encoded as BCD")
    try:
        scaled = Decimal(repr(float(value))).scaleb(layout.decimals)
        magnitude = int(abs(scaled).quantize(Decimal(1), rounding=ROUND_HALF_UP))
    except InvalidOperation as exc:
        raise CodecError(f"{value} cannot be encoded as {fmt}") from exc
    negative = value < 0 and magnitude != 0
    if negative and not signed:
        raise CodecError(f"{value} is negative but {fmt} is unsigned here")
    if Decimal(magnitude).scaleb(-layout.decimals) > layout.largest(signed):
        raise CodecError(f"{value} does not fit {fmt} ({'signed' if signed else 'unsigned'})")
    digits = f"{magnitude:0{layout.digits}d}"
    raw = bytearray(bytes.fromhex(digits)[::-1])
    if negative:
        raw[-1] |= 0x80
    return bytes(raw)


def decode_bcd(raw: bytes, fmt: str, signed: bool) -> float:
    """The value of BCD bytes (least-significant byte first) in the layout ``fmt``."""
    layout = _layout(fmt)
    if len(raw) != layout.length:
        raise CodecError(f"{fmt} takes {layout.length} bytes, got {len(raw)}: {raw.hex(' ')}")
    digits = bytearray(raw[::-1])
    negative = False
    if signed:
        negative = bool(digits[0] & 0x80)
        digits[0] &= 0x7F
    text = digits.hex()
    if not text.isdigit():
        raise CodecError(f"{raw.hex(' ')} is not BCD (a nibble above 9)")
    magnitude = int(text)
    result = float(Decimal(magnitude).scaleb(-layout.decimals))  # correctly rounded
    return -result if negative and magnitude else result
