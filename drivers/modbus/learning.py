"""What one device refuses that its profile did not say, learnt from its answers.

Profiles are written from register maps, and real devices refuse more than their maps
admit: reads across unmapped registers (exception 2, illegal data address) and reads
longer than their buffers (exception 3, illegal data value). Each refusal teaches one
thing, so the plan converges instead of sending the same refused read every poll:

- exception 2 on a block of several points: a *barrier* at its widest hole
  (``plan.split_block``), so no read crosses it again;
- exception 3 on a block longer than its widest point: a smaller *cap* on reads of that
  register kind, half the refused count but never less than a count the device has
  already accepted (nor than the widest point of the device), so the cap falls at least
  by half per refusal until it is one the device accepts: at most ``log2(125) + 1``
  refusals per kind for registers;
- either on a block of one point: the point itself is what the device refuses.

Pure (no I/O, no clock) so the convergence can be property-tested; the bus task applies
it and the state file (``agent/buses/modbus/learnt.py``) keeps it across restarts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum

from smartpole.drivers.modbus.pdu import ExceptionCode
from smartpole.drivers.modbus.plan import Barrier, ReadBlock, plan_reads, split_block
from smartpole.drivers.modbus.points import PointSpec, RegisterKind
from smartpole.drivers.modbus.profile import ModbusLimits

# The exception codes a read is split for; any other code is the device failing.
SPLIT_CODES = frozenset({ExceptionCode.ILLEGAL_DATA_ADDRESS, ExceptionCode.ILLEGAL_DATA_VALUE})


class Lesson(Enum):
    """What one refusal taught."""

    CAP = "cap"  # reads of the block's kind are capped lower
    BARRIER = "barrier"  # no read crosses an address any more
    UNSUPPORTED = "unsupported"  # the single point is refused


@dataclass
class Learnt:
    """One device's learnt limits: caps per register kind, barriers, refused points."""

    caps: dict[RegisterKind, int] = field(default_factory=dict)
    barriers: set[Barrier] = field(default_factory=set)
    unsupported: set[str] = field(default_factory=set)
    accepted: dict[RegisterKind, int] = field(default_factory=dict)  # longest read answered

    def plan(self, points: Mapping[str, PointSpec], limits: ModbusLimits) -> list[ReadBlock]:
        usable = {n: s for n, s in points.items() if n not in self.unsupported}
        return plan_reads(usable, limits, self.barriers, self.caps)

    def answered(self, block: ReadBlock) -> None:
        """The device answered ``block``: no cap of its kind will go below its count."""
        if block.count > self.accepted.get(block.kind, 0):
            self.accepted[block.kind] = block.count

    def refused(
        self, block: ReadBlock, code: int, points: Mapping[str, PointSpec]
    ) -> tuple[Lesson, int | str]:
        """Learn from the device refusing ``block`` with ``code`` (one of ``SPLIT_CODES``).

        Returns the lesson and its detail: the new cap, the barrier's address, or the
        refused point's name.
        """
        if code == ExceptionCode.ILLEGAL_DATA_VALUE:
            cap = self._smaller_cap(block, points)
            if cap is not None:
                self.caps[block.kind] = cap
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
