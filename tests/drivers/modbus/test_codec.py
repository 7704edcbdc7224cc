"""The register codec: exact round trips for every type and order, and the manuals' vectors."""

from __future__ import annotations

import math
import struct
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st

from smartpole.drivers.errors import CodecError
from smartpole.drivers.modbus import codec
from smartpole.drivers.modbus.points import DataType, PointSpec, RegisterKind
from smartpole.drivers.schema import Value

INTEGER_RANGE = {
    DataType.U16: (0, 0xFFFF),
    DataType.I16: (-0x8000, 0x7FFF),
    DataType.U32: (0, 0xFFFF_FFFF),
    DataType.I32: (-0x8000_0000, 0x7FFF_FFFF),
}
STRUCT = {DataType.U16: "H", DataType.I16: "h", DataType.U32: "I", DataType.I32: "i"}
SCALES = [1, 0.1, 0.01, 10]
OFFSETS = [0, -40, 0.5]
orders = st.sampled_from(["big", "little"])
word = st.integers(0, 0xFFFF)


def spec(type_: DataType, **fields: Any) -> PointSpec:
    kind = RegisterKind.COIL if type_ is DataType.BOOL else RegisterKind.HOLDING
    return PointSpec(kind=kind, address=0, type=type_, **fields)


def wire_words(type_: DataType, raw: int) -> list[int]:
    """Registers of a raw integer in plain Modbus order (high word, high byte first)."""
    packed = struct.pack(">" + STRUCT[type_], raw)
    return [int.from_bytes(packed[i : i + 2], "big") for i in range(0, len(packed), 2)]


def reorder(words: list[int], word_order: str, byte_order: str) -> list[int]:
    """An independent model of the orders: swap bytes within words, reverse the words."""
    out = list(words)
    if byte_order == "little":
        out = [((w & 0xFF) << 8) | (w >> 8) for w in out]
    if word_order == "little":
        out.reverse()
    return out


@st.composite
def integer_cases(draw: st.DrawFn) -> tuple[PointSpec, int]:
    type_ = draw(st.sampled_from(list(INTEGER_RANGE)))
    low, high = INTEGER_RANGE[type_]
    point = spec(
        type_,
        word_order=draw(orders),
        byte_order=draw(orders),
        scale=draw(st.sampled_from(SCALES)),
        offset=draw(st.sampled_from(OFFSETS)),
    )
    return point, draw(st.integers(low, high))


def grid_value(point: PointSpec, raw: int) -> float:
    """raw * scale + offset computed exactly in decimal, then the nearest float."""
    return float(Decimal(raw) * Decimal(repr(point.scale)) + Decimal(repr(point.offset)))


@given(integer_cases())
@example((spec(DataType.I16, scale=0.1, offset=-40), -0x8000))
@example((spec(DataType.U32, scale=0.01, offset=0.5), 0xFFFF_FFFF))
@example((spec(DataType.I32, scale=10, offset=-40), -0x8000_0000))
def test_integer_round_trip_on_the_grid(case: tuple[PointSpec, int]) -> None:
    point, raw = case
    value = grid_value(point, raw)
    words = codec.encode(point, value)
    assert words == reorder(wire_words(point.type, raw), point.word_order, point.byte_order)
    decoded = codec.decode(point, words)
    assert decoded == value
    assert not isinstance(decoded, bool)


@given(integer_cases())
def test_integer_decode_then_encode_gives_the_same_registers(
    case: tuple[PointSpec, int],
) -> None:
    point, raw = case
    words = reorder(wire_words(point.type, raw), point.word_order, point.byte_order)
    assert codec.encode(point, codec.decode(point, words)) == words


@given(st.sampled_from(list(INTEGER_RANGE)), orders, orders, st.data())
def test_unscaled_integer_decodes_to_an_int(
    type_: DataType, word_order: str, byte_order: str, data: st.DataObject
) -> None:
    low, high = INTEGER_RANGE[type_]
    raw = data.draw(st.integers(low, high))
    point = spec(type_, word_order=word_order, byte_order=byte_order)
    decoded = codec.decode(point, reorder(wire_words(type_, raw), word_order, byte_order))
    assert type(decoded) is int
    assert decoded == raw


