"""Turn Modbus registers into engineering values and back, as a profile's point describes.

Pure functions, so hypothesis can check that encode and decode are inverse for every type,
order and scale; the simulators encode with the same code the agent decodes with, and the
profile's test vectors from the manuals keep both honest.

Writes go through :func:`encode_write`, the one place that turns a value the agent wants
into what goes on the wire: it refuses read-only points and values outside the profile's
write limits, and follows a point's ``write:`` block when writes go elsewhere than reads.
"""

from __future__ import annotations

import math
import operator
import struct
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import NamedTuple

from smartpole.drivers.errors import CodecError
from smartpole.drivers.modbus.pdu import write_function
from smartpole.drivers.modbus.points import DataType, PointSpec, RegisterKind, WriteEncoding
from smartpole.drivers.schema import Value

_STRUCT = {
    DataType.U16: "H",
    DataType.I16: "h",
    DataType.U32: "I",
    DataType.I32: "i",
    DataType.F32: "f",
    DataType.F64: "d",
}
_INTEGER_RANGE = {
    DataType.U16: (0, 0xFFFF),
    DataType.I16: (-0x8000, 0x7FFF),
    DataType.U32: (0, 0xFFFF_FFFF),
    DataType.I32: (-0x8000_0000, 0x7FFF_FFFF),
}
_STRING_PADDING = b"\x00 "  # stripped from the end of a decoded string

# (block registers, offset of the point's first register) -> the point's value
PointDecoder = Callable[[Sequence[int], int], Value]


class WriteRequest(NamedTuple):
    """One Modbus write: coils go with FC 05 (``words`` are 0/1), registers with FC 06/16."""

    kind: RegisterKind
    address: int
    words: list[int]

    @property
    def function(self) -> int:
        """The function code to send: 5 for a coil, 6 for one register, 16 for several."""
        return write_function(self.kind, len(self.words))


def decimals_of(scale: float) -> int:
    """Decimal places a factor implies (0.1 -> 1).

    234 * 0.1 must read 23.4, not 23.400000000000002.
    """
    exponent = Decimal(repr(scale)).normalize().as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else 0


def is_physical(value: Value) -> bool:
    """False for NaN and ±inf, which meters send for "no reading"; True for anything else.

    Decoding keeps them (they are what the device said); the agent marks such a point bad.
    """
    return not isinstance(value, float) or math.isfinite(value)


def _to_bytes(spec: PointSpec, words: Sequence[int]) -> bytes:
    ordered = list(words) if spec.word_order == "big" else list(reversed(words))
    raw = b"".join(word.to_bytes(2, "big") for word in ordered)
    if spec.byte_order == "little":
        raw = b"".join(raw[i + 1 : i + 2] + raw[i : i + 1] for i in range(0, len(raw), 2))
    return raw


def _to_words(spec: PointSpec, raw: bytes) -> list[int]:
    if spec.byte_order == "little":
        raw = b"".join(raw[i + 1 : i + 2] + raw[i : i + 1] for i in range(0, len(raw), 2))
    words = [int.from_bytes(raw[i : i + 2], "big") for i in range(0, len(raw), 2)]
    return words if spec.word_order == "big" else list(reversed(words))


def _check_words(spec: PointSpec, words: Sequence[int]) -> None:
    if len(words) != spec.register_count:
        raise CodecError(
            f"{spec.type.value} needs {spec.register_count} registers, got {len(words)}"
        )
    if spec.type is not DataType.BOOL and any(not 0 <= word <= 0xFFFF for word in words):
        raise CodecError(f"register values out of 16-bit range: {list(words)}")


def _raw_integer(spec: PointSpec, words: Sequence[int]) -> int:
    raw: int = struct.unpack(">" + _STRUCT[spec.type], _to_bytes(spec, words))[0]
    return raw


def decode(spec: PointSpec, words: Sequence[int]) -> Value:
    """Decode the ``spec.register_count`` registers (or one bit) of a point."""
    _check_words(spec, words)
    if spec.type is DataType.BOOL:
        return bool(words[0])
    if spec.bit is not None:
        return bool((_raw_integer(spec, words) >> spec.bit) & 1)
    packed = _to_bytes(spec, words)
    if spec.type is DataType.STRING:
        return packed.rstrip(_STRING_PADDING).decode("utf-8", errors="replace")
    raw: int | float = struct.unpack(">" + _STRUCT[spec.type], packed)[0]
    if spec.type is DataType.F32:
        raw = _shortest_f32(raw, packed)
    if spec.scale == 1 and spec.offset == 0:
        return raw
    value = raw * spec.scale + spec.offset
    if isinstance(raw, float):
        return value
    # An integer times a decimal factor has exactly that many decimals; rounding to them
    # removes binary floating-point noise and nothing else.
    return round(value, max(decimals_of(spec.scale), decimals_of(spec.offset)))


