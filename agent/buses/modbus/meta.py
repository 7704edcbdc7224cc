"""A Modbus point described for the platform (``PointMeta``), from its profile entry."""

from __future__ import annotations

from smartpole.agent.core.point_meta import PointMeta, ValueType
from smartpole.drivers.modbus.points import DataType, PointSpec


def point_meta(spec: PointSpec) -> PointMeta:
    """What the codec makes of ``spec``: an integer register read with scale 1 and no offset
    stays an integer, a scaled one is a number (``codec.compile_decoder``)."""
    wire = spec.type.value if spec.bit is None else f"{spec.type.value} bit {spec.bit}"
    return PointMeta(
        type=_value_type(spec),
        wire=wire,
        description=spec.description,
        access=spec.access,
        valid_range=spec.valid_range,
        write_min=spec.write_min,
        write_max=spec.write_max,
        resolution=spec.effective_resolution,
        counter=spec.monotonic,
    )


def _value_type(spec: PointSpec) -> ValueType:
    if spec.is_bool:
        return "boolean"
    if spec.type is DataType.STRING:
        return "string"
    if spec.type.is_integer and spec.scale == 1 and spec.offset == 0:
        return "integer"
    return "number"
