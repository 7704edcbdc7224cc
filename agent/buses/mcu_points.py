"""The MCU's readings as points of its device, and the pole config as the MCU's configuration.

Kept apart from the bus task so the mapping (names, units, conversions) can be read and
tested on its own: the alarm rules in a pole config name these points (``mcu.door_open``,
``mcu.leakage``), so they are part of the config's public vocabulary.
"""

from __future__ import annotations

from smartpole.agent.config.pole import PoleMcuBus
from smartpole.drivers.mcu.config import McuConfig, RelayConfig, ScheduleStep

# point -> unit; the relays named in the bus config are added as boolean points.
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
    "impact": "g",
}
LEVEL = "level"
TRIPPED = "tripped"
_BOOL_POINTS = {"door_open", "water", "photocell_dark", "fallback", TRIPPED}


def point_kinds(bus: PoleMcuBus) -> dict[str, tuple[bool, bool]]:
    """Every point of the bus's MCU as ``(is_bool, writable)``, for the config checks."""
    kinds = {
        point: (point in _BOOL_POINTS, point in (LEVEL, TRIPPED))
        for point in (*INPUT_POINTS, *STATUS_POINTS)
    }
    kinds.update(dict.fromkeys(bus.relays, (True, True)))
    return kinds


def mcu_config(bus: PoleMcuBus) -> McuConfig:
    """The configuration the MCU must hold for this bus; its CRC is checked at connect."""
    mask = 0
    for name in bus.leakage_cuts:
        mask |= 1 << (bus.relays[name].channel - 1)
    return McuConfig(
        relays=[
            RelayConfig(
                channel=relay.channel,
                default_on=relay.default_on,
                max_duration_ms=round(relay.lease_s * 1000),
            )
            for relay in sorted(bus.relays.values(), key=lambda r: r.channel)
        ],
        heartbeat_ms=round(bus.fallback_after_s * 1000),
        fallback_level=bus.fallback_level,
        lease_ms=round(bus.level_lease_s * 1000),
        schedule=[ScheduleStep(minute=step.minute, level=step.level) for step in bus.schedule],
        leakage_trip_ua=round(bus.leakage_trip_ma * 1000),
        leakage_relay_mask=mask,
        tilt_cdeg=round(bus.tilt_limit_deg * 100),
        impact_mg=round(bus.impact_limit_g * 1000),
    )
