"""Lamp levels to lamp controllers over their bus: the lighting controller's hands.

A level is a dim setpoint plus the on/off relay; both are leased setpoints in the
controller (its profile's ``lease`` block names them), so each push renews the lease.
Commissioning writes the profile's fallback and lease-timeout points once per session.
"""

from __future__ import annotations

from collections.abc import Mapping

from smartpole.agent.buses.modbus import ModbusBusTask
from smartpole.drivers.errors import WriteRejectedError
from smartpole.drivers.modbus.profile import ModbusProfile

ACTOR = "agent:lighting"


class ModbusLampActuator:
    def __init__(self, buses: Mapping[str, ModbusBusTask], profiles: Mapping[str, ModbusProfile]):
        self._buses = buses  # lamp name -> the task owning its bus
        self._profiles = profiles  # lamp name -> its profile

    def _lease_points(self, lamp: str) -> tuple[str, str, list[str]]:
        lease = self._profiles[lamp].lease
        if lease is None:
            raise WriteRejectedError(f"lamp {lamp}'s profile has no lease block")
        return lease.fallback, lease.timeout, lease.setpoints

    async def commission(self, lamp: str, *, fallback_level: int, lease_s: int) -> None:
        fallback, timeout, _ = self._lease_points(lamp)
        bus = self._buses[lamp]
        await bus.write_point(lamp, fallback, fallback_level, ACTOR)
        await bus.write_point(lamp, timeout, lease_s, ACTOR)

    async def push(self, lamp: str, level: int, *, changed: bool) -> None:
        _, _, setpoints = self._lease_points(lamp)
        bus = self._buses[lamp]
        points = self._profiles[lamp].points
        for name in setpoints:
            value: object = level > 0 if points[name].is_bool else level
            await bus.write_point(lamp, name, value, ACTOR, audit=changed)
