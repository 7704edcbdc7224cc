"""The host's client of the pole MCU: connect, typed requests, events, reset recovery.

:class:`McuClient` owns one :class:`~smartpole.drivers.mcu.link.McuLink`. ``connect()``
runs the connect sequence (:mod:`.connect`: identify, dictionary check, config CRC check,
configure if needed). Request methods may be called from several tasks at once: each
request carries its own tag, the link pipelines them up to the MCU's window, and a request
whose answer is lost is asked again with a new tag (every command is idempotent).

Events reach the host twice, pushed and through ``get_event``; :mod:`.events` keeps one of
each per ``(boot_id, id)``. With an ``on_event`` callback every new event is handed to it
once, whichever way it came, and the client polls ``get_event`` by itself whenever a
``status`` or a push shows it is missing some; ``poll_events()`` returns the new events it
found (they also went to the callback).

An MCU reset shows as a ``boot_id`` change in a ``status`` / ``config_state`` or as a
sequence resync. Requests in flight, and every request after them, then fail with
:class:`McuResetError` until the owner calls ``connect()`` again, which reconfigures the
MCU. The client never retries a connect by itself: its owner decides when (the agent's
bus task, with the same backoff it uses for a lost port).
"""

from __future__ import annotations

from smartpole.drivers.mcu.codes import MAX_LEVEL, RELAY_COUNT
from smartpole.drivers.mcu.connection import McuConnection
from smartpole.drivers.mcu.results import (
    LevelState,
    McuEvent,
    McuInputs,
    McuStats,
    McuStatus,
    RelayState,
)


class McuClient(McuConnection):
    """One MCU on one serial port, kept configured with ``config``; an async context
    manager (connected on entry). See :class:`McuConnection` for the settings."""

    # ----- requests -----------------------------------------------------------------------

    async def heartbeat(
        self, unix_time: int, utc_offset_min: int, *, timeout_s: float | None = None
    ) -> McuStatus:
        """Tell the MCU the host is alive and set its clock (0 = time unknown)."""
        args = {"unix_time": unix_time, "utc_offset_min": utc_offset_min}
        status = McuStatus.from_args(await self._request("heartbeat", "status", args, timeout_s))
        self._after_status(status)
        return status

    async def set_relay(
        self, channel: int, on: bool, *, timeout_s: float | None = None
    ) -> RelayState:
        """Switch relay ``channel`` (1..8); a lease of the relay's ``max_duration_ms``."""
        if not 1 <= channel <= RELAY_COUNT:
            raise ValueError(f"relay channel must be 1..{RELAY_COUNT}, got {channel}")
        args = {"channel": channel, "on": int(on)}
        return RelayState.from_args(
            await self._request("set_relay", "relay_state", args, timeout_s)
        )

    async def set_level(self, level: int, *, timeout_s: float | None = None) -> LevelState:
        """Set the lamp level (0..100 %); a lease of ``lease_ms``."""
        if not 0 <= level <= MAX_LEVEL:
            raise ValueError(f"level must be 0..{MAX_LEVEL} %, got {level}")
        args = {"level": level}
        return LevelState.from_args(
            await self._request("set_level", "level_state", args, timeout_s)
        )

    async def get_inputs(self, *, timeout_s: float | None = None) -> McuInputs:
        return McuInputs.from_args(await self._request("get_inputs", "inputs", None, timeout_s))

    async def clear_trip(self, *, timeout_s: float | None = None) -> McuStatus:
        """Release a leakage trip; McuCommandError ``tripped`` while the leakage persists."""
        status = McuStatus.from_args(await self._request("clear_trip", "status", None, timeout_s))
        self._after_status(status)
        return status

    async def get_stats(self, *, timeout_s: float | None = None) -> McuStats:
        return McuStats.from_args(await self._request("get_stats", "stats", None, timeout_s))

    async def poll_events(self, *, timeout_s: float | None = None) -> list[McuEvent]:
        """Fetch with ``get_event`` every event not seen yet; returns the new ones (also
        handed to ``on_event``). Ids the MCU's ring dropped first are counted lost."""
        return await self._events.poll(timeout_s)
