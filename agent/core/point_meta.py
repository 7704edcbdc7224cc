"""What a point is, for whoever reads its values without our YAML: type, range, writability,
resolution. And the one rounding rule that makes a reading honest about its resolution.

Each bus plug-in describes its points when it registers them in the point table (it is the
only part that knows both the profile and the wire); the uplink publishes the descriptions
on the retained ``meta`` topic (``agent/uplink/meta.py``) and rounds telemetry with
``round_to``. Kept in ``core`` so that the table, the uplink and OPC UA share one noun.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

ValueType = Literal["number", "integer", "boolean", "string"]


@dataclass(frozen=True, slots=True)
class PointMeta:
    """One point as the platform sees it (``schemas/uplink/meta.schema.json``, ``points``).

    ``wire`` says how the device encodes it (``f32``, ``u16``, ``bcd XXX.X``, ...): a
    platform that sees a value stuck at 65535 can tell it is a u16's "no value". ``counter``
    marks a value that only grows (energy, operating hours): a drop is a meter reset or
    replacement, never a reading to subtract.
    """

    type: ValueType
    wire: str
    description: str = ""
    access: Literal["r", "rw"] = "r"
    valid_range: tuple[float, float] | None = None
    write_min: float | None = None
    write_max: float | None = None
    resolution: float | None = None
    counter: bool = False

    def to_json(self, unit: str) -> dict[str, object]:
        """The point's entry in the meta payload; keys without a value are left out, so the
        payload (and its hash) does not change when an optional field is added to the code."""
        entry: dict[str, object] = {"type": self.type, "wire": self.wire, "unit": unit}
        entry["access"] = self.access
        if self.valid_range is not None:
            entry["range"] = [self.valid_range[0], self.valid_range[1]]
        if self.write_min is not None:
            entry["write_min"] = self.write_min
        if self.write_max is not None:
            entry["write_max"] = self.write_max
        if self.resolution is not None:
            entry["resolution"] = self.resolution
        if self.counter:
            entry["counter"] = True
        if self.description:
            entry["description"] = self.description
        return entry


def decimals_of(step: float) -> int:
    """Decimal places of ``step`` as written (0.1 -> 1, 0.25 -> 2, 5 -> 0, 1e-05 -> 5)."""
    exponent = Decimal(repr(step)).normalize().as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else 0


def rounder(resolution: float) -> tuple[float, int, int]:
    """``(resolution, numerator, denominator)`` for ``round_to``, with ``resolution`` as
    the exact fraction its decimals say (0.25 is 25/100), computed once per point."""
    if not (math.isfinite(resolution) and resolution > 0):
        raise ValueError(f"a resolution must be a finite number above 0, not {resolution!r}")
    denominator = 10 ** decimals_of(resolution)
    numerator = int(Decimal(repr(resolution)) * denominator)
    return resolution, numerator, denominator


def round_to(value: float, resolution: float, numerator: int, denominator: int) -> float:
    """``value`` on the nearest multiple of ``resolution``, written with no more decimals
    than the resolution has. 0.1 * 3 is 0.30000000000000004 in binary; 3 * 1 / 10 is one
    correctly rounded division of integers, the float nearest to 0.3, whose shortest repr
    (what JSON gets) is 0.3. Integers, not ``round(x, 1)``: this runs for every float of
    every reading. A value too large to divide is returned as it is, like NaN and ±inf
    (the telemetry sends those as null with quality bad)."""
    steps = value / resolution
    if steps - steps != 0.0:  # inf or NaN, without a function call
        return value
    return round(steps) * numerator / denominator
