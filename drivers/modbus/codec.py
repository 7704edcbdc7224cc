"""Turn Modbus registers into engineering values and back, as a profile's point describes.

Pure functions, so hypothesis can check that encode and decode are inverse for every type,
order and scale; the simulators encode with the same code the agent decodes with, and the
profile's test vectors from the manuals keep both honest.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from decimal import Decimal

from smartpole.drivers.errors import CodecError
from smartpole.drivers.profile import DataType, PointSpec

Value = float | int | bool

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


def decimals_of(scale: float) -> int:
    """Decimal places a factor implies (0.1 -> 1).

    234 * 0.1 must read 23.4, not 23.400000000000002.
    """
    exponent = Decimal(repr(scale)).normalize().as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else 0


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


def decode(spec: PointSpec, words: Sequence[int]) -> Value:
    """Decode the ``spec.register_count`` registers (or one bit) of a point."""
    if len(words) != spec.register_count:
        raise CodecError(
            f"{spec.type.value} needs {spec.register_count} registers, got {len(words)}"
        )
    if spec.type is DataType.BOOL:
        return bool(words[0])
    if any(not 0 <= word <= 0xFFFF for word in words):
        raise CodecError(f"register values out of 16-bit range: {list(words)}")
    packed = _to_bytes(spec, words)
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
    """Encode an engineering value into the point's registers; CodecError if it cannot fit."""
    if spec.type is DataType.BOOL:
        return [1 if value else 0]
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
