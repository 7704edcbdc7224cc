"""What one device refuses that its profile did not say, learnt from its answers.

Profiles are written from register maps, and real devices refuse more than their maps
admit: reads across unmapped registers (exception 2, illegal data address) and reads
longer than their buffers (exception 3, illegal data value, or no answer at all: some
devices stay silent on a read longer than their buffer). Each refusal teaches one
thing, so the plan converges instead of sending the same refused read every poll:

- exception 2 on a block of several points: a *barrier* at its widest hole
  (``plan.split_block``), so no read crosses it again;
- exception 3 on a block longer than its widest point: a smaller *cap* on reads of that
  register kind, half the refused count but never less than a count the device has
  already accepted (nor than the widest point of the device), so the cap falls at least
  by half per refusal until it is one the device accepts: at most ``log2(125) + 1``
  refusals per kind for registers;
- either on a block of one point: the point itself is what the device refuses;
- no answer at all to a block longer than its widest point and than any read the device
  has answered, while the device is *alive* (it answered a read in this poll or the
  previous one), for the second time in a row for that same block: the same smaller cap
  as exception 3, with ``timeout`` as its reason. One silence teaches nothing (a frame
  lost on a noisy line must not shrink the plan for ever), nor a silence of a device that
  answers nothing (dead, unplugged: it learns nothing, whatever it costs), nor a silent
  block of one point or no longer than a read already answered (that is the device
  failing, not its buffer). The bus task probes a device with its first point alone (so
  a device silent on long reads is seen alive), reads on after one silence of a live
  device not on probation but ends a poll at its second (``agent/buses/modbus/task.py``),
  so a poll whose silences taught nothing is followed by one whose first silence teaches
  (the same read, silent again): a device silent above its limit costs at most two polls and four
  unanswered reads (each after its retries) per halving, at most ``4 * (log2(125) + 1)``
  per register kind.

Pure (no I/O, no clock) so the convergence can be property-tested; the bus task applies
it and the state file (``agent/buses/modbus/learnt.py``) keeps it across restarts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum, StrEnum

from smartpole.drivers.modbus.pdu import ExceptionCode
from smartpole.drivers.modbus.plan import Barrier, ReadBlock, plan_reads, split_block
from smartpole.drivers.modbus.points import PointSpec, RegisterKind
from smartpole.drivers.modbus.profile import ModbusLimits

# The exception codes a read is split for; any other code is the device failing.
SPLIT_CODES = frozenset({ExceptionCode.ILLEGAL_DATA_ADDRESS, ExceptionCode.ILLEGAL_DATA_VALUE})
# How many silences in a row of the same block, the device alive, teach a cap.
SILENCES_TO_LEARN = 2


class Lesson(Enum):
    """What one refusal taught."""

    CAP = "cap"  # reads of the block's kind are capped lower
    BARRIER = "barrier"  # no read crosses an address any more
    UNSUPPORTED = "unsupported"  # the single point is refused


class CapReason(StrEnum):
    """Why reads of a kind were capped: what a technician checks the device's manual for."""

    EXCEPTION_3 = "exception 3"  # the device said the read was too long
    TIMEOUT = "timeout"  # the device, alive, never answered the longer read


@dataclass
class Learnt:
    """One device's learnt limits: caps per register kind (and why), barriers, refused
    points; and, not kept across restarts, the silences that may yet teach a cap."""

    caps: dict[RegisterKind, int] = field(default_factory=dict)
    barriers: set[Barrier] = field(default_factory=set)
    unsupported: set[str] = field(default_factory=set)
    accepted: dict[RegisterKind, int] = field(default_factory=dict)  # longest read answered
    reasons: dict[RegisterKind, CapReason] = field(default_factory=dict)
    # blocks the device, alive, did not answer, and how many times in a row
    silences: dict[ReadBlock, int] = field(default_factory=dict)
    _answered_now: bool = field(default=False, init=False, repr=False)
    _answered_before: bool = field(default=False, init=False, repr=False)

    def plan(self, points: Mapping[str, PointSpec], limits: ModbusLimits) -> list[ReadBlock]:
        usable = {n: s for n, s in points.items() if n not in self.unsupported}
        blocks = plan_reads(usable, limits, self.barriers, self.caps)
        # A silence is about one read; a read no longer planned cannot be silent again.
        self.silences = {b: n for b, n in self.silences.items() if b in blocks}
        return blocks

    def poll_started(self) -> None:
        """A poll of the device begins: what it answered in the last one still shows it
        alive during this one."""
        self._answered_before, self._answered_now = self._answered_now, False

    @property
    def alive(self) -> bool:
        """The device answered a read (or refused one) in this poll or the previous one."""
        return self._answered_now or self._answered_before

    def answered(self, block: ReadBlock) -> None:
        """The device answered ``block``: no cap of its kind will go below its count."""
        self._answered_now = True
        self.silences.pop(block, None)
        if block.count > self.accepted.get(block.kind, 0):
            self.accepted[block.kind] = block.count

    def silent(self, block: ReadBlock, points: Mapping[str, PointSpec]) -> int | None:
        """The device gave no answer at all to ``block`` (after its retries); returns the
        new cap when this silence taught one (see the module's docstring for when)."""
        if not self.alive or self._smaller_cap(block, points) is None:
            # Dead or unplugged, or the read is not too long for a buffer: the device
            # failing, which the caller counts as such.
            return None
        self.silences[block] = count = self.silences.get(block, 0) + 1
        if count < SILENCES_TO_LEARN:
            return None
        cap = self._smaller_cap(block, points)
        assert cap is not None
        self.caps[block.kind] = cap
        self.reasons[block.kind] = CapReason.TIMEOUT
        del self.silences[block]
        return cap

    def refused(
        self, block: ReadBlock, code: int, points: Mapping[str, PointSpec]
    ) -> tuple[Lesson, int | str]:
        """Learn from the device refusing ``block`` with ``code`` (one of ``SPLIT_CODES``).

        Returns the lesson and its detail: the new cap, the barrier's address, or the
        refused point's name.
        """
        self._answered_now = True  # a refusal is an answer: the device is alive
        self.silences.pop(block, None)
        if code == ExceptionCode.ILLEGAL_DATA_VALUE:
            cap = self._smaller_cap(block, points)
            if cap is not None:
                self.caps[block.kind] = cap
                self.reasons[block.kind] = CapReason.EXCEPTION_3
                return Lesson.CAP, cap
        barrier = split_block(block, points)
        if barrier is not None:
            self.barriers.add(barrier)
            return Lesson.BARRIER, barrier[1]
        if len(block.points) > 1:
            # Several points sharing one span (bits of one register) cannot be split:
            # they stand or fall together.
            self.unsupported.update(block.points)
        else:
            self.unsupported.add(block.points[0])
        return Lesson.UNSUPPORTED, ", ".join(block.points)

    def _smaller_cap(self, block: ReadBlock, points: Mapping[str, PointSpec]) -> int | None:
        """Half the refused count, no less than what the device accepted nor than its
        widest point of that kind; None when no smaller read could carry the block."""
        widest = max(
            (
                spec.register_count
                for name, spec in points.items()
                if spec.kind == block.kind and name not in self.unsupported
            ),
            default=1,
        )
        floor = max(widest, self.accepted.get(block.kind, 0))
        cap = max(block.count // 2, floor)
        return cap if cap < block.count else None
