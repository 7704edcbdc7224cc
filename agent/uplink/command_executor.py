"""The boundary between command processing and the daemon that carries commands out.

``CommandExecutor`` is what the processor needs; ``DaemonExecutor`` provides it over the
daemon's local-API handlers, so a platform command takes exactly the path, checks and audit
of the same ``smartpole`` CLI command (the bus task checks the profile's limits and raises
``WriteRejectedError``; pole control raises ``RequestError`` / ``PowerRefusedError``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from smartpole.agent.core.errors import RequestError


class CommandExecutor(Protocol):
    """What the processor needs from the daemon; each call is made with the audit actor."""

    async def write_point(self, device: str, point: str, value: object, actor: str) -> object: ...
    async def override(self, lamp: str, level: int, duration_s: float, actor: str) -> object: ...
    async def clear_override(self, lamp: str, actor: str) -> object: ...
    async def power_cycle(self, device: str, actor: str) -> object: ...
    async def ptz(self, device: str, preset: int, actor: str) -> object: ...
    async def ack_alarm(self, alarm_id: str, actor: str) -> object: ...
    async def report_now(self) -> object: ...


Handler = Callable[[Mapping[str, Any]], object]  # may return an awaitable, as in agent.api


class DaemonExecutor:
    """``CommandExecutor`` over the daemon's local-API handlers (``write``, ``override``,
    ``power_cycle``, ``ptz``, ``reset``, plus ``report_now`` from the uplink), so commands
    take exactly the path, checks and audit of ``smartpole`` CLI commands. Taking the
    mapping instead of the daemon keeps this module free of the daemon's imports."""

    def __init__(self, handlers: Mapping[str, Handler]) -> None:
        self._handlers = handlers

    async def _call(self, name: str, **request: object) -> object:
        handler = self._handlers.get(name)
        if handler is None:
            raise RequestError(f"this pole cannot do {name!r} (no handler)")
        result = handler({"method": name, **request})
        if inspect.isawaitable(result):
            result = await result
        return result

    async def write_point(self, device: str, point: str, value: object, actor: str) -> object:
        return await self._call("write", device=device, point=point, value=value, actor=actor)

    async def override(self, lamp: str, level: int, duration_s: float, actor: str) -> object:
        return await self._call(
            "override", lamp=lamp, level=level, duration_s=duration_s, actor=actor
        )

    async def clear_override(self, lamp: str, actor: str) -> object:
        return await self._call("override", lamp=lamp, clear=True, actor=actor)

    async def power_cycle(self, device: str, actor: str) -> object:
        return await self._call("power_cycle", device=device, actor=actor)

    async def ptz(self, device: str, preset: int, actor: str) -> object:
        return await self._call("ptz", device=device, preset=preset, actor=actor)

    async def ack_alarm(self, alarm_id: str, actor: str) -> object:
        return await self._call("reset", alarm=alarm_id, actor=actor)

    async def report_now(self) -> object:
        return await self._call("report_now")
