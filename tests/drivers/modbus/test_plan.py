"""Read planning: every point read exactly once, within the device's limits, deterministically."""

from __future__ import annotations

import random
from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st

from helpers.paths import PROFILES
from smartpole.agent.buses.registry import load_profile
from smartpole.drivers.modbus.plan import ReadBlock, plan_reads
from smartpole.drivers.modbus.points import DataType, PointSpec, RegisterKind
from smartpole.drivers.modbus.profile import ModbusLimits

NUMERIC = [t for t in DataType if t not in (DataType.BOOL, DataType.STRING)]


@st.composite
def point_sets(draw: st.DrawFn) -> dict[str, PointSpec]:
    """Non-overlapping points per kind, laid out with random gaps from a random start."""
    points: dict[str, PointSpec] = {}
    for kind in draw(st.lists(st.sampled_from(list(RegisterKind)), unique=True, min_size=1)):
        address = draw(st.sampled_from([0, 1, 100, 0xFFF0]))
        for _ in range(draw(st.integers(1, 12))):
            address += draw(st.integers(0, 6) | st.integers(0, 200))
            type_ = DataType.BOOL if kind.is_bit else draw(st.sampled_from(NUMERIC))
            if address + type_.register_count > 0x10000:
                break
            name = f"{kind.value}_{address}"
            points[name] = PointSpec(kind=kind, address=address, type=type_)
            address += type_.register_count
    names = list(points)
    draw(st.randoms()).shuffle(names)  # the plan must not depend on the mapping's order
    return {name: points[name] for name in names}


limits_st = st.builds(
    ModbusLimits,
    max_registers_per_read=st.integers(1, 125) | st.sampled_from([1, 2, 3, 4]),
    max_bits_per_read=st.integers(1, 2000) | st.sampled_from([1, 2, 3]),
    max_gap=st.integers(0, 124) | st.sampled_from([0, 1, 2]),
)


def _limit(kind: RegisterKind, limits: ModbusLimits) -> int:
    return limits.max_bits_per_read if kind.is_bit else limits.max_registers_per_read


@settings(max_examples=200)
@given(point_sets(), limits_st)
def test_plan_properties(points: dict[str, PointSpec], limits: ModbusLimits) -> None:
    blocks = plan_reads(points, limits)

    placed = [name for block in blocks for name in block.points]
    assert sorted(placed) == sorted(points), "every point in exactly one block"

    for block in blocks:
        specs = sorted((points[name] for name in block.points), key=lambda s: s.address)
        assert specs, "no empty blocks"
        assert all(s.kind is block.kind for s in specs), "blocks never mix kinds"
        for spec in specs:
            assert block.address <= spec.address
            assert spec.end <= block.end
        assert block.address == specs[0].address, "a block starts at its first point"
        assert block.end == max(s.end for s in specs), "a block ends at its last point"
        if block.count > _limit(block.kind, limits):
            assert len(specs) == 1, f"{block} exceeds the limit with several points"
        for before, after in pairwise(specs):
            assert after.address - before.end <= limits.max_gap, f"{block} crosses a wide gap"


@given(point_sets(), limits_st)
def test_plan_is_deterministic_and_order_independent(
    points: dict[str, PointSpec], limits: ModbusLimits
) -> None:
    first = plan_reads(points, limits)
    assert plan_reads(points, limits) == first
    reordered = list(points.items())
    random.Random(0).shuffle(reordered)
    assert plan_reads(dict(reordered), limits) == first
    assert plan_reads(dict(reversed(reordered)), limits) == first


@given(point_sets())
def test_adjacent_points_merge_with_generous_limits(points: dict[str, PointSpec]) -> None:
    """With the spec's limits and no gaps allowed, blocks split only at a gap or a kind change."""
    blocks = plan_reads(points, ModbusLimits(max_gap=0))
    for before, after in pairwise(blocks):
        if before.kind is after.kind:
            first = points[after.points[0]]
            merged = max(first.end, before.end) - before.address
            assert after.address > before.end or merged > _limit(before.kind, ModbusLimits())


def test_single_point_larger_than_the_limit_gets_its_own_block() -> None:
    points = {
        "big": PointSpec(address=10, type=DataType.F64),
        "next": PointSpec(address=14, type=DataType.U16),
    }
    blocks = plan_reads(points, ModbusLimits(max_registers_per_read=2))
    assert blocks == [
        ReadBlock(RegisterKind.HOLDING, 10, 4, ("big",)),
        ReadBlock(RegisterKind.HOLDING, 14, 1, ("next",)),
    ]


def test_gap_within_max_gap_is_read_across() -> None:
    points = {
        "a": PointSpec(address=0, type=DataType.U16),
        "b": PointSpec(address=3, type=DataType.U16),
    }
    assert plan_reads(points, ModbusLimits(max_gap=2)) == [
        ReadBlock(RegisterKind.HOLDING, 0, 4, ("a", "b"))
    ]
    assert len(plan_reads(points, ModbusLimits(max_gap=1))) == 2


def test_same_address_in_different_kinds_is_not_merged() -> None:
    points = {
        "h": PointSpec(kind=RegisterKind.HOLDING, address=5),
        "i": PointSpec(kind=RegisterKind.INPUT, address=5),
        "c": PointSpec(kind=RegisterKind.COIL, address=5, type=DataType.BOOL),
    }
    blocks = plan_reads(points, ModbusLimits(max_gap=10))
    assert sorted((b.kind.value, b.points) for b in blocks) == [
        ("coil", ("c",)),
        ("holding", ("h",)),
        ("input", ("i",)),
    ]


def test_cwt_uwd_is_one_read_of_14_holding_registers() -> None:
    profile = load_profile(PROFILES / "cwt-uwd.yaml")
    blocks = plan_reads(profile.points, profile.limits)
    assert len(blocks) == 1
    (block,) = blocks
    assert (block.kind, block.address, block.count) == (RegisterKind.HOLDING, 0x01F4, 14)
    assert set(block.points) == set(profile.points)
    assert block.points == tuple(sorted(profile.points, key=lambda n: profile.points[n].address))
