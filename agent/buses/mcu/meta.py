"""The MCU's points described for the platform (``PointMeta``), from the bridge protocol."""

from __future__ import annotations

from collections.abc import Iterable

from smartpole.agent.core.point_meta import PointMeta
from smartpole.drivers.mcu.codes import MAX_LEVEL
from smartpole.drivers.mcu.profile import LEVEL, POINT_WIRES, RELAY_WIRE, point_kinds


def point_metas(relays: Iterable[str]) -> dict[str, PointMeta]:
    """Every point of an MCU with these named relays: the level is an integer 0..100 %, the
    readings numbers in their wire steps, the contacts, flags and relays booleans."""
    metas: dict[str, PointMeta] = {}
    for point, (is_bool, writable) in point_kinds(relays).items():
        wire = POINT_WIRES.get(point, RELAY_WIRE)
        level = point == LEVEL
        metas[point] = PointMeta(
            type="boolean" if is_bool else "integer" if level else "number",
            wire=wire.wire,
            description=wire.description,
            access="rw" if writable else "r",
            valid_range=(0, MAX_LEVEL) if level else None,
            write_min=0 if level else None,
            write_max=MAX_LEVEL if level else None,
            resolution=wire.resolution,
        )
    return metas