def compile_decoder(spec: PointSpec) -> PointDecoder:
    """A decoder for one point inside a block read, built once per read plan.

    ``decode`` is the reference and stays the one place the rules are written out; this
    is the same arithmetic with every per-point decision (type, orders, scale, the struct
    formats) taken once instead of for each value, because a busy gateway decodes
    thousands of values a second. The registers must be what a read returned (16-bit
    words, enough of them), which the client has already checked, so nothing is checked
    again here. tests/drivers/modbus/test_fast_decode.py holds it equal to ``decode``.
    """
    if spec.type is DataType.BOOL:
        return _bool_at
    if spec.type is DataType.STRING:
        packed = _packer(spec)
        return lambda words, at: (
            packed(words, at).rstrip(_STRING_PADDING).decode("utf-8", errors="replace")
        )
    raw = _raw_number(spec)
    if spec.bit is not None:
        bit = spec.bit
        return lambda words, at: bool((int(raw(words, at)) >> bit) & 1)
    if spec.scale == 1 and spec.offset == 0:
        return raw
    scale, offset = spec.scale, spec.offset
    if spec.type in (DataType.F32, DataType.F64):
        return lambda words, at: raw(words, at) * scale + offset
    digits = max(decimals_of(scale), decimals_of(offset))
    return lambda words, at: round(raw(words, at) * scale + offset, digits)


_Number = Callable[[Sequence[int], int], int | float]


def _bool_at(words: Sequence[int], at: int) -> Value:
    return bool(words[at])


def _packer(spec: PointSpec) -> Callable[[Sequence[int], int], bytes]:
    """The point's bytes in the order ``_to_bytes`` gives them: each word high byte first
    (low byte first for byte order little), the words reversed for word order little."""
    count = spec.register_count
    pack = struct.Struct(("<" if spec.byte_order == "little" else ">") + f"{count}H").pack
    if spec.word_order == "little":
        return lambda words, at: pack(*reversed(words[at : at + count]))
    return lambda words, at: pack(*words[at : at + count])


def _raw_number(spec: PointSpec) -> _Number:
    """The unscaled number: an integer, or a float (an f32 in its shortest form)."""
    swap = spec.byte_order == "little"
    if spec.type is DataType.U16:
        return _u16_swapped if swap else operator.getitem
    if spec.type is DataType.I16:
        return _i16_swapped if swap else _i16
    packed = _packer(spec)
    unpack = struct.Struct(">" + _STRUCT[spec.type]).unpack
    if spec.type is DataType.F32:

        def f32(words: Sequence[int], at: int) -> float:
            raw = packed(words, at)
            value: float = unpack(raw)[0]
            return _shortest_f32(value, raw)

        return f32

    def number(words: Sequence[int], at: int) -> int | float:
        value: int | float = unpack(packed(words, at))[0]
        return value

    return number


def _u16_swapped(words: Sequence[int], at: int) -> int:
    word = words[at]
    return ((word & 0xFF) << 8) | (word >> 8)


def _i16(words: Sequence[int], at: int) -> int:
    word = words[at]
    return word - 0x10000 if word & 0x8000 else word


def _i16_swapped(words: Sequence[int], at: int) -> int:
    return _i16((_u16_swapped(words, at),), 0)


def _shortest_f32(value: float, packed: bytes) -> float:
    """The shortest decimal that is the same float32: 230.2, not 230.20001220703125."""
    if not math.isfinite(value):
        return value
    for digits in range(1, 10):
        candidate = float(f"{value:.{digits}g}")
        try:
            if struct.pack(">f", candidate) == packed:
                return candidate
        except OverflowError:
            continue  # rounding near the float32 maximum went past it
    return value


