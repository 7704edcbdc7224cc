"""The profile of a pole microcontroller: which bridge protocol and how many relay channels.

The MCU declares its commands itself (the dictionary it serves at identify), so the profile
only says what the agent may expect of the model before it connects; the agent checks the
dictionary against it at connect and refuses a mismatch with a clear error.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
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


@dataclass(frozen=True)
class McuPointWire:
    """Where an MCU point comes from in the bridge protocol (firmware-bridge/PROTOCOL.md)
    and the step its integer encoding allows: ``temp_cdeg=%i`` is hundredths of a degree,
    so 0.01 °C. The uplink's point metadata and its rounding take them from here."""

    wire: str
    resolution: float | None
    description: str


POINT_WIRES: dict[str, McuPointWire] = {
    "door_open": McuPointWire("inputs.door %c", None, "cabinet door contact, true when open"),
    "water": McuPointWire("inputs.water %c", None, "water sensor in the cabinet"),
    "photocell_dark": McuPointWire("inputs.photocell %c", None, "photocell says dark"),
    "tilt_x": McuPointWire("inputs.tilt_x %i (0.01 deg)", 0.01, "pole tilt, x axis"),
    "tilt_y": McuPointWire("inputs.tilt_y %i (0.01 deg)", 0.01, "pole tilt, y axis"),
    "leakage": McuPointWire("inputs.leakage_ua %u (uA)", 0.001, "earth leakage current"),
    "temperature": McuPointWire("inputs.temp_cdeg %i (0.01 degC)", 0.01, "cabinet temperature"),
    "supply_voltage": McuPointWire("inputs.supply_mv %u (mV)", 0.001, "MCU supply voltage"),
    "level": McuPointWire("status.level %c", 1, "lamp dimming output, 0..100 %"),
    "fallback": McuPointWire("status", None, "the MCU runs its own fallback program"),
    "tripped": McuPointWire("relay_state.tripped %c", None, "a leakage trip holds relays off"),
    "impact": McuPointWire("event impact (mg)", 0.001, "last impact, held 2 s, else 0"),
}
RELAY_WIRE = McuPointWire("status.relays %c (bit per channel)", None, "relay output")


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
