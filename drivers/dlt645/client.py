"""DL/T 645-2007 master for one RS-485 port, speaking our error family.

The port itself (opened exclusively, read and written from the event loop, so a slow
2400-baud meter never stalls it) is :class:`~smartpole.drivers.serial_port.AsyncSerialPort`;
this module turns its bytes into frames and requests into answers. One request is on the
bus at a time.

A meter's late answer to a read that timed out carries the same address and DI as the
next read of that point: if it came while that read waited, it would be taken for its
answer, a value from the past. So after a timeout in silence (a corrupt answer was the
meter's answer, spoilt: none is still to come), the same request goes out again only
once the line has been quiet for one more timeout, and what arrives meanwhile is dropped
and counted (``late_frames``). Only an answer later than twice the timeout could still be
mistaken. Other requests do not wait (another meter or DI tells the late answer apart),
so a dead meter costs its neighbours no more than its own timeout.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Final

import structlog

from smartpole.drivers.dlt645.frame import (
    READ_ADDRESS,
    READ_DATA,
    WILDCARD_ADDRESS,
    Frame,
    FrameReader,
    address_matches,
    decode_bcd,
    normalize_address,
    parse_address_reply,
    parse_read_reply,
    read_address_request,
    read_data_request,
)
from smartpole.drivers.dlt645.profile import Dlt645PointSpec
from smartpole.drivers.errors import DeviceTimeoutError, ProtocolError, TransportError
from smartpole.drivers.lifecycle import Lifecycle
from smartpole.drivers.line import frame_gap_s
from smartpole.drivers.serial_port import AsyncSerialPort

log = structlog.get_logger(__name__)

# Silence after a partial frame that settles it: 3.5 characters of 11 bits (start, 8 data,
# parity, stop), never shorter than what USB adapters' latency timers can hold bytes back.
_MIN_LINE_GAP_S: Final = 0.05
_PARITIES: Final = ("N", "E", "O")  # what meters are set to; mark and space are not


class Dlt645Client(Lifecycle):
    """One serial port. Not shared: exactly one bus task owns an instance.

    ``crc_errors`` and ``garbage_bytes`` count, over the client's life, candidate frames
    with a wrong checksum and received bytes that were thrown away (wake-up ``FE`` bytes
    excluded); they tell a noisy or mis-configured line (wrong baud rate or parity) from a
    silent meter.
    """

    def __init__(
        self,
        port: str,
        *,
        baudrate: int = 2400,
        parity: str = "E",
        stopbits: int = 1,
        timeout_s: float = 1.0,
    ) -> None:
        if parity not in _PARITIES:
            raise ValueError(f"parity must be one of {sorted(_PARITIES)}, got {parity!r}")
        super().__init__()
        self._port = AsyncSerialPort(  # checks stopbits
            port,
            baudrate=baudrate,
            parity=parity,
            stopbits=stopbits,
            on_data=self._on_data,
            on_failure=self._on_port_failure,
        )
        if baudrate <= 0 or not timeout_s > 0:
            raise ValueError(f"bad settings: baudrate={baudrate} timeout_s={timeout_s}")
        self.port = port
        self.timeout_s = timeout_s
        self._line_gap_s = max(frame_gap_s(baudrate), _MIN_LINE_GAP_S)
        self._reader = FrameReader()
        self._frames: asyncio.Queue[Frame] = asyncio.Queue()
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._late_until = 0.0  # monotonic end of the quiet period after the last timeout
        self._late_request = b""  # the request that timed out
        self.late_frames = 0  # valid frames nobody was waiting for (late answers), dropped

    # ----- life cycle (``async with`` through Lifecycle's hooks) -----

    async def _start(self) -> None:
        await self.open()

    def _release(self) -> None:
        self.close()

    @property
    def is_open(self) -> bool:
        return self._port.is_open

    @property
    def crc_errors(self) -> int:
        return self._reader.crc_errors

    @property
    def garbage_bytes(self) -> int:
        return self._reader.garbage_bytes

    async def open(self) -> None:
        """Open and configure the port; TransportError if it is missing or unusable."""
        self._port.open()  # exclusively: a second master on the same bus would garble both
        self._frames = asyncio.Queue()
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        port = self._port
        log.debug(
            "dlt645_port_open",
            port=self.port,
            baudrate=port.baudrate,
            bytesize=8,
            parity=port.parity,
            stopbits=port.stopbits,
        )

    def close(self) -> None:
        """Release the descriptor; safe to call twice and from a cancelled task."""
        self._port.close()
        self._wake.set()  # a transaction still waiting sees the port gone at once

    # ----- requests -----

    async def read(self, address: str, di: int, spec: Dlt645PointSpec) -> float:
        """Read one value by data identifier and decode it with the point's format."""
        data = await self.read_raw(address, di)
        if len(data) != spec.byte_length:
            raise ProtocolError(
                f"meter {address} sent {len(data)} value bytes for DI {di:08X}, "
                f"format {spec.format} takes {spec.byte_length}"
            )
        return decode_bcd(data, spec.format, spec.signed)

    async def read_raw(self, address: str, di: int) -> bytes:
        """The value bytes of DI ``di`` (BCD, LSB first); DeviceExceptionError on 0xD1."""
        address = normalize_address(address)
        request = read_data_request(address, di)

        def answers(frame: Frame) -> bool:
            if not self._answers(frame, address, READ_DATA):
                return False
            # A late answer to an earlier read (a timed-out one) carries another DI.
            return frame.is_abnormal or frame.data[:4] == di.to_bytes(4, "little")

        frame = await self._transact(request, answers, f"meter {address}")
        return parse_read_reply(frame, di)

    async def read_address(self) -> str:
        """Ask whichever meter is on the bus for its address (only one meter may listen)."""
        request = read_address_request()

        def answers(frame: Frame) -> bool:
            return self._answers(frame, WILDCARD_ADDRESS, READ_ADDRESS)

        frame = await self._transact(request, answers, "any meter")
        return parse_address_reply(frame)

    @staticmethod
    def _answers(frame: Frame, address: str, function: int) -> bool:
        """A reply to ``function`` from a meter ``address`` reaches; anything else on the bus
        (our own echo, another meter, another master's traffic) is ignored."""
        return (
            frame.is_reply
            and frame.function == function
            and address_matches(address, frame.address)
        )

    async def _transact(self, request: bytes, answers: Callable[[Frame], bool], who: str) -> Frame:
        async with self._lock:
            late = self._late_until - time.monotonic()
            if request == self._late_request and late > 0:
                await asyncio.sleep(late)  # the line's discipline after a timeout, not sync
            self._port.check()
            self._discard_input()
            crc_before, garbage_before = self.crc_errors, self.garbage_bytes
            started = time.monotonic()
            try:
                async with asyncio.timeout(self.timeout_s):
                    await self._port.write(request)
                    while True:
                        frame = await self._next_frame()
                        if answers(frame):
                            return frame
                        log.debug("dlt645_ignored_frame", port=self.port, frame=frame)
            except TimeoutError:
                self._settle()
                waited = time.monotonic() - started
                crc = self.crc_errors - crc_before
                garbage = self.garbage_bytes - garbage_before
                if not (crc or garbage):  # silence: its answer may still come
                    self._late_until = time.monotonic() + self.timeout_s
                    self._late_request = request
                message = f"no valid reply from {who} within {waited:.2f} s"
                if crc or garbage:
                    message += (
                        f"; a corrupt reply was seen ({crc} checksum error(s), "
                        f"{garbage} garbage bytes)"
                    )
                raise DeviceTimeoutError(message) from None

    # ----- received bytes -----

    def _discard_input(self) -> None:
        """Drop what arrived since the last transaction (late answers, noise); it still
        passes the frame reader, whose counters see it."""
        dropped = len(self._reader.feed(self._port.discard_input()))
        self._reader.clear()
        while not self._frames.empty():
            self._frames.get_nowait()
            dropped += 1
        if dropped:
            self.late_frames += dropped
            log.debug("dlt645_late_frames_dropped", port=self.port, frames=dropped)

    def _settle(self) -> None:
        """The wait is over: account for half-received bytes as garbage."""
        for frame in self._reader.flush():
            self._frames.put_nowait(frame)

    async def _next_frame(self) -> Frame:
        while self._frames.empty():
            self._port.check()
            self._wake.clear()
            if not self._reader.pending:
                await self._wake.wait()
                continue
            # Bytes of an unfinished candidate frame: if the line goes quiet they will never
            # complete it, and a real reply may hide behind a false 68 among them.
            try:
                async with asyncio.timeout(self._line_gap_s):
                    await self._wake.wait()
            except TimeoutError:
                self._settle()
        return self._frames.get_nowait()

    def _on_data(self, data: bytes) -> None:
        for frame in self._reader.feed(data):
            self._frames.put_nowait(frame)
        self._wake.set()

    def _on_port_failure(self, failure: TransportError) -> None:
        self._wake.set()  # a transaction waiting for a frame sees the failure at once
        log.warning("dlt645_port_failed", port=self.port, error=str(failure.__cause__))
