"""Pelco-D client for one RS-485 port: fire-and-forget commands plus position read-back.

The port is a :class:`~smartpole.drivers.serial_port.AsyncSerialPort` (pyserial sets the
line, the event loop reads and writes the descriptor), so nothing ever blocks the event
loop; this module frames its bytes and matches answers to queries. One transaction is on
the bus at a time, because a two-wire RS-485 line is half-duplex: a command sent while a
camera answers would collide.

Pelco-D has no transaction id, so a reply is matched by address and response code only.
Bytes already waiting when a query is sent are discarded first (on a half-duplex bus
they can only be stale), which keeps a late answer from a previous query or line noise
from being taken for the new answer; a late answer arriving *during* the next query of the
same axis cannot be told apart and is a protocol limitation.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Final

import structlog

from smartpole.drivers.errors import (
    DeviceTimeoutError,
    ProtocolError,
    TransportError,
)
from smartpole.drivers.lifecycle import Lifecycle
from smartpole.drivers.pelco_d import protocol
from smartpole.drivers.pelco_d.profile import PelcoDProfile
from smartpole.drivers.pelco_d.protocol import Command
from smartpole.drivers.serial_port import AsyncSerialPort

log = structlog.get_logger(__name__)

_MAX_RX: Final = 4096  # a buffer this full is line noise; keep only its tail
DEFAULT_TOLERANCE: Final = 10  # hundredths of a degree that count as "not moving"
_MAX_POLL_INTERVAL_S: Final = 0.1

# Used for addresses the caller gave no profile for: assume nothing optional.
GENERIC_PROFILE: Final = PelcoDProfile(
    model="generic Pelco-D camera", manufacturer="unknown", protocol="pelco-d"
)


@dataclass
class ClientStats:
    """Counters for diagnostics; ``stats`` hands out snapshots."""

    frames_sent: int = 0
    replies: int = 0  # answers that matched a pending query
    stray_frames: int = 0  # valid frames nobody was waiting for (echo, late answers)
    bad_checksums: int = 0
    garbage_bytes: int = 0
    timeouts: int = 0


class PelcoDClient(Lifecycle):
    """One serial port with one or more cameras on it. Not shared between tasks' owners:
    concurrent calls are allowed but are serialised on the bus."""

    def __init__(
        self,
        port: str,
        *,
        baudrate: int = 2400,
        parity: str = "N",
        stopbits: int = 1,
        timeout_s: float = 0.5,
        profile: PelcoDProfile | None = None,
        profiles: Mapping[int, PelcoDProfile] | None = None,
    ) -> None:
        super().__init__()
        # Exclusive like the Modbus RTU and DL/T 645 ports: a second master on the same
        # line (a technician's tool, a stale daemon) would garble both sides' frames.
        self._port = AsyncSerialPort(  # checks the parity letter and stop bits
            port,
            baudrate=baudrate,
            parity=parity,
            stopbits=stopbits,
            exclusive=True,
            on_data=self._on_data,
            on_failure=self._broken,
        )
        if baudrate <= 0 or timeout_s <= 0:
            raise ValueError(f"bad settings: baudrate={baudrate} timeout_s={timeout_s}")
        self.port = port
        self.baudrate = baudrate
        self.parity = parity
        self.stopbits = stopbits
        self.timeout_s = timeout_s
        self._default_profile = profile or GENERIC_PROFILE
        self._profiles = dict(profiles or {})
        self._rx = bytearray()
        self._waiting: tuple[int, int, asyncio.Future[Command]] | None = None
        self._bus = asyncio.Lock()
        self._stats = ClientStats()

    # ----- lifecycle (``async with`` through Lifecycle's hooks) ----------------------------

    async def _start(self) -> None:
        self.open()

    def _release(self) -> None:
        self.close()

    @property
    def is_open(self) -> bool:
        return self._port.is_open

    @property
    def stats(self) -> ClientStats:
        return replace(self._stats)

    def profile_for(self, address: int) -> PelcoDProfile:
        return self._profiles.get(address, self._default_profile)

    def open(self) -> None:
        """Open and configure the port, then hand it to the event loop (needs a running
        loop); TransportError if it is missing, locked by another master or unusable."""
        self._port.open()
        self._rx.clear()
        log.info(
            "pelco_d_open",
            port=self.port,
            baudrate=self.baudrate,
            parity=self.parity,
            stopbits=self.stopbits,
        )

    def close(self) -> None:
        """Release the port; anything still waiting on it fails with TransportError."""
        was_open = self._port.is_open
        self._port.close()  # a write in progress fails too
        if was_open:
            log.info("pelco_d_closed", port=self.port, stats=self._stats)
        self._fail_waiters(TransportError(f"serial port {self.port} was closed"))
        self._rx.clear()

    # ----- public operations --------------------------------------------------------------

    async def send(self, cmd: Command) -> None:
        """Send one command. Pelco-D commands are not acknowledged: this returns once the
        frame is handed to the port, which says nothing about the camera having heard it."""
        async with self._bus:
            await self._write(protocol.encode(cmd))

    async def stop(self, address: int) -> None:
        await self.send(protocol.stop(address))

    async def set_preset(self, address: int, preset: int) -> None:
        """Store the current view as ``preset``; refuses numbers the profile reserves."""
        self._check_preset(address, preset)
        await self.send(protocol.set_preset(address, preset))

    async def clear_preset(self, address: int, preset: int) -> None:
        self._check_preset(address, preset)
        await self.send(protocol.clear_preset(address, preset))

    async def query_position(
        self, address: int, *, required: bool = False
    ) -> tuple[int, int] | None:
        """``(pan, tilt)`` in hundredths of a degree, or None if the camera stays silent
        (or answers garbage) within the timeout; ``required=True`` raises
        DeviceTimeoutError instead. A well-formed answer with an impossible value raises
        ProtocolError."""
        pan = await self._query(address, protocol.query_pan(address))
        tilt = None if pan is None else await self._query(address, protocol.query_tilt(address))
        if pan is None or tilt is None:
            if required:
                raise DeviceTimeoutError(
                    f"camera {address} on {self.port} did not report its position "
                    f"within {self.timeout_s} s"
                )
            return None
        return pan, tilt

    async def go_to_preset(
        self,
        address: int,
        preset: int,
        *,
        verify: bool = True,
        tolerance: int = DEFAULT_TOLERANCE,
    ) -> tuple[int, int] | None:
        """Call ``preset``; with ``verify`` and a camera that reports its position, wait
        for the head to stop and return where it ended (the read-back for the audit).

        "Stopped" means readings stay within ``tolerance`` hundredths of a degree of each
        other for the profile's ``settle_s``. The wait is bounded by the longest possible
        move at the profile's preset speed; past it, the last reading is returned (and a
        warning logged). None when not verifying, when the profile says the camera cannot
        report its position, or when it never answered.
        """
        if tolerance < 0:
            raise ValueError(f"tolerance must be >= 0 hundredths, got {tolerance}")
        self._check_preset(address, preset)
        profile = self.profile_for(address)
        await self.send(protocol.go_to_preset(address, preset))
        if not verify or not profile.supports_position_query:
            return None
        return await self._wait_until_still(address, profile, tolerance, f"preset {preset}")

    async def wait_until_still(
        self, address: int, *, tolerance: int = DEFAULT_TOLERANCE
    ) -> tuple[int, int] | None:
        """Poll the position until it holds still for the profile's ``settle_s`` (bounded
        like ``go_to_preset``); None if the camera never answers."""
        if tolerance < 0:
            raise ValueError(f"tolerance must be >= 0 hundredths, got {tolerance}")
        return await self._wait_until_still(address, self.profile_for(address), tolerance, "")

    async def move_to(
        self,
        address: int,
        pan: int,
        tilt: int,
        *,
        verify: bool = True,
        tolerance: int = DEFAULT_TOLERANCE,
    ) -> tuple[int, int] | None:
        """Absolute move (0x4B/0x4D, hundredths of a degree); like ``go_to_preset``, waits
        for the head to stop and returns where it ended when the camera reports positions."""
        if tolerance < 0:
            raise ValueError(f"tolerance must be >= 0 hundredths, got {tolerance}")
        commands = protocol.set_pan(address, pan), protocol.set_tilt(address, tilt)
        for cmd in commands:
            await self.send(cmd)
        profile = self.profile_for(address)
        if not verify or not profile.supports_position_query:
            return None
        return await self._wait_until_still(address, profile, tolerance, f"({pan}, {tilt})")

    # ----- internals ----------------------------------------------------------------------

    def _check_preset(self, address: int, preset: int) -> None:
        protocol.go_to_preset(address, preset)  # address and 1..255 checks, same messages
        problem = self.profile_for(address).preset_problem(preset)
        if problem is not None:
            raise ValueError(problem)

    async def _wait_until_still(
        self, address: int, profile: PelcoDProfile, tolerance: int, what: str
    ) -> tuple[int, int] | None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        # Worst case: half a turn at preset speed, the settle time, and a few lost answers.
        deadline = started + 1.5 * profile.longest_move_s() + profile.settle_s + 4 * self.timeout_s
        poll_s = min(_MAX_POLL_INTERVAL_S, profile.settle_s / 4)
        last: tuple[int, int] | None = None
        anchor: tuple[int, int] | None = None
        anchor_at = started
        while True:
            position = await self.query_position(address)
            now = loop.time()
            if position is not None:
                last = position
                if anchor is not None and _within(position, anchor, tolerance):
                    if now - anchor_at >= profile.settle_s:
                        log.info(
                            "pelco_d_move_done",
                            port=self.port,
                            address=address,
                            target=what,
                            pan=position[0],
                            tilt=position[1],
                            took_s=round(now - started, 3),
                        )
                        return position
                else:
                    anchor, anchor_at = position, now
            if now >= deadline:
                log.warning(
                    "pelco_d_move_unsettled",
                    port=self.port,
                    address=address,
                    target=what,
                    last=last,
                    waited_s=round(now - started, 3),
                )
                return last
            await asyncio.sleep(poll_s)  # pacing between polls, not synchronisation

    async def _query(self, address: int, request: Command) -> int | None:
        expected = protocol.REPLY_OF_QUERY[request.cmd2]
        loop = asyncio.get_running_loop()
        async with self._bus:
            self._discard_input()
            answer: asyncio.Future[Command] = loop.create_future()
            self._waiting = (address, expected, answer)
            try:
                await self._write(protocol.encode(request))
                async with asyncio.timeout(self.timeout_s):
                    reply = await answer
            except TimeoutError:
                self._stats.timeouts += 1
                log.debug("pelco_d_timeout", port=self.port, address=address, query=request.kind)
                return None
            finally:
                self._waiting = None
                if answer.done() and not answer.cancelled():
                    answer.exception()  # retrieved: a port failure is raised by _write
        try:
            _axis, value = protocol.parse_position_reply(reply)
        except ValueError as exc:
            raise ProtocolError(f"camera {address} on {self.port}: {exc}") from exc
        return value

    def _discard_input(self) -> None:
        """Drop what arrived before the question: on a half-duplex bus it is stale. Whole
        frames are counted as stray, the rest (a partial frame) as garbage."""
        self._take(self._port.discard_input())
        self._dispatch()
        if self._rx:
            self._stats.garbage_bytes += len(self._rx)
            self._rx.clear()

    async def _write(self, frame: bytes) -> None:
        await self._port.write(frame)
        self._stats.frames_sent += 1

    def _on_data(self, data: bytes) -> None:
        self._take(data)
        self._dispatch()

    def _take(self, data: bytes) -> None:
        """Append to the receive buffer; keep only the tail of a buffer grown that large."""
        self._rx += data
        if len(self._rx) > _MAX_RX:
            drop = len(self._rx) - _MAX_RX
            self._stats.garbage_bytes += drop
            del self._rx[:drop]

    def _dispatch(self) -> None:
        while self._rx:
            used, frame = protocol.decode(self._rx)
            if used == 0:
                return
            if frame is None:
                if self._rx[0] == protocol.SYNC:
                    self._stats.bad_checksums += 1
                self._stats.garbage_bytes += used
                del self._rx[:used]
                continue
            del self._rx[:used]
            self._on_frame(frame)

    def _on_frame(self, frame: Command) -> None:
        waiting = self._waiting
        if waiting is not None:
            address, expected, answer = waiting
            matches = frame.address == address and frame.cmd1 == 0 and frame.cmd2 == expected
            if matches and not answer.done():
                answer.set_result(frame)
                self._stats.replies += 1
                return
        self._stats.stray_frames += 1
        log.debug("pelco_d_stray_frame", port=self.port, address=frame.address, kind=frame.kind)

    def _broken(self, failure: TransportError) -> None:
        """The port failed under us (it stopped watching itself): fail whoever waits."""
        log.error("pelco_d_port_failed", port=self.port, error=str(failure.__cause__))
        self._fail_waiters(failure)

    def _fail_waiters(self, failure: TransportError) -> None:
        if self._waiting is not None and not self._waiting[2].done():
            self._waiting[2].set_exception(failure)


def _within(a: tuple[int, int], b: tuple[int, int], tolerance: int) -> bool:
    return all(protocol.angular_distance(x, y) <= tolerance for x, y in zip(a, b, strict=True))