@given(
    st.sampled_from([DataType.F32, DataType.F64]),
    orders,
    orders,
    st.lists(word, min_size=4, max_size=4),
)
@example(DataType.F32, "big", "big", [0x8000, 0x0000, 0, 0])  # -0.0
@example(DataType.F32, "big", "big", [0x7F80, 0x0000, 0, 0])  # +inf
@example(DataType.F32, "big", "big", [0xFF80, 0x0000, 0, 0])  # -inf
@example(DataType.F32, "big", "big", [0x0000, 0x0001, 0, 0])  # smallest subnormal
@example(DataType.F32, "big", "big", [0x7F7F, 0xF000, 0, 0])  # large finite
@example(DataType.F64, "big", "big", [0x8000, 0x0000, 0x0000, 0x0000])  # -0.0
@example(DataType.F64, "little", "little", [0x0000, 0x0000, 0x0000, 0xF07F])  # +inf
def test_float_registers_round_trip_bit_exactly(
    type_: DataType, word_order: str, byte_order: str, words: list[int]
) -> None:
    point = spec(type_, word_order=word_order, byte_order=byte_order)
    words = words[: point.register_count]
    value = codec.decode(point, words)
    assert isinstance(value, float)
    assume(not math.isnan(value))
    assert codec.encode(point, value) == words


# Regression: rounding a float32 next to its largest finite value overshot FLT_MAX and
# struct.pack raised OverflowError out of decode().
@pytest.mark.parametrize("words", [[0x7F7F, 0xFFFF], [0xFF7F, 0xFFFF], [0x7F7F, 0xFFFE]])
def test_f32_next_to_the_largest_finite_value_decodes(words: list[int]) -> None:
    point = spec(DataType.F32)
    value = codec.decode(point, words)
    assert struct.pack(">f", value) == bytes.fromhex(f"{words[0]:04x}{words[1]:04x}")
    assert codec.encode(point, value) == words


@pytest.mark.parametrize("type_", [DataType.F32, DataType.F64])
@pytest.mark.parametrize("value", [0.0, -0.0, math.inf, -math.inf, 1.5, -2.25])
def test_float_special_values_encode_and_decode_exactly(type_: DataType, value: float) -> None:
    point = spec(type_)
    decoded = codec.decode(point, codec.encode(point, value))
    assert decoded == value
    assert math.copysign(1.0, decoded) == math.copysign(1.0, value)


@pytest.mark.parametrize("type_", [DataType.F32, DataType.F64])
def test_float_nan_survives_as_nan(type_: DataType) -> None:
    point = spec(type_)
    assert math.isnan(codec.decode(point, codec.encode(point, math.nan)))


# Bounded below FLT_MAX: the values next to it are the bug covered by the test above.
@given(st.floats(-(2.0**127), 2.0**127, width=32), orders, orders)
def test_f32_decodes_to_the_shortest_float_that_is_the_same_f32(
    value: float, word_order: str, byte_order: str
) -> None:
    point = spec(DataType.F32, word_order=word_order, byte_order=byte_order)
    decoded = codec.decode(point, codec.encode(point, value))
    assert struct.pack(">f", decoded) == struct.pack(">f", value)
    assert len(repr(decoded)) <= len(repr(value))


@given(
    st.sampled_from([DataType.F32, DataType.F64]),
    st.floats(-1e6, 1e6),
    st.sampled_from(SCALES),
    st.sampled_from(OFFSETS),
)
@example(DataType.F32, 6.103515625e-05, 0.1, -40)  # found by hypothesis: offset-bound precision
def test_scaled_floats_round_trip_closely(
    type_: DataType, value: float, scale: float, offset: float
) -> None:
    point = spec(type_, scale=scale, offset=offset)
    decoded = codec.decode(point, codec.encode(point, value))
    tolerance = 1e-6 if type_ is DataType.F32 else 1e-12
    # The float holds (value - offset) / scale, so near zero the offset sets the precision:
    # 6.1e-05 with offset -40 is stored as 400.0006 and comes back as 6.0e-05 in float32.
    slack = tolerance * (abs(offset) + abs(scale) * 10)
    assert math.isclose(decoded, value, rel_tol=tolerance, abs_tol=slack)


