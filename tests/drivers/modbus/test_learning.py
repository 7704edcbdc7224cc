"""Learning what a device refuses (issue 15, point 2): exception 3 caps the reads of a
register kind, exception 2 splits at holes, and the plan converges for any device limit
in a bounded number of refusals, every point still covered."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from smartpole.drivers.modbus.learning import Learnt, Lesson
from smartpole.drivers.modbus.pdu import ExceptionCode
from smartpole.drivers.modbus.plan import ReadBlock
from smartpole.drivers.modbus.points import DataType, PointSpec, RegisterKind
from smartpole.drivers.modbus.profile import ModbusLimits

ADDRESS = ExceptionCode.ILLEGAL_DATA_ADDRESS
VALUE = ExceptionCode.ILLEGAL_DATA_VALUE


NUMERIC = [t for t in DataType if t not in (DataType.BOOL, DataType.STRING)]


@st.composite
def point_sets(draw: st.DrawFn) -> dict[str, PointSpec]:
    """Non-overlapping points per kind, dense or sparse (like ``test_plan.py``'s, denser)."""
    points: dict[str, PointSpec] = {}
    for kind in draw(st.lists(st.sampled_from(list(RegisterKind)), unique=True, min_size=1)):
        address = draw(st.sampled_from([0, 1, 100, 0xFFF0]))
        spread = draw(st.sampled_from([0, 1, 3, 200]))  # dense runs make long reads
        for _ in range(draw(st.integers(1, 60))):
            address += draw(st.integers(0, spread))
            type_ = DataType.BOOL if kind.is_bit else draw(st.sampled_from(NUMERIC))
            if address + type_.register_count > 0x10000:
                break
            points[f"{kind.value}_{address}"] = PointSpec(kind=kind, address=address, type=type_)
            address += type_.register_count
    return points


class Device:
    """A device with its own read limit per kind, refusing unmapped addresses; ``length_first``:
    which check it makes first (libmodbus checks the count first, others the addresses)."""

    def __init__(
        self, points: dict[str, PointSpec], limit: dict[RegisterKind, int], length_first: bool
    ) -> None:
        self.mapped = {(s.kind, a) for s in points.values() for a in range(s.address, s.end)}
        self.limit = limit
        self.length_first = length_first

    def answer(self, block: ReadBlock) -> int | None:
        too_long = block.count > self.limit[block.kind]
        hole = any((block.kind, a) not in self.mapped for a in range(block.address, block.end))
        checks = [(too_long, VALUE), (hole, ADDRESS)]
        for refused, code in checks if self.length_first else reversed(checks):
            if refused:
                return code
        return None


def _converge(
    points: dict[str, PointSpec],
    limits: ModbusLimits,
    device: Device,
    learnt: Learnt,
    refused_blocks: list[ReadBlock] | None = None,
) -> tuple[list[ReadBlock], list[tuple[RegisterKind, Lesson]]]:
    """Poll until a whole cycle passes without a refusal; every refusal's lesson (and,
    into ``refused_blocks``, every refused read)."""
    lessons: list[tuple[RegisterKind, Lesson]] = []
    for _ in range(10_000):
        plan = learnt.plan(points, limits)
        # One cycle as the bus task runs it: a refusal does not stop it; it goes on by
        # the new plan with the points not asked for yet.
        pending, asked, refused = list(plan), set[str](), False
        while pending:
            block = pending.pop(0)
            asked.update(block.points)
            code = device.answer(block)
            if code is None:
                learnt.answered(block)
                continue
            lesson, _ = learnt.refused(block, code, points)
            lessons.append((block.kind, lesson))
            if refused_blocks is not None:
                refused_blocks.append(block)
            refused = True
            pending = [b for b in learnt.plan(points, limits) if asked.isdisjoint(b.points)]
        if not refused:
            return plan, lessons
    raise AssertionError("the plan never settled")


device_limits = st.fixed_dictionaries(
    {
        kind: st.integers(1, 2000 if kind.is_bit else 125) | st.integers(1, 8)
        for kind in RegisterKind
    }
)
generous = st.builds(
    ModbusLimits,
    max_registers_per_read=st.integers(1, 125) | st.just(125),
    max_bits_per_read=st.integers(1, 2000) | st.just(2000),
    max_gap=st.integers(0, 124) | st.sampled_from([0, 2, 124]),
)


@settings(max_examples=300, deadline=None)
@given(point_sets(), generous, device_limits, st.booleans())
def test_the_plan_converges_to_reads_the_device_accepts(
    points: dict[str, PointSpec],
    limits: ModbusLimits,
    limit: dict[RegisterKind, int],
    length_first: bool,
) -> None:
    device = Device(points, limit, length_first)
    learnt = Learnt()
    plan, lessons = _converge(points, limits, device, learnt)

    # Every read of the settled plan is accepted and within the device's limit.
    assert all(device.answer(block) is None for block in plan)
    assert all(block.count <= limit[block.kind] for block in plan)
    # Every point is read exactly once, unless it alone is longer than the device reads.
    placed = sorted(name for block in plan for name in block.points)
    readable = sorted(n for n, s in points.items() if s.register_count <= limit[s.kind])
    assert placed == readable
    assert learnt.unsupported == set(points) - set(readable)
    # Bounded: each cap at most halves towards an accepted count (never below the widest
    # point), each barrier and each refused point is learnt once.
    for kind in RegisterKind:
        caps = sum(1 for k, lesson in lessons if k == kind and lesson is Lesson.CAP)
        ceiling = 2000 if kind.is_bit else 125
        assert caps <= math.ceil(math.log2(ceiling)) + 1, (kind, lessons)
    others = [lesson for _, lesson in lessons if lesson is not Lesson.CAP]
    assert len(others) <= 2 * len(points), lessons
    # What was learnt stays learnt: after a restart the same device refuses no read of the
    # points it served. Unsupported points are not saved on purpose (a device still booting
    # may refuse what it serves later), so they are asked again, and a read that merges one
    # with its neighbours may meet a hole next to it: only such reads may be refused.
    again = Learnt(caps=dict(learnt.caps), barriers=set(learnt.barriers))
    refused_again: list[ReadBlock] = []
    _converge(points, limits, device, again, refused_again)
    unsupported = learnt.unsupported
    assert all(unsupported.intersection(block.points) for block in refused_again), refused_again


def _meter() -> dict[str, PointSpec]:
    """38 float32 input registers in a row (76 registers), and one point further away."""
    points = {
        f"v{n:02d}": PointSpec(kind=RegisterKind.INPUT, address=2 * n, type=DataType.F32)
        for n in range(38)
    }
    points["far"] = PointSpec(kind=RegisterKind.INPUT, address=200, type=DataType.U16)
    return points


def test_a_76_register_read_refused_with_exception_3_is_capped_at_half() -> None:
    points = _meter()
    limits = ModbusLimits(max_registers_per_read=125, max_gap=4)
    learnt = Learnt()
    (long, far) = learnt.plan(points, limits)
    assert (long.address, long.count, far.points) == (0, 76, ("far",))
    assert learnt.refused(long, VALUE, points) == (Lesson.CAP, 38)
    assert [(b.address, b.count) for b in learnt.plan(points, limits)] == [
        (0, 38),
        (38, 38),
        (200, 1),
    ]


def test_a_cap_never_falls_below_a_count_the_device_accepted() -> None:
    points = _meter()
    limits = ModbusLimits(max_registers_per_read=125, max_gap=4)
    learnt = Learnt()
    learnt.answered(ReadBlock(RegisterKind.INPUT, 0, 40, ("v00",)))
    long = learnt.plan(points, limits)[0]
    assert learnt.refused(long, VALUE, points) == (Lesson.CAP, 40)


def test_exception_3_on_a_single_point_drops_the_point() -> None:
    points = {"wide": PointSpec(kind=RegisterKind.HOLDING, address=10, type=DataType.F64)}
    learnt = Learnt()
    (block,) = learnt.plan(points, ModbusLimits())
    assert learnt.refused(block, VALUE, points) == (Lesson.UNSUPPORTED, "wide")
    assert learnt.plan(points, ModbusLimits()) == []
