"""Group a device's points into as few Modbus reads as its limits allow.

Every request on a 9600-baud bus costs a round trip of several milliseconds plus the
device's turnaround, so reading a block of neighbours at once is far cheaper than one
request per point. The limits come from the device profile because cheap devices refuse
long reads or reads across unmapped registers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from smartpole.drivers.profile import ModbusLimits, PointSpec, RegisterKind


@dataclass(frozen=True)
class ReadBlock:
    kind: RegisterKind
    address: int
    count: int
    points: tuple[str, ...]

    @property
    def end(self) -> int:
        return self.address + self.count


def plan_reads(points: Mapping[str, PointSpec], limits: ModbusLimits) -> list[ReadBlock]:
    """Merge points of the same area into blocks within ``limits``; deterministic order."""
    blocks: list[ReadBlock] = []
    ordered = sorted(points.items(), key=lambda item: (item[1].kind, item[1].address))
    for name, spec in ordered:
        limit = limits.max_bits_per_read if spec.kind.is_bit else limits.max_registers_per_read
        last = blocks[-1] if blocks else None
        if (
            last is not None
            and last.kind == spec.kind
            and spec.address - last.end <= limits.max_gap
            and max(spec.end, last.end) - last.address <= limit
        ):
            count = max(spec.end, last.end) - last.address
            blocks[-1] = ReadBlock(last.kind, last.address, count, (*last.points, name))
        else:
            blocks.append(ReadBlock(spec.kind, spec.address, spec.register_count, (name,)))
    return blocks
