"""The pole config's ``pole-mcu`` bus as the configuration the MCU must hold.

Kept apart from the bus task so the mapping (units, rounding, the relay mask) can be read
and tested on its own; its CRC is what the agent compares at every connect.
"""

from __future__ import annotations

from smartpole.agent.config.pole import PoleMcuBus
from smartpole.drivers.mcu.config import McuConfig, RelayConfig, ScheduleStep


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
