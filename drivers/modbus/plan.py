"""Group a device's points into as few Modbus reads as its limits allow.

Every request on a 9600-baud bus costs a round trip of several milliseconds plus the
device's turnaround, so reading a block of neighbours at once is far cheaper than one
request per point. The limits come from the device profile because cheap devices refuse
long reads or reads across unmapped registers; what a device refuses that its profile did
not say is learnt at run time (``learning.py``): *barriers* (see ``split_block``) and
*caps*, a smaller read limit per register kind.

Greedy merging in address order is optimal for every profile the config check accepts
(points do not overlap except bit points sharing a register, no point lies in a refused
area, no point is wider than one read): then every constraint (span, gap, refused area,
barrier) still holds for any sub-run of a valid run, so extending each block as far as
possible never costs an extra request. ``bench/bench_bus_efficiency.py`` checks it against
an exhaustive search on the demo pole and on random valid profiles.
"""

from __future__ import annotations

from collections.abc import Mapping, Set
from dataclasses import dataclass

from smartpole.drivers.modbus.points import PointSpec, RegisterKind
from smartpole.drivers.modbus.profile import ModbusLimits

Barrier = tuple[RegisterKind, int]  # no read may cover both address-1 and address


@dataclass(frozen=True)
class ReadBlock:
    kind: RegisterKind
    address: int
    count: int
    points: tuple[str, ...]

    @property
    def end(self) -> int:
        return self.address + self.count

    @classmethod
    def of_point(cls, name: str, spec: PointSpec) -> ReadBlock:
        """A read of one point alone: a probe, or asking again what a device refused."""
        return cls(spec.kind, spec.address, spec.register_count, (name,))


def plan_reads(
    points: Mapping[str, PointSpec],
    limits: ModbusLimits,
    barriers: Set[Barrier] = frozenset(),
    caps: Mapping[RegisterKind, int] | None = None,
) -> list[ReadBlock]:
    """Merge points of the same area into blocks within ``limits`` and the learnt ``caps``
    (a device's own smaller limit per register kind, ``learning.py``); deterministic order."""
    blocks: list[ReadBlock] = []
    ordered = sorted(points.items(), key=lambda item: (item[1].kind, item[1].address, item[0]))
    for name, spec in ordered:
        last = blocks[-1] if blocks else None
        if last is not None and _may_extend(last, spec, limits, barriers, caps or {}):
            count = max(spec.end, last.end) - last.address
            blocks[-1] = ReadBlock(last.kind, last.address, count, (*last.points, name))
        else:
            blocks.append(ReadBlock.of_point(name, spec))
    return blocks


def _may_extend(
    block: ReadBlock,
    spec: PointSpec,
    limits: ModbusLimits,
    barriers: Set[Barrier],
    caps: Mapping[RegisterKind, int],
) -> bool:
    if block.kind != spec.kind or spec.address - block.end > limits.max_gap:
        return False
    end = max(spec.end, block.end)  # the extended block would cover block.address .. end-1
    limit = limits.max_bits_per_read if spec.kind.is_bit else limits.max_registers_per_read
    limit = min(limit, caps.get(spec.kind, limit))
    if end - block.address > limit:
        return False
    if any(kind == spec.kind and block.address < at < end for kind, at in barriers):
        return False
    return not any(
        area.kind == spec.kind and area.start < end and area.end >= block.address
        for area in limits.refused
    )


def split_block(block: ReadBlock, points: Mapping[str, PointSpec]) -> Barrier | None:
    """Where to cut a block a device refused: at its widest hole, the likeliest culprit.

    Ties go to the cut nearest the middle, so repeated refusals converge in few cycles.
    Returns None for a block of one point: nothing is left to split; the point itself is
    what the device refuses.
    """
    specs = sorted((points[name] for name in block.points), key=lambda s: s.address)
    cuts: list[tuple[int, int, int]] = []  # (hole size, -distance from middle, address)
    reach = specs[0].end
    for index, spec in enumerate(specs[1:], start=1):
        if spec.address >= reach:
            cuts.append((spec.address - reach, -abs(2 * index - len(specs)), spec.address))
        reach = max(reach, spec.end)
    return (block.kind, max(cuts)[2]) if cuts else None