@given(st.booleans(), st.sampled_from([RegisterKind.COIL, RegisterKind.DISCRETE]))
def test_bool_round_trip(value: bool, kind: RegisterKind) -> None:
    point = PointSpec(kind=kind, address=0, type=DataType.BOOL)
    words = codec.encode(point, value)
    assert words == [int(value)]
    assert codec.decode(point, words) is value


# --- values that do not fit -------------------------------------------------------------


@given(integer_cases(), st.integers(1, 1000), st.booleans())
def test_integer_out_of_range_raises(case: tuple[PointSpec, int], beyond: int, above: bool) -> None:
    point, _ = case
    low, high = INTEGER_RANGE[point.type]
    raw = high + beyond if above else low - beyond
    with pytest.raises(CodecError):
        codec.encode(point, grid_value(point, raw))


@pytest.mark.parametrize("type_", list(INTEGER_RANGE))
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_integer_non_finite_raises(type_: DataType, value: float) -> None:
    with pytest.raises(CodecError):
        codec.encode(spec(type_), value)


@pytest.mark.parametrize("value", [3.5e38, -3.5e38, 1e300])
def test_f32_overflow_raises(value: float) -> None:
    with pytest.raises(CodecError):
        codec.encode(spec(DataType.F32), value)


@pytest.mark.parametrize(
    ("type_", "scale", "value"),
    [
        (DataType.U16, 1, -1),
        (DataType.U16, 1, 65536),
        (DataType.I16, 1, 32768),
        (DataType.I16, 0.1, 3276.8),
        (DataType.I16, 0.1, -3276.9),
        (DataType.U32, 1, 2**32),
        (DataType.I32, 10, 2**31 * 10),
    ],
)
def test_integer_edges_out_of_range_raise(type_: DataType, scale: float, value: float) -> None:
    with pytest.raises(CodecError):
        codec.encode(spec(type_, scale=scale), value)


NON_BOOL = [t for t in DataType if t is not DataType.BOOL]


@given(st.sampled_from(NON_BOOL), st.integers(0, 6))
def test_decode_with_the_wrong_register_count_raises(type_: DataType, count: int) -> None:
    point = spec(type_, length=3) if type_ is DataType.STRING else spec(type_)
    assume(count != point.register_count)
    with pytest.raises(CodecError):
        codec.decode(point, [0] * count)


@pytest.mark.parametrize("bad", [-1, 0x10000])
def test_decode_of_a_value_outside_16_bits_raises(bad: int) -> None:
    with pytest.raises(CodecError):
        codec.decode(spec(DataType.U32), [0, bad])


# --- known vectors ----------------------------------------------------------------------


def test_eastron_voltage_f32() -> None:
    # Eastron SDM meters: 230.2 V is sent as 43 66 33 34 (IEEE 754, high word first).
    value = codec.decode(spec(DataType.F32), [0x4366, 0x3334])
    assert abs(value - 230.2) < 1e-4
    assert codec.decode(spec(DataType.F32), [0x4366, 0x3333]) == 230.2  # shortest decimal


def test_i16_with_scale() -> None:
    assert codec.decode(spec(DataType.I16, scale=0.1), [0xFF9C]) == -10.0
    assert codec.encode(spec(DataType.I16, scale=0.1), -10.0) == [0xFF9C]


def test_u32_high_word_first() -> None:
    assert codec.decode(spec(DataType.U32), [0x0001, 0x86A0]) == 100000
    assert codec.encode(spec(DataType.U32), 100000) == [0x0001, 0x86A0]


def test_little_word_order_swaps_words() -> None:
    point = spec(DataType.U32, word_order="little")
    assert codec.decode(point, [0x86A0, 0x0001]) == 100000
    assert codec.encode(point, 100000) == [0x86A0, 0x0001]
    f32 = spec(DataType.F32, word_order="little")
    assert codec.decode(f32, [0x3333, 0x4366]) == 230.2


def test_little_byte_order_swaps_bytes() -> None:
    assert codec.decode(spec(DataType.U16, byte_order="little"), [0x3412]) == 0x1234
    assert codec.encode(spec(DataType.U16, byte_order="little"), 0x1234) == [0x3412]
    point = spec(DataType.U32, byte_order="little")
    assert codec.decode(point, [0x0100, 0xA086]) == 100000
    both = spec(DataType.U32, byte_order="little", word_order="little")
    assert codec.decode(both, [0xA086, 0x0100]) == 100000


