"""Framing of the pole-MCU bridge (PROTOCOL.md section 1): pure functions, no I/O, no clock.

A frame on the wire::

    LEN  SEQ  PAYLOAD(0..59)  CRC_HI  CRC_LO  7E

``LEN`` counts the whole frame, ``SEQ`` is ``0x10 | nak << 5 | seq``, the CRC is
CRC-16/CCITT-FALSE over ``LEN``, ``SEQ`` and the payload. There is no byte stuffing: a
receiver finds frames by checking what its buffer starts with (``check_frame``) and, when
that is not a frame, drops everything up to the next ``0x7E``. The same rules run on the
MCU (``c/``) and in the Python twin, so the decisions here are byte-for-byte the spec's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from smartpole.drivers.errors import CodecError

MAX_FRAME: Final = 64
MIN_FRAME: Final = 5
MAX_PAYLOAD: Final = MAX_FRAME - MIN_FRAME
SYNC: Final = 0x7E
RX_IDLE_MS: Final = 20
SEQ_MODULO: Final = 16

SEQ_BASE: Final = 0x10
NAK_BIT: Final = 0x20
SEQ_MASK: Final = 0x0F
# Bits that must be exactly SEQ_BASE in a SEQ byte, NAK bit excluded (bits 4, 6, 7).
_SEQ_FIXED_MASK: Final = 0xD0


def _crc16_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
        table.append(crc & 0xFFFF)
    return tuple(table)


_CRC16_TABLE: Final = _crc16_table()


def crc16_ccitt(data: bytes | bytearray | memoryview) -> int:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, no final XOR)."""
    crc = 0xFFFF
    for byte in bytes(data):
        crc = ((crc << 8) & 0xFFFF) ^ _CRC16_TABLE[(crc >> 8) ^ byte]
    return crc


def seq_byte(seq: int, *, nak: bool = False) -> int:
    """The SEQ byte for a sequence number (0..15) and NAK flag."""
    if not 0 <= seq < SEQ_MODULO:
        raise CodecError(f"sequence number {seq} outside 0..15")
    return SEQ_BASE | (NAK_BIT if nak else 0) | seq


def valid_seq_byte(value: int, *, from_mcu: bool) -> bool:
    """Whether ``value`` is a legal SEQ byte; the NAK bit is legal only from the MCU."""
    if value & _SEQ_FIXED_MASK != SEQ_BASE:
        return False
    return from_mcu or not value & NAK_BIT


def encode_frame(seq: int, payload: bytes, *, nak: bool = False) -> bytes:
    """One complete frame around ``payload`` (at most 59 bytes)."""
    if len(payload) > MAX_PAYLOAD:
        raise CodecError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    head = bytes((len(payload) + MIN_FRAME, seq_byte(seq, nak=nak))) + bytes(payload)
    crc = crc16_ccitt(head)
    return head + bytes((crc >> 8, crc & 0xFF, SYNC))


@dataclass(frozen=True)
class Frame:
    """A decoded frame: its sequence number, NAK flag and payload."""

    seq: int
    nak: bool
    payload: bytes


def _discard(buf: bytes | bytearray | memoryview) -> int:
    """Drop through the first SYNC at index 0 or later, or the whole buffer if none."""
    index = bytes(buf).find(SYNC)
    return -(index + 1) if index >= 0 else -len(buf)


def check_frame(buf: bytes | bytearray | memoryview, *, from_mcu: bool) -> int:
    """What ``buf`` starts with: ``n > 0`` a frame of n bytes, 0 need more, ``-n`` discard n.

    The steps are PROTOCOL.md's 'Decoding' list, in its order; ``from_mcu`` says which
    direction's SEQ rules apply (only MCU frames may carry the NAK bit).
    """
    if len(buf) == 0:
        return 0
    length = buf[0]
    if not MIN_FRAME <= length <= MAX_FRAME:
        return _discard(buf)
    if len(buf) > 1 and not valid_seq_byte(buf[1], from_mcu=from_mcu):
        return _discard(buf)
    if len(buf) < length:
        return 0
    if buf[length - 1] != SYNC:
        return _discard(buf)
    crc = crc16_ccitt(buf[: length - 3])
    if buf[length - 3] != crc >> 8 or buf[length - 2] != crc & 0xFF:
        return _discard(buf)
    return length


def parse_frame(frame: bytes | bytearray | memoryview) -> Frame:
    """The fields of a buffer that ``check_frame`` accepted whole."""
    raw = bytes(frame)
    return Frame(seq=raw[1] & SEQ_MASK, nak=bool(raw[1] & NAK_BIT), payload=raw[2:-3])


class FrameDecoder:
    """Turns a byte stream from one direction into frames, keeping what is left over.

    Not thread-safe and clock-free: callers pass ``now_ms`` (any monotonic millisecond
    clock) so that the idle drop of a half-received frame is deterministic in tests, the
    twin and the emulator alike.
    """

    def __init__(self, from_mcu: bool) -> None:
        self.from_mcu = from_mcu
        self._buf = bytearray()
        self._last_byte_ms: float | None = None
        self.frames = 0
        self.discarded_bytes = 0
        self.discards = 0
        self.idle_drops = 0

    @property
    def has_partial(self) -> bool:
        """Whether bytes of an incomplete frame are held."""
        return bool(self._buf)

    @property
    def pending(self) -> bytes:
        """The held bytes of an incomplete frame."""
        return bytes(self._buf)

    def check_idle(self, now_ms: float) -> bool:
        """Drop a partial frame after more than RX_IDLE_MS of silence; True if one was."""
        if (
            self._buf
            and self._last_byte_ms is not None
            and now_ms - self._last_byte_ms > RX_IDLE_MS
        ):
            self.discarded_bytes += len(self._buf)
            self.idle_drops += 1
            self._buf.clear()
            return True
        return False

    def feed(self, data: bytes, now_ms: float | None = None) -> list[Frame]:
        """Add received bytes and return every complete frame now available, in order."""
        if now_ms is not None:
            self.check_idle(now_ms)
            if data:
                self._last_byte_ms = now_ms
        self._buf += data
        frames: list[Frame] = []
        while self._buf:
            result = check_frame(self._buf, from_mcu=self.from_mcu)
            if result == 0:
                break
            if result < 0:
                self.discards += 1
                self.discarded_bytes += -result
                del self._buf[:-result]
                continue
            frames.append(parse_frame(self._buf[:result]))
            self.frames += 1
            del self._buf[:result]
        return frames

    def reset(self) -> None:
        """Forget any partial frame (e.g. after the port was reopened); counters stay."""
        self._buf.clear()
        self._last_byte_ms = None
