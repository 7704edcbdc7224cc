"""Frames over a serial port: the byte side of :class:`~smartpole.drivers.mcu.link.McuLink`.

The port is an :class:`~smartpole.drivers.serial_port.AsyncSerialPort` (pyserial sets the
line; the event loop reads and writes the descriptor). Received bytes go through the frame
decoder in the loop's reader callback, and each complete MCU frame is handed to
``on_frame(frame, now)`` right there; a partial frame followed by ``RX_IDLE_MS`` of silence
is dropped even if nothing else arrives. Frames to send are appended to a buffer that one
writer task drains, so :meth:`FramePort.write` never waits and keeps the order of calls.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import structlog

from smartpole.drivers.errors import TransportError
from smartpole.drivers.mcu.frame import RX_IDLE_MS, Frame, FrameDecoder
from smartpole.drivers.serial_port import AsyncSerialPort

log = structlog.get_logger(__name__)


class FramePort:
    """One serial port carrying frames to and from an MCU."""

    def __init__(
        self,
        path: str,
        *,
        baudrate: int,
        exclusive: bool,
        on_frame: Callable[[Frame, float], None],
        on_failure: Callable[[TransportError], None],
    ) -> None:
        self.path = path
        self.decoder = FrameDecoder(from_mcu=True)
        self.stale_bytes = 0
        self._on_frame = on_frame
        self._on_failure = on_failure
        self._port = AsyncSerialPort(
            path,
            baudrate=baudrate,
            exclusive=exclusive,
            on_data=self._on_data,
            on_failure=self._failed,
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tx = bytearray()
        self._tx_ready = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._idle_timer: asyncio.TimerHandle | None = None
        self._reported = False

    @property
    def is_open(self) -> bool:
        return self._port.is_open

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise RuntimeError(f"{self.path} was never opened")
        return self._loop

    def now(self) -> float:
        return self._loop.time() if self._loop is not None else 0.0

    def open(self) -> None:
        """Open the port (TransportError if unusable) and start the writer. Bytes already
        waiting are half a frame of an earlier conversation: dropped and counted."""
        loop = asyncio.get_running_loop()
        self._port.open()
        self._loop = loop
        self._reported = False
        self.stale_bytes += len(self._port.discard_input())
        self.decoder.reset()
        self._tx.clear()
        self._tx_ready = asyncio.Event()
        self._writer = loop.create_task(self._write_forever(), name=f"mcu-writer {self.path}")

    async def aclose(self) -> None:
        """Close the port and stop the writer; safe to call twice."""
        writer = self._writer
        self._writer = None
        self._stop_idle_timer()
        self._port.close()
        if writer is not None:
            writer.cancel()
            await asyncio.wait({writer})

    def check(self) -> None:
        """TransportError unless the port is open and has not failed."""
        self._port.check()

    def write(self, frame: bytes) -> None:
        """Queue a frame for the writer; returns at once."""
        self._tx += frame
        with contextlib.suppress(RuntimeError):
            self._tx_ready.set()

    async def _write_forever(self) -> None:
        while True:
            await self._tx_ready.wait()
            self._tx_ready.clear()
            data = bytes(self._tx)
            self._tx.clear()
            try:
                await self._port.write(data)
            except TransportError as exc:
                if self._port.is_open:  # not our own close: tell the owner
                    self._failed(exc)
                return

    def _on_data(self, data: bytes) -> None:
        now = self.now()
        for frame in self.decoder.feed(data, now_ms=now * 1000):
            self._on_frame(frame, now)
        self._stop_idle_timer()
        if self.decoder.has_partial:
            self._idle_timer = self.loop.call_later((RX_IDLE_MS + 1) / 1000, self._idle_check)

    def _idle_check(self) -> None:
        """A partial frame is dropped after RX_IDLE_MS of silence even if nothing follows,
        so a length byte hit by noise cannot hold back the frames after it."""
        self._idle_timer = None
        if self.decoder.check_idle(self.now() * 1000):
            log.debug("mcu_partial_frame_dropped", port=self.path)

    def _stop_idle_timer(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None

    def _failed(self, failure: TransportError) -> None:
        self._stop_idle_timer()
        if not self._reported:  # the reader and the writer may both see it
            self._reported = True
            self._on_failure(failure)