def test_f64_known_vector() -> None:
    assert codec.decode(spec(DataType.F64), [0x3FF0, 0, 0, 0]) == 1.0
    assert codec.encode(spec(DataType.F64), -2.0) == [0xC000, 0, 0, 0]


def test_decoded_scaled_integers_carry_no_float_noise() -> None:
    # 234 * 0.1 is 23.400000000000002 in binary floating point.
    assert codec.decode(spec(DataType.U16, scale=0.1), [234]) == 23.4
    assert codec.decode(spec(DataType.U16, scale=0.01, offset=0.5), [7]) == 0.57


# --- decimals_of ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scale", "decimals"),
    [
        (1, 0),
        (1.0, 0),
        (10, 0),
        (100.0, 0),
        (0.1, 1),
        (0.5, 1),
        (0.01, 2),
        (0.25, 2),
        (0.001, 3),
        (1e-05, 5),
        (-0.1, 1),
        (-40, 0),
        (0, 0),
        (2.5, 1),
    ],
)
def test_decimals_of(scale: float, decimals: int) -> None:
    assert codec.decimals_of(scale) == decimals


@given(st.integers(0, 12), st.integers(1, 9))
def test_decimals_of_powers_of_ten(places: int, digit: int) -> None:
    scale = float(Decimal(digit).scaleb(-places))
    assert codec.decimals_of(scale) == places


# --- strings ----------------------------------------------------------------------------

# Text a device can hold: no NUL (the padding) and no trailing space (stripped on decode).
device_text = st.text(st.characters(min_codepoint=1, exclude_categories=("Cs",)), max_size=20)


def text_words(raw: bytes, length: int, byte_order: str) -> list[int]:
    """An independent model: bytes padded with NULs, two per register, high byte first."""
    padded = raw.ljust(2 * length, b"\0")
    words = [int.from_bytes(padded[i : i + 2], "big") for i in range(0, len(padded), 2)]
    return reorder(words, "big", byte_order)


@given(device_text, st.integers(1, 12), orders)
def test_string_round_trip(text: str, length: int, byte_order: str) -> None:
    raw = text.encode("utf-8")
    assume(len(raw) <= 2 * length)
    point = spec(DataType.STRING, length=length, byte_order=byte_order)
    words = codec.encode(point, text)
    assert words == text_words(raw, length, byte_order)
    assert codec.decode(point, words) == text.rstrip(" ")


@given(st.lists(word, min_size=1, max_size=8), orders)
def test_string_decode_never_raises_and_strips_padding(words: list[int], byte_order: str) -> None:
    point = spec(DataType.STRING, length=len(words), byte_order=byte_order)
    decoded = codec.decode(point, words)
    assert isinstance(decoded, str)
    assert not decoded.endswith(("\0", " "))


def test_string_known_vectors() -> None:
    mode3 = spec(DataType.STRING, length=5)
    assert codec.decode(mode3, [0x4332, 0, 0, 0, 0]) == "C2"
    assert codec.decode(mode3, [0x4120, 0x2020, 0x2000, 0, 0]) == "A"
    assert codec.encode(mode3, "B1") == [0x4231, 0, 0, 0, 0]
    swapped = spec(DataType.STRING, length=2, byte_order="little")
    assert codec.decode(swapped, [0x3243, 0x0000]) == "C2"


@pytest.mark.parametrize("value", ["ABCDE", 12, True])
def test_string_that_does_not_fit_raises(value: object) -> None:
    with pytest.raises(CodecError):
        codec.encode(spec(DataType.STRING, length=2), value)  # type: ignore[arg-type]


def test_numbers_refuse_text_and_bools() -> None:
    with pytest.raises(CodecError):
        codec.encode(spec(DataType.U16), "12")
    with pytest.raises(CodecError):
        codec.encode(spec(DataType.F32), True)


# --- bit points -------------------------------------------------------------------------


