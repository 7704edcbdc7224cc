"""Lamp levels to lamp controllers: the lighting controller's hands.

A level is a dim setpoint plus the on/off relay; both are leased setpoints in the
controller (its profile's ``lease`` block names them), so each push renews the lease.
Commissioning writes the profile's fallback and lease-timeout points once per session.
The writes go through whatever owns the lamp's bus (``write``), checked, read back and
audited there; control never holds a bus task.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from smartpole.drivers.errors import WriteRejectedError
from smartpole.drivers.modbus.profile import ModbusProfile

ACTOR = "agent:lighting"


class PointWriter(Protocol):
    """Writes one point of a device through the bus that owns it (``BusSet.write_point``)."""

    async def __call__(
        self, device: str, point: str, value: object, actor: str, *, audit: bool = True
    ) -> object: ...


class ModbusLampActuator:
    def __init__(self, write: PointWriter, profiles: Mapping[str, ModbusProfile]) -> None:
        self._write = write
        self._profiles = profiles  # lamp name -> its profile

    def _lease_points(self, lamp: str) -> tuple[str, str, list[str]]:
        lease = self._profiles[lamp].lease
        if lease is None:
            raise WriteRejectedError(f"lamp {lamp}'s profile has no lease block")
        return lease.fallback, lease.timeout, lease.setpoints

    def setpoints(self, lamp: str) -> list[str]:
        """The points the lease governs: nobody but the lighting controller writes them."""
        return self._lease_points(lamp)[2]

    async def commission(self, lamp: str, *, fallback_level: int, lease_s: int) -> None:
        fallback, timeout, _ = self._lease_points(lamp)
        await self._write(lamp, fallback, fallback_level, ACTOR)
        await self._write(lamp, timeout, lease_s, ACTOR)

    async def push(self, lamp: str, level: int, *, changed: bool) -> None:
        _, _, setpoints = self._lease_points(lamp)
        points = self._profiles[lamp].points
        for name in setpoints:
            value: object = level > 0 if points[name].is_bool else level
            await self._write(lamp, name, value, ACTOR, audit=changed)
