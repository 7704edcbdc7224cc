"""The poll path's precompiled decoders against the reference ``codec.decode``, and the
point table's block update against ``update`` value by value."""

from __future__ import annotations

import struct
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from smartpole.agent.core.points import PointTable, Quality
from smartpole.drivers.modbus import codec
from smartpole.drivers.modbus.points import DataType, PointSpec, RegisterKind
from smartpole.drivers.schema import Value

NUMERIC = [DataType.U16, DataType.I16, DataType.U32, DataType.I32, DataType.F32, DataType.F64]
# Factors and offsets as profiles write them, and a few that stress the rounding.
SCALES = [1, 1.0, 0.1, 0.01, 0.001, 10, 2.5, -0.1, 1e-7, 1e300]
OFFSETS = [0, -40, 0.5, 273.15, -0.001]
orders = st.sampled_from(["big", "little"])
word = st.integers(0, 0xFFFF)


def same(a: Value, b: Value) -> bool:
    """Equal value and type; NaNs equal by bits, so -0.0 and NaN payloads count too."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float) and isinstance(b, float):
        return struct.pack(">d", a) == struct.pack(">d", b)
    return a == b


@st.composite
def specs(draw: st.DrawFn) -> PointSpec:
    """Any point the profile model accepts: every type, order, scale, bit and string."""
    shape = draw(st.sampled_from(["bool", "number", "bit", "string"]))
    fields: dict[str, Any] = {"address": 0}
    if shape == "bool":
        fields |= {"kind": draw(st.sampled_from([RegisterKind.COIL, RegisterKind.DISCRETE]))}
        fields["type"] = DataType.BOOL
    elif shape == "string":
        fields |= {"type": DataType.STRING, "length": draw(st.integers(1, 8))}
        fields["byte_order"] = draw(orders)
    else:
        fields["kind"] = draw(st.sampled_from([RegisterKind.HOLDING, RegisterKind.INPUT]))
        fields["word_order"] = draw(orders)
        fields["byte_order"] = draw(orders)
        if shape == "bit":
            fields["type"] = draw(st.sampled_from([DataType.U16, DataType.U32]))
            fields["bit"] = draw(st.integers(0, 15 if fields["type"] is DataType.U16 else 31))
        else:
            fields["type"] = draw(st.sampled_from(NUMERIC))
            fields["scale"] = draw(st.sampled_from(SCALES))
            fields["offset"] = draw(st.sampled_from(OFFSETS))
    return PointSpec(**fields)


def registers_for(spec: PointSpec) -> st.SearchStrategy[list[int]]:
    n = spec.register_count
    if spec.type is DataType.BOOL:
        return st.lists(st.integers(0, 1), min_size=n, max_size=n)
    if spec.type is DataType.STRING:
        # A fixed alphabet (ASCII, 2- and 3-byte UTF-8): st.text() over all of Unicode
        # builds Hypothesis's character map on first use, over a second on a fresh clone.
        text = st.text(alphabet="aZ0 _-.éü€中", max_size=2 * n).map(
            lambda t: t.encode("utf-8")[: 2 * n]
        )
        padded = text.map(lambda b: b.ljust(2 * n, b"\0"))
        as_words = padded.map(
            lambda b: [int.from_bytes(b[i : i + 2], "big") for i in range(0, len(b), 2)]
        )
        return as_words | st.lists(word, min_size=n, max_size=n)
    return st.lists(word, min_size=n, max_size=n)


@given(specs(), st.data(), st.integers(0, 5))
def test_compiled_decoder_equals_decode(spec: PointSpec, data: st.DataObject, lead: int) -> None:
    words = data.draw(registers_for(spec))
    # The point sits ``lead`` registers into a block, between other registers.
    block = [0xA5A5] * lead + words + [0x5A5A] * 3
    expected = codec.decode(spec, words)
    got = codec.compile_decoder(spec)(block, lead)
    assert same(got, expected), (spec, words, got, expected)


@given(
    st.sampled_from([DataType.F32, DataType.F64]),
    orders,
    orders,
    st.sampled_from(SCALES),
    st.sampled_from(OFFSETS),
    st.sampled_from(
        [
            [0x7FC0, 0, 0, 0],  # NaN
            [0x7F80, 0, 0, 0],  # +inf
            [0xFF80, 0, 0, 0],  # -inf
            [0x8000, 0, 0, 0],  # -0.0
            [0, 1, 0, 0],  # smallest subnormal
            [0x7F7F, 0xFFFF, 0, 0],  # largest f32
        ]
    ),
)
def test_special_floats_decode_alike(
    type_: DataType, word_order: str, byte_order: str, scale: float, offset: float, raw: list[int]
) -> None:
    spec = PointSpec(
        address=0,
        type=type_,
        word_order=word_order,
        byte_order=byte_order,
        scale=scale,
        offset=offset,
    )
    words = raw[: spec.register_count]
    got = codec.compile_decoder(spec)(words, 0)
    expected = codec.decode(spec, words)
    assert same(got, expected)


@given(st.lists(specs(), min_size=1, max_size=12), st.data())
def test_a_block_of_points_decodes_like_point_by_point(
    points: list[PointSpec], data: st.DataObject
) -> None:
    block: list[int] = []
    offsets = []
    for spec in points:
        offsets.append(len(block))
        block += data.draw(registers_for(spec))
    for spec, at in zip(points, offsets, strict=True):
        expected = codec.decode(spec, block[at : at + spec.register_count])
        assert same(codec.compile_decoder(spec)(block, at), expected)


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["a", "b", "c", "d"]),
            st.integers(-5, 5) | st.floats(allow_nan=False) | st.booleans(),
            st.sampled_from(list(Quality)),
        ),
        max_size=8,
    )
)
def test_update_many_tells_listeners_what_update_would(
    readings: list[tuple[str, Value, Quality]],
) -> None:
    clock = iter(range(1000))

    def tables() -> tuple[PointTable, list[tuple[object, ...]]]:
        table = PointTable(monotonic=lambda: 5.0, wall=lambda: float(next(clock)))
        for point in "abcd":
            table.register("dev", point, "V", 10.0)
        heard: list[tuple[object, ...]] = []
        table.listen(lambda *args: heard.append(("first", *args)))
        table.listen(lambda *args: heard.append(("second", *args)))
        return table, heard

    one_by_one, heard_one = tables()
    for point, value, quality in readings:
        one_by_one.update("dev", point, value, quality)
    batched, heard_batch = tables()
    batched.update_many("dev", readings)

    # Same calls in the same order; only the timestamps differ: one per block.
    assert [h[:5] for h in heard_batch] == [h[:5] for h in heard_one]
    assert len({h[5] for h in heard_batch}) <= 1
    snapshot = [(s.point, s.value, s.quality) for s in batched.snapshot()]
    assert snapshot == [(s.point, s.value, s.quality) for s in one_by_one.snapshot()]
    if readings:
        stamps = {s.point: s.timestamp for s in batched.snapshot() if s.timestamp is not None}
        assert set(stamps.values()) == {heard_batch[0][5]}