@st.composite
def bit_cases(draw: st.DrawFn) -> tuple[PointSpec, list[int]]:
    type_ = draw(st.sampled_from([DataType.U16, DataType.U32]))
    width = 16 * type_.register_count
    point = spec(
        type_,
        bit=draw(st.integers(0, width - 1)),
        word_order=draw(orders),
        byte_order=draw(orders),
    )
    return point, draw(st.lists(word, min_size=type_.register_count, max_size=type_.register_count))


def whole(point: PointSpec) -> PointSpec:
    """The same register read as one integer."""
    return spec(point.type, word_order=point.word_order, byte_order=point.byte_order)


@given(bit_cases())
def test_bit_decodes_the_bit_of_the_integer(case: tuple[PointSpec, list[int]]) -> None:
    point, words = case
    raw = codec.decode(whole(point), words)
    assert isinstance(raw, int)
    assert point.bit is not None
    assert codec.decode(point, words) is bool((raw >> point.bit) & 1)


@given(bit_cases(), st.booleans())
def test_encode_bit_sets_its_bit_and_leaves_the_others(
    case: tuple[PointSpec, list[int]], value: bool
) -> None:
    point, current = case
    assert point.bit is not None
    updated = codec.encode_bit(point, current, value)
    assert codec.decode(point, updated) is value
    before = codec.decode(whole(point), current)
    after = codec.decode(whole(point), updated)
    assert isinstance(before, int)
    assert isinstance(after, int)
    assert (before ^ after) & ~(1 << point.bit) == 0, "another bit changed"
    assert codec.encode_bit(point, updated, value) == updated  # idempotent


@given(bit_cases(), st.data())
def test_bit_points_of_one_register_do_not_disturb_each_other(
    case: tuple[PointSpec, list[int]], data: st.DataObject
) -> None:
    first, current = case
    width = 16 * first.type.register_count
    other = first.model_copy(update={"bit": data.draw(st.integers(0, width - 1))})
    assume(other.bit != first.bit)
    kept = codec.decode(other, current)
    words = codec.encode_bit(first, current, data.draw(st.booleans()))
    assert codec.decode(other, words) is kept


def test_bit_known_vector() -> None:
    relay3 = spec(DataType.U16, bit=2)
    assert codec.decode(relay3, [0x00A5]) is True
    assert codec.decode(spec(DataType.U16, bit=1), [0x00A5]) is False
    assert codec.encode_bit(relay3, [0x00A5], False) == [0x00A1]
    high = spec(DataType.U32, bit=31)
    assert codec.decode(high, [0x8000, 0x0000]) is True
    assert codec.encode_bit(high, [0, 0], True) == [0x8000, 0x0000]


def test_encode_of_a_bit_point_says_to_use_encode_bit() -> None:
    with pytest.raises(CodecError, match="encode_bit"):
        codec.encode(spec(DataType.U16, bit=0), True)


@pytest.mark.parametrize("value", [2, 0.5, "on"])
def test_bit_values_other_than_true_false_or_0_1_raise(value: object) -> None:
    with pytest.raises(CodecError):
        codec.encode_bit(spec(DataType.U16, bit=0), [0], value)  # type: ignore[arg-type]


def test_encode_bit_needs_a_bit_point_and_its_registers() -> None:
    with pytest.raises(CodecError):
        codec.encode_bit(spec(DataType.U16), [0], True)
    with pytest.raises(CodecError):
        codec.encode_bit(spec(DataType.U32, bit=0), [0], True)


# --- physical values --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "physical"),
    [
        (math.nan, False),
        (math.inf, False),
        (-math.inf, False),
        (0.0, True),
        (-0.0, True),
        (3.4e38, True),
        (12, True),
        (False, True),
        ("C2", True),
    ],
)
def test_is_physical(value: Value, physical: bool) -> None:
    assert codec.is_physical(value) is physical


@pytest.mark.parametrize(
    "words", [[0x7FC0, 0x0000], [0x7F80, 0x0000], [0xFF80, 0x0000], [0xFFFF, 0xFFFF]]
)
def test_non_finite_f32_decodes_but_is_not_physical(words: list[int]) -> None:
    value = codec.decode(spec(DataType.F32), words)
    assert isinstance(value, float)
    assert not math.isfinite(value)
    assert not codec.is_physical(value)


# --- writes -----------------------------------------------------------------------------