def encode(spec: PointSpec, value: Value) -> list[int]:
    """Encode an engineering value into the point's registers; CodecError if it cannot fit.

    Bit points share their register with others: encode them with :func:`encode_bit`.
    """
    if spec.type is DataType.BOOL:
        return [1 if _as_bool(spec, value) else 0]
    if spec.bit is not None:
        raise CodecError(
            "a bit point shares its register: use encode_bit(spec, current_words, value)"
        )
    if spec.type is DataType.STRING:
        return _encode_string(spec, value)
    if isinstance(value, str | bool):
        raise CodecError(f"{spec.type.value} needs a number, got {value!r}")
    raw_value = (float(value) - spec.offset) / spec.scale
    fmt = ">" + _STRUCT[spec.type]
    if spec.type in _INTEGER_RANGE:
        if not math.isfinite(raw_value):
            raise CodecError(f"{value!r} is not a finite number")
        raw_int = round(raw_value)
        low, high = _INTEGER_RANGE[spec.type]
        if not low <= raw_int <= high:
            raise CodecError(f"{value!r} does not fit {spec.type.value} with scale {spec.scale}")
        packed = struct.pack(fmt, raw_int)
    else:
        try:
            packed = struct.pack(fmt, raw_value)
        except OverflowError as exc:
            raise CodecError(f"{value!r} does not fit {spec.type.value}") from exc
    return _to_words(spec, packed)


def _encode_string(spec: PointSpec, value: Value) -> list[int]:
    if not isinstance(value, str):
        raise CodecError(f"a string point needs text, got {value!r}")
    raw = value.encode("utf-8")
    room = 2 * spec.register_count
    if len(raw) > room:
        raise CodecError(
            f"{value!r} is {len(raw)} bytes; {spec.register_count} registers hold {room}"
        )
    return _to_words(spec, raw.ljust(room, b"\x00"))


def _as_bool(spec: PointSpec, value: Value) -> bool:
    """True/False, also from 0/1 (JSON and YAML callers); anything else is refused."""
    if isinstance(value, bool):
        return value
    if not isinstance(value, str) and value in (0, 1):
        return bool(value)
    raise CodecError(f"a True/False point needs true/false or 0/1, got {value!r}")


def encode_bit(spec: PointSpec, current_words: Sequence[int], value: Value) -> list[int]:
    """The registers of a bit point with its bit set to ``value`` and every other bit kept.

    ``current_words`` are the point's registers as last read (read-modify-write).
    """
    if spec.bit is None:
        raise CodecError("encode_bit needs a bit point (a point with bit: N)")
    _check_words(spec, current_words)
    raw = _raw_integer(spec, current_words)
    on = _as_bool(spec, value)
    raw = raw | (1 << spec.bit) if on else raw & ~(1 << spec.bit)
    return _to_words(spec, struct.pack(">" + _STRUCT[spec.type], raw))


def encode_write(
    spec: PointSpec, value: Value, *, current: Sequence[int] | None = None
) -> WriteRequest:
    """What to send to set a point to ``value``: ``(kind, address, words)``.

    Refuses (CodecError) read-only points, values that are not finite or lie outside the
    point's ``write_min``..``write_max``, and values of the wrong sort. A point with a
    ``write:`` block is written where and how the block says; a bit point without one is a
    read-modify-write of its register and needs ``current``, the register as last read.
    """
    if spec.access != "rw":
        raise CodecError("the point is read-only (access r)")
    if spec.is_numeric:
        _check_write_limits(spec, value)
    block = spec.write
    if block is not None and block.encoding is WriteEncoding.CHANNEL_BYTE:
        if block.channel is None:  # the profile's validator requires it
            raise CodecError("a channel_byte write needs a channel")
        state = 1 if _as_bool(spec, value) else 0
        return WriteRequest(RegisterKind.HOLDING, block.address, [block.channel << 8 | state])
    address = spec.address if block is None else block.address
    if spec.bit is not None:
        if current is None:
            raise CodecError(
                "a bit point is written by read-modify-write: pass current=<its register>"
            )
        return WriteRequest(spec.kind, address, encode_bit(spec, current, value))
    return WriteRequest(spec.kind, address, encode(spec, value))


def _check_write_limits(spec: PointSpec, value: Value) -> None:
    if isinstance(value, bool | str):
        raise CodecError(f"{spec.type.value} needs a number, got {value!r}")
    if not math.isfinite(value):
        raise CodecError(f"{value!r} is not a finite number")
    low, high = spec.write_min, spec.write_max
    if low is None or high is None:  # the profile's validator requires both
        raise CodecError("the point has no write limits")
    if not low <= value <= high:
        raise CodecError(f"{value!r} is outside the write limits {low:g}..{high:g}")
