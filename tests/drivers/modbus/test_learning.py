"""Learning what a device refuses (issue 15, point 2): exception 3 caps the reads of a
register kind, exception 2 splits at holes, and the plan converges for any device limit
in a bounded number of refusals, every point still covered."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from smartpole.drivers.modbus.learning import CapReason, Learnt, Lesson
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


# ----- silence: a device that never answers a read longer than its buffer -----


class SilentDevice:
    """Answers every read of at most ``limit`` of its kind and, longer, nothing at all; from
    its ``dies_after``-th request on it answers nothing whatever (dead, unplugged)."""

    def __init__(self, limit: dict[RegisterKind, int], dies_after: int | None = None) -> None:
        self.limit = limit
        self.dies_after = dies_after
        self.requests: list[ReadBlock] = []

    def answers(self, block: ReadBlock) -> bool:
        self.requests.append(block)
        dead = self.dies_after is not None and len(self.requests) > self.dies_after
        return not dead and block.count <= self.limit[block.kind]


def _probe(plan: list[ReadBlock], points: dict[str, PointSpec]) -> list[ReadBlock]:
    """The bus task's probe: the plan's first point alone."""
    if not plan:
        return []
    spec = points[plan[0].points[0]]
    return [ReadBlock(plan[0].kind, spec.address, spec.register_count, plan[0].points[:1])]


def _silent_poll(
    points: dict[str, PointSpec],
    limits: ModbusLimits,
    device: SilentDevice,
    learnt: Learnt,
    probe: bool,
) -> tuple[bool, int, int]:
    """One poll as the bus task makes it (``ModbusBusTask._poll_device``): whether it
    succeeded, how many reads went unanswered, and how many caps that taught."""
    learnt.poll_started()
    plan = learnt.plan(points, limits)
    probing = probe
    pending = _probe(plan, points) if probe else list(plan)
    asked: set[str] = set()
    silent, failed, taught = 0, False, 0
    while pending:
        block = pending.pop(0)
        asked.update(block.points)
        cap = None
        if device.answers(block):
            learnt.answered(block)
        else:
            silent += 1
            if not learnt.alive:
                return False, silent, taught
            cap = learnt.silent(block, points)
            taught += cap is not None
            if silent > 1:
                return False, silent, taught
            failed = failed or cap is None
        if probing and not failed:
            probing, asked = False, set()  # the probe answered: the whole plan, now
            pending = list(learnt.plan(points, limits))
        elif cap is not None:
            pending = [b for b in learnt.plan(points, limits) if asked.isdisjoint(b.points)]
    return not failed, silent, taught


def _silent_polls(
    points: dict[str, PointSpec],
    limits: ModbusLimits,
    device: SilentDevice,
    learnt: Learnt,
    polls: int,
) -> tuple[int, int]:
    """``polls`` polls, each cautious (a probe) after a failed one as the bus schedules
    them; the number of unanswered reads and of the caps they taught."""
    silences, lessons, cautious = 0, 0, True
    for _ in range(polls):
        ok, silent, taught = _silent_poll(points, limits, device, learnt, cautious)
        silences += silent
        lessons += taught
        cautious = not ok
    return silences, lessons


def _widest(points: dict[str, PointSpec], kind: RegisterKind) -> int:
    return max((s.register_count for s in points.values() if s.kind == kind), default=1)


@settings(max_examples=200, deadline=None)
@given(point_sets(), generous, st.data())
def test_a_device_silent_on_long_reads_costs_a_bounded_number_of_timeouts(
    points: dict[str, PointSpec], limits: ModbusLimits, data: st.DataObject
) -> None:
    # The device reads at least its widest point (else that point is the device failing).
    limit = {
        kind: data.draw(st.integers(_widest(points, kind), 2000 if kind.is_bit else 125))
        for kind in RegisterKind
    }
    device = SilentDevice(limit)
    learnt = Learnt()
    silences = lessons = 0
    for _ in range(500):  # until a poll after a full one goes without a silence
        more, taught = _silent_polls(points, limits, device, learnt, 3)
        silences, lessons = silences + more, lessons + taught
        if not more:
            break
    # Settled: the next polls send no read the device ignores.
    settled_at = len(device.requests)
    assert _silent_polls(points, limits, device, learnt, 3) == (0, 0)
    assert all(block.count <= limit[block.kind] for block in device.requests[settled_at:])
    plan = learnt.plan(points, limits)
    assert sorted(n for b in plan for n in b.points) == sorted(points), "every point read"
    # Bounded: a poll with silences that taught nothing is followed by one whose first
    # silence teaches (the same read, silent again), and a poll has two silences at most:
    # four per lesson; lessons halve the cap, log2 of the profile's limit plus one per kind.
    assert silences <= 4 * lessons, (silences, lessons, learnt.caps)
    assert lessons <= _halvings(points, limits, limit)
    assert set(learnt.reasons) == set(learnt.caps)
    assert set(learnt.reasons.values()) <= {CapReason.TIMEOUT}
    assert learnt.unsupported == set()
    assert learnt.barriers == set()


def _halvings(
    points: dict[str, PointSpec], limits: ModbusLimits, limit: dict[RegisterKind, int]
) -> int:
    """The cap lessons a device can teach: per kind with points, log2 of the longest
    read the profile allows plus one."""
    kinds = {s.kind for s in points.values()}
    top = {
        k: limits.max_bits_per_read if k.is_bit else limits.max_registers_per_read for k in kinds
    }
    return sum(math.ceil(math.log2(top[k])) + 1 for k in kinds if top[k] > limit[k])


@settings(max_examples=200, deadline=None)
@given(point_sets(), generous, st.integers(0, 60), st.data())
def test_a_device_that_dies_learns_nothing_from_its_silence(
    points: dict[str, PointSpec], limits: ModbusLimits, dies_after: int, data: st.DataObject
) -> None:
    # It answered every read while it lived: whenever it dies (before its first answer,
    # mid-poll, after its plan settled), its silence must not shrink the plan.
    huge = {kind: 2000 for kind in RegisterKind}
    device = SilentDevice(huge, dies_after=dies_after)
    learnt = Learnt()
    before = learnt.plan(points, limits)
    _silent_polls(points, limits, device, learnt, data.draw(st.integers(1, 100)))
    assert learnt.caps == {}
    assert learnt.reasons == {}
    assert learnt.plan(points, limits) == before


@settings(max_examples=200, deadline=None)
@given(point_sets(), generous, st.data())
def test_a_device_that_never_answers_keeps_what_it_had_learnt(
    points: dict[str, PointSpec], limits: ModbusLimits, data: st.DataObject
) -> None:
    # Whatever it taught before (restored from the state file), a dead device's silence,
    # on any read in any order, teaches nothing more.
    kinds = sorted({s.kind for s in points.values()})
    caps = {k: data.draw(st.integers(_widest(points, k), 125)) for k in kinds if not k.is_bit}
    learnt = Learnt(caps=dict(caps), accepted={k: 1 for k in caps})
    plan = learnt.plan(points, limits)
    if not plan:
        return
    for _ in range(data.draw(st.integers(1, 20))):
        learnt.poll_started()
        for block in data.draw(st.lists(st.sampled_from(plan), max_size=5)):
            assert learnt.silent(block, points) is None
    assert learnt.caps == caps
    assert learnt.reasons == {}
    assert learnt.plan(points, limits) == plan


@settings(max_examples=100, deadline=None)
@given(point_sets(), generous)
def test_a_device_that_answers_everything_learns_nothing(
    points: dict[str, PointSpec], limits: ModbusLimits
) -> None:
    device = SilentDevice({kind: 2000 for kind in RegisterKind})
    learnt = Learnt()
    assert _silent_polls(points, limits, device, learnt, 5) == (0, 0)
    assert learnt.caps == {}
    assert learnt.silences == {}


def test_one_silence_teaches_nothing_the_second_in_a_row_a_cap() -> None:
    points = _meter()
    limits = ModbusLimits(max_registers_per_read=125, max_gap=4)
    learnt = Learnt()
    long, far = learnt.plan(points, limits)
    learnt.poll_started()
    learnt.answered(far)
    assert learnt.silent(long, points) is None  # a frame lost on a noisy line, perhaps
    learnt.poll_started()
    assert learnt.silent(long, points) == 38  # alive: it answered in the previous poll
    assert learnt.reasons == {RegisterKind.INPUT: CapReason.TIMEOUT}
    assert [(b.address, b.count) for b in learnt.plan(points, limits)] == [
        (0, 38),
        (38, 38),
        (200, 1),
    ]


def test_an_answer_between_two_silences_starts_the_count_again() -> None:
    points = _meter()
    limits = ModbusLimits(max_registers_per_read=125, max_gap=4)
    learnt = Learnt()
    long, far = learnt.plan(points, limits)
    learnt.poll_started()
    learnt.answered(far)
    assert learnt.silent(long, points) is None
    learnt.poll_started()
    learnt.answered(long)  # it was a lost frame after all
    learnt.poll_started()
    assert learnt.silent(long, points) is None  # no smaller cap: it answered 76 before
    assert learnt.caps == {}


def test_a_silent_single_point_teaches_nothing() -> None:
    points = {"wide": PointSpec(kind=RegisterKind.HOLDING, address=10, type=DataType.F64)}
    learnt = Learnt()
    (block,) = learnt.plan(points, ModbusLimits())
    learnt.answered(block)
    for _ in range(5):
        learnt.poll_started()
        assert learnt.silent(block, points) is None
    assert learnt.caps == {}
    assert learnt.unsupported == set()


def test_exception_3_after_a_timeout_cap_says_so() -> None:
    points = _meter()
    limits = ModbusLimits(max_registers_per_read=125, max_gap=4)
    learnt = Learnt(caps={RegisterKind.INPUT: 38}, reasons={RegisterKind.INPUT: CapReason.TIMEOUT})
    first = learnt.plan(points, limits)[0]
    assert learnt.refused(first, VALUE, points) == (Lesson.CAP, 19)
    assert learnt.reasons == {RegisterKind.INPUT: CapReason.EXCEPTION_3}