@st.composite
def writable_numbers(draw: st.DrawFn) -> tuple[PointSpec, float]:
    type_ = draw(st.sampled_from([DataType.U16, DataType.I16, DataType.U32, DataType.F32]))
    scale = draw(st.sampled_from([1, 0.1, 0.01]))
    low, high = (0, 100) if type_ is not DataType.I16 else (-100, 100)
    point = spec(
        type_,
        scale=scale,
        word_order=draw(orders),
        access="rw",
        write_min=low,
        write_max=high,
    )
    raw = draw(st.integers(round(low / scale), round(high / scale)))
    return point, float(Decimal(raw) * Decimal(repr(scale)))


@given(writable_numbers())
def test_encode_write_of_a_number_writes_its_own_registers(case: tuple[PointSpec, float]) -> None:
    point, value = case
    request = codec.encode_write(point, value)
    assert request == (RegisterKind.HOLDING, point.address, codec.encode(point, value))
    assert request.function == (6 if point.register_count == 1 else 16)
    assert math.isclose(float(codec.decode(point, request.words)), value, rel_tol=1e-6)


@given(writable_numbers(), st.floats(0.001, 1e6), st.booleans())
def test_encode_write_outside_the_write_limits_raises(
    case: tuple[PointSpec, float], beyond: float, above: bool
) -> None:
    point, _ = case
    assert point.write_min is not None
    assert point.write_max is not None
    value = point.write_max + beyond if above else point.write_min - beyond
    with pytest.raises(CodecError, match="write limits"):
        codec.encode_write(point, value)


@pytest.mark.parametrize("value", [math.nan, math.inf, True, "50"])
def test_encode_write_refuses_values_that_are_not_numbers(value: object) -> None:
    point = spec(DataType.U16, access="rw", write_min=0, write_max=100)
    with pytest.raises(CodecError):
        codec.encode_write(point, value)  # type: ignore[arg-type]


def test_encode_write_refuses_read_only_points() -> None:
    with pytest.raises(CodecError, match="read-only"):
        codec.encode_write(spec(DataType.U16), 1)


@given(st.integers(1, 255), st.booleans(), st.integers(0, 0xFFFF))
def test_encode_write_channel_byte(channel: int, on: bool, target: int) -> None:
    relay = PointSpec(
        address=0x009D,
        bit=(channel - 1) % 16,
        access="rw",
        write={"address": target, "encoding": "channel_byte", "channel": channel},
    )
    request = codec.encode_write(relay, on)
    assert request == (RegisterKind.HOLDING, target, [channel << 8 | int(on)])
    assert request.function == 6
    assert request.words[0] >> 8 == channel
    assert request.words[0] & 0xFF == int(on)


@given(st.floats(0, 32, width=32), st.integers(0, 0xFFF0))
def test_encode_write_value_elsewhere(value: float, target: int) -> None:
    setpoint = spec(DataType.F32, access="rw", write_min=0, write_max=32, write={"address": target})
    request = codec.encode_write(setpoint, value)
    assert request == (RegisterKind.HOLDING, target, codec.encode(setpoint, value))
    assert codec.decode(setpoint, request.words) == codec.decode(
        setpoint, codec.encode(setpoint, value)
    )


@given(bit_cases(), st.booleans())
def test_encode_write_of_a_bit_point_is_a_read_modify_write(
    case: tuple[PointSpec, list[int]], value: bool
) -> None:
    point, current = case
    writable = point.model_copy(update={"access": "rw"})
    request = codec.encode_write(writable, value, current=current)
    assert request == (RegisterKind.HOLDING, point.address, codec.encode_bit(point, current, value))
    with pytest.raises(CodecError, match="current"):
        codec.encode_write(writable, value)


@given(st.booleans())
def test_encode_write_of_a_coil(on: bool) -> None:
    coil = PointSpec(kind=RegisterKind.COIL, address=7, type=DataType.BOOL, access="rw")
    request = codec.encode_write(coil, on)
    assert request == (RegisterKind.COIL, 7, [int(on)])
    assert request.function == 5
    assert codec.encode_write(coil, int(on)) == request


def test_encode_write_of_a_string() -> None:
    name = spec(DataType.STRING, length=2, access="rw")
    assert codec.encode_write(name, "ab") == (RegisterKind.HOLDING, 0, [0x6162, 0x0000])
