"""The profile of a pole microcontroller: which bridge protocol and how many relay channels.

The MCU declares its commands itself (the dictionary it serves at identify), so the profile
only says what the agent may expect of the model before it connects; the agent checks the
dictionary against it at connect and refuses a mismatch with a clear error.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from pydantic import Field

from smartpole.drivers.schema import ProfileInfo

# The MCU's readings as points of its device. The alarm rules in a pole config name them
# (``mcu.door_open``, ``mcu.leakage``), so they are part of the config's vocabulary, like a
# Modbus profile's points; point -> unit. The relays a pole config names are added as
# boolean points.
INPUT_POINTS: dict[str, str] = {
    "door_open": "",
    "water": "",
    "photocell_dark": "",
    "tilt_x": "°",
    "tilt_y": "°",
    "leakage": "mA",
    "temperature": "°C",
    "supply_voltage": "V",
}
STATUS_POINTS: dict[str, str] = {
    "level": "%",
    "fallback": "",
    "tripped": "",
    "impact": "gn",  # peak acceleration in standard gravities (gn; "g" is the gram)
}
LEVEL = "level"
TRIPPED = "tripped"
_BOOL_POINTS = {"door_open", "water", "photocell_dark", "fallback", TRIPPED}


def point_kinds(relays: Iterable[str]) -> dict[str, tuple[bool, bool]]:
    """Every point of an MCU with these named relays as ``(is_bool, writable)``."""
    kinds = {
        point: (point in _BOOL_POINTS, point in (LEVEL, TRIPPED))
        for point in (*INPUT_POINTS, *STATUS_POINTS)
    }
    kinds.update(dict.fromkeys(relays, (True, True)))
    return kinds


class McuProfile(ProfileInfo):
    protocol: Literal["pole-mcu"]
    dictionary_version: int = Field(
        1, ge=1, description="version of the bridge protocol's command dictionary it serves"
    )
    relays: int = Field(8, ge=1, le=8, description="relay channels the MCU switches")
