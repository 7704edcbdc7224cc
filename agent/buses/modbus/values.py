"""What a Modbus point's values mean for the agent: the quality of a reading, and whether a
value may be written and was written.

The read side runs for every value of every poll, so ``quality_varies`` decides once per
plan whether a point's readings need a look at all; the write side refuses what the
profile does not allow before anything reaches the wire, and judges the read-back.
"""

from __future__ import annotations

import math

from smartpole.agent.core.points import Quality
from smartpole.drivers.errors import WriteRejectedError
from smartpole.drivers.modbus import codec
from smartpole.drivers.modbus.points import DataType, PointSpec, encodable_range
from smartpole.drivers.schema import Value


def quality_varies(spec: PointSpec) -> bool:
    """Whether ``quality`` can be anything but good for this point's values: only with
    a valid range, or when a value can be NaN or infinite (floats; integers scaled past
    the float range); bits, text and other integers are always good."""
    if spec.valid_range is not None or spec.type in (DataType.F32, DataType.F64):
        return True
    return spec.is_numeric and not all(math.isfinite(end) for end in encodable_range(spec))


def quality(spec: PointSpec, value: Value | str) -> Quality:
    if isinstance(value, str | bool):
        return Quality.GOOD
    if not codec.is_physical(value):
        return Quality.BAD  # NaN or infinity: a sensor fault, never good data
    if spec.valid_range is not None and not spec.valid_range[0] <= value <= spec.valid_range[1]:
        return Quality.UNCERTAIN
    return Quality.GOOD


def checked_value(spec: PointSpec, value: object) -> Value:
    if spec.access != "rw":
        raise WriteRejectedError("the point is read-only in its profile")
    if spec.type is DataType.BOOL or spec.bit is not None:
        if not isinstance(value, bool):
            raise WriteRejectedError(f"expected true or false, got {value!r}")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise WriteRejectedError(f"expected a number, got {value!r}")
    if not math.isfinite(value):
        raise WriteRejectedError(f"{value!r} is not a finite number")
    low, high = spec.write_min, spec.write_max
    if (low is not None and value < low) or (high is not None and value > high):
        raise WriteRejectedError(
            f"{value} is outside the allowed range {low} to {high} {spec.unit}"
        )
    return value


def matches(spec: PointSpec, wanted: Value, got: object) -> bool:
    if isinstance(wanted, bool) or isinstance(got, bool) or got is None:
        return bool(wanted) == bool(got)
    if not isinstance(got, int | float):
        return False
    resolution = abs(spec.scale) / 2 if spec.type not in (DataType.F32, DataType.F64) else 0
    return abs(float(got) - float(wanted)) <= max(resolution, 1e-6 * abs(float(wanted)))
