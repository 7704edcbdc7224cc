"""The life of one bus whatever its protocol: connect, serve, and get back up.

This is the one place that owns reconnecting. A protocol says how to connect (open the port,
and for a device with a session such as the cabinet MCU, run its connect sequence), how to
serve a connected link, and how to let go of it; this class retries with backoff, keeps
the bus's health, and runs commands while the link is down, so they fail at once instead
of waiting for a port that is not there. Drivers below it never reconnect by themselves.

A link that fails soon after it came up (a device that babbles and breaks its TCP stream,
a gateway that drops every connection) is reconnected with the same backoff as a failed
connect, never in a tight loop; only a link that stayed up ``stable_after_s`` is
reconnected at once. Every loss is counted (``BusHealth.link_losses``).
"""

from __future__ import annotations

import time

from smartpole.agent.buses.queue import CommandQueue
from smartpole.agent.core.health import BusHealth, DeviceHealth
from smartpole.drivers.errors import DriverError, TransportError

RETRY_MIN_S = 1.0
RETRY_MAX_S = 30.0
STABLE_AFTER_S = 10.0


class SupervisedBus:
    """Connects and serves until cancelled; survives every port, link or device failure."""

    #: first wait after a failed connect, doubling up to RETRY_MAX_S
    retry_min_s = RETRY_MIN_S
    #: a link lost sooner than this after connecting waits before the next connect
    stable_after_s = STABLE_AFTER_S

    def __init__(self, name: str, health: BusHealth) -> None:
        self.name = name
        self.health = health
        self.commands = CommandQueue()

    # ----- what a protocol provides -----

    @property
    def devices(self) -> list[DeviceHealth]:
        raise NotImplementedError

    def device_names(self) -> list[str]:
        raise NotImplementedError

    async def _connect(self) -> None:
        """Open the link (and the device's session, where it has one). TransportError when
        the port or endpoint is unusable; another DriverError when the device refused or
        did not answer the session's start."""
        raise NotImplementedError

    async def _serve(self) -> None:
        """Use the connected link until it fails (TransportError) or until the device's
        session is over (return): the next connect starts a new one on the same link."""
        raise NotImplementedError

    async def _disconnect(self) -> None:
        """Let go of the link; called after a failure and at the end, safe to repeat."""
        raise NotImplementedError

    def _link_lost(self, error: str) -> None:
        """The port or endpoint is unusable: every value read through it is now bad, and
        every device behind it offline."""
        self.health.unavailable(error)
        for device in self.devices:
            device.port_lost(error)

    def _connect_failed(self, exc: DriverError) -> None:
        """A connect failed; by default the link is what failed."""
        self._link_lost(str(exc))

    # ----- the loop -----

    async def run(self) -> None:
        if not self.device_names():
            return
        retry_s = self.retry_min_s
        try:
            while True:
                try:
                    await self._connect()
                except DriverError as exc:
                    if isinstance(exc, TransportError):
                        await self._disconnect()
                    self._connect_failed(exc)
                    await self._serve_commands_for(retry_s)
                    retry_s = min(retry_s * 2, RETRY_MAX_S)
                    continue
                self.health.connected()
                up_since = time.monotonic()
                try:
                    await self._serve()
                except TransportError as exc:
                    await self._disconnect()
                    self._link_lost(str(exc))
                    self.health.link_lost()
                    if time.monotonic() - up_since >= self.stable_after_s:
                        retry_s = self.retry_min_s
                        continue  # it had been working: try again at once
                    await self._serve_commands_for(retry_s)
                    retry_s = min(retry_s * 2, RETRY_MAX_S)
        finally:
            await self._disconnect()

    async def _serve_commands_for(self, seconds: float) -> None:
        """While the link is down, commands fail fast instead of waiting for it."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            await self.commands.run_next(left)
