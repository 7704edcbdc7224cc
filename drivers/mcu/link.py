"""The reliable host-to-MCU transport of the pole-MCU bridge (PROTOCOL.md section 2).

Bytes and frames are :class:`~smartpole.drivers.mcu.port.FramePort`'s business: its reader
callback hands each MCU frame to this state machine, which runs synchronously in it; frames
to send go to its writer task; one loop timer is the retransmission timer. Nothing here
awaits while holding protocol state, so it is never seen half-updated, and nothing blocks
the loop.

Host to MCU, frames are numbered modulo 16 and at most ``window`` are unacknowledged (1
until the client has the dictionary). Messages queued while the window is full are packed
together into the next frame (up to 59 bytes), which is what keeps a pipelined client close
to the wire's limit. Every MCU frame acknowledges the frames before its ``seq``; a NAK naming
an unacknowledged frame, or the RFC 6298 timer (:mod:`.rto`, Karn's rule) expiring, resends
that frame and all after it (go-back-N), and NAKs naming the same frame are then ignored for
one RTO. An MCU frame naming a ``seq`` outside the unacknowledged range means the two sides
disagree (the host restarted, or the MCU reset): the link adopts the MCU's ``expected``,
renumbers and resends its unacknowledged frames, counts a *sequence resync* and tells its
owner (``on_resync``), who re-identifies.

MCU to host, frames are never retransmitted: non-empty payloads go to ``on_payload`` as they
come, and recovering a lost answer is the client's business (it re-requests).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Final

import structlog

from smartpole.drivers.errors import TransportError
from smartpole.drivers.lifecycle import AsyncClosing
from smartpole.drivers.mcu.frame import MAX_FRAME, MIN_FRAME, SEQ_MODULO, Frame, encode_frame
from smartpole.drivers.mcu.port import FramePort
from smartpole.drivers.mcu.rto import RtoEstimator
from smartpole.drivers.mcu.stats import LinkStats

log = structlog.get_logger(__name__)

DEFAULT_BAUDRATE: Final = 115200
MAX_WINDOW: Final = 8
IDENTIFY_WINDOW: Final = 1


@dataclass
class _Sent:
    seq: int
    payload: bytes
    sent_at: float
    acked: asyncio.Future[bool]  # True once acknowledged, False if the link closed first
    retransmitted: bool = False


@dataclass
class _Queued:
    message: bytes
    framed: asyncio.Future[asyncio.Future[bool]]


class McuLink(AsyncClosing):
    """One serial port to one MCU. ``on_payload(bytes)`` receives every non-empty payload
    from the MCU, ``on_resync()`` a sequence resync, ``on_failure(TransportError)`` the
    port failing under us; all run on the loop and must not raise."""

    def __init__(
        self,
        path: str,
        *,
        baudrate: int = DEFAULT_BAUDRATE,
        exclusive: bool = True,
        on_payload: Callable[[bytes], None] | None = None,
        on_resync: Callable[[], None] | None = None,
        on_failure: Callable[[TransportError], None] | None = None,
    ) -> None:
        if baudrate <= 0:
            raise ValueError(f"baudrate must be positive, got {baudrate}")
        self.path = path
        self.baudrate = baudrate
        self.on_payload = on_payload
        self.on_resync = on_resync
        self.on_failure = on_failure
        self._port = FramePort(
            path,
            baudrate=baudrate,
            exclusive=exclusive,
            on_frame=self._on_frame,
            on_failure=self._on_port_failure,
        )
        self._rto = RtoEstimator()
        self._counters = LinkStats()
        self._window = IDENTIFY_WINDOW
        self._max_payload = MAX_FRAME - MIN_FRAME
        self._next_seq = 0
        self._unacked: deque[_Sent] = deque()
        self._queue: deque[_Queued] = deque()
        self._nak_ignore: tuple[int, float] | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self._timer: asyncio.TimerHandle | None = None
        self._stalled = False

    # ----- life cycle (``async with`` through AsyncClosing) -------------------------------

    @property
    def is_open(self) -> bool:
        return self._port.is_open

    def open(self) -> None:
        """Open the port (TransportError if unusable); needs the running loop."""
        self._port.open()
        log.info("mcu_link_open", port=self.path, baudrate=self.baudrate)

    async def aclose(self) -> None:
        """Close the port; queued sends fail with TransportError. Safe to call twice."""
        was_open = self._port.is_open
        self._shutdown(TransportError(f"MCU link on {self.path} was closed"))
        await self._port.aclose()
        if was_open:
            log.info("mcu_link_closed", port=self.path, stats=self.stats)

    # ----- what the owner sees ------------------------------------------------------------

    @property
    def stats(self) -> LinkStats:
        """A snapshot of the counters, with the decoder's and the current SRTT / RTO."""
        snap = replace(self._counters)
        decoder = self._port.decoder
        snap.discards = decoder.discards
        snap.idle_drops = decoder.idle_drops
        snap.discarded_bytes = decoder.discarded_bytes + self._port.stale_bytes
        snap.srtt_ms = None if self._rto.srtt_s is None else self._rto.srtt_s * 1000
        snap.rto_ms = self._rto.rto_s * 1000
        return snap

    @property
    def counters(self) -> LinkStats:
        """The live counters, for the client to count what only it can see."""
        return self._counters

    @property
    def window(self) -> int:
        return self._window

    @property
    def unacknowledged(self) -> int:
        return len(self._unacked)

    @property
    def rto_s(self) -> float:
        return self._rto.rto_s

    def configure(self, *, window: int, max_frame: int = MAX_FRAME) -> None:
        """Use the MCU's declared window and frame size (``IDENTIFY_WINDOW`` before the
        dictionary is known). Frames already in flight stay; a smaller window just holds
        new ones back until enough are acknowledged."""
        if not 1 <= window <= MAX_WINDOW:
            raise ValueError(f"window must be 1..{MAX_WINDOW}, got {window}")
        if not MIN_FRAME < max_frame <= MAX_FRAME:
            raise ValueError(f"max_frame must be {MIN_FRAME + 1}..{MAX_FRAME}, got {max_frame}")
        self._window = window
        self._max_payload = max_frame - MIN_FRAME
        self._pump()

    async def send(self, message: bytes) -> asyncio.Future[bool]:
        """Queue one encoded message (or several, back to back) for the MCU; returns once
        it is in a frame handed to the writer, which waits while the window is full. The
        link then retransmits it until acknowledged. Cancelled before that, the message is
        not sent at all.

        The future returned becomes True when the MCU acknowledges the frame (it has
        processed the message, and its answers, if any, come with or right after that
        acknowledgement), or False if the link closes first."""
        if not message or len(message) > self._max_payload:
            raise ValueError(f"a message must be 1..{self._max_payload} bytes, not {len(message)}")
        self._port.check()
        loop = asyncio.get_running_loop()
        item = _Queued(bytes(message), loop.create_future())
        self._queue.append(item)
        self._idle.clear()
        self._pump()
        return await item.framed

    async def drain(self) -> None:
        """Until nothing is queued or unacknowledged (for rigs and benchmarks)."""
        await self._idle.wait()

    # ----- transmit -----------------------------------------------------------------------

    def _pump(self) -> None:
        """Frame queued messages while the window has room, packing as many as fit."""
        if not self._port.is_open:
            return
        now = self._port.now()
        while self._queue and len(self._unacked) < self._window:
            payload = bytearray()
            framed: list[asyncio.Future[asyncio.Future[bool]]] = []
            while self._queue:
                item = self._queue[0]
                if item.framed.done():  # its sender was cancelled
                    self._queue.popleft()
                    continue
                if payload and len(payload) + len(item.message) > self._max_payload:
                    break
                self._queue.popleft()
                payload += item.message
                framed.append(item.framed)
            if not framed:
                break
            sent = _Sent(self._next_seq, bytes(payload), now, self._port.loop.create_future())
            self._next_seq = (self._next_seq + 1) % SEQ_MODULO
            self._unacked.append(sent)
            self._counters.messages_sent += len(framed)
            self._transmit(sent)
            for future in framed:
                future.set_result(sent.acked)
            if self._timer is None:
                self._arm_timer()
        self._check_idle()

    def _transmit(self, sent: _Sent) -> None:
        self._port.write(encode_frame(sent.seq, sent.payload))
        self._counters.frames_sent += 1

    def _go_back(self, now: float) -> None:
        """Resend every unacknowledged frame, oldest first, and restart the timer."""
        for sent in self._unacked:
            sent.retransmitted = True
            sent.sent_at = now
            self._transmit(sent)
            self._counters.retransmits += 1
        self._arm_timer()

    # ----- the retransmission timer -------------------------------------------------------

    def _arm_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._unacked and self._port.is_open:
            self._timer = self._port.loop.call_later(self._rto.rto_s, self._on_rto)

    def _on_rto(self) -> None:
        self._timer = None
        if not self._unacked:
            return
        self._counters.rto_expiries += 1
        self._rto.back_off()
        if not self._stalled:
            self._stalled = True
            log.warning("mcu_link_unacknowledged", port=self.path, frames=len(self._unacked))
        self._go_back(self._port.now())

    # ----- receive ------------------------------------------------------------------------

    def _on_frame(self, frame: Frame, now: float) -> None:
        self._counters.frames_received += 1
        expected = frame.seq
        outstanding = len(self._unacked)
        base = (self._next_seq - outstanding) % SEQ_MODULO
        offset = (expected - base) % SEQ_MODULO
        if offset > outstanding:
            self._resync(expected, now)
        else:
            if offset:
                self._acknowledge(offset, now)
            if frame.nak:
                self._on_nak(expected, now)
        self._pump()  # new frames only now: the NAK cannot have named them
        if frame.payload and self.on_payload is not None:
            self.on_payload(frame.payload)

    def _acknowledge(self, count: int, now: float) -> None:
        last: _Sent | None = None
        for _ in range(count):
            last = self._unacked.popleft()
            if not last.acked.done():
                last.acked.set_result(True)
        if last is not None and not last.retransmitted:  # Karn's rule
            self._rto.sample(now - last.sent_at)
        if self._stalled:
            self._stalled = False
            log.info("mcu_link_acknowledging_again", port=self.path)
        if self._nak_ignore is not None and not any(
            sent.seq == self._nak_ignore[0] for sent in self._unacked
        ):
            self._nak_ignore = None
        self._arm_timer()  # RFC 6298 5.3: restart on new data acknowledged, stop when none
        self._check_idle()

    def _on_nak(self, expected: int, now: float) -> None:
        self._counters.naks += 1
        if not self._unacked:
            return  # names the next frame to send: nothing was lost
        ignore = self._nak_ignore
        if ignore is not None and ignore[0] == expected and now < ignore[1]:
            self._counters.naks_ignored += 1
            return
        self._go_back(now)
        self._nak_ignore = (expected, now + self._rto.rto_s)

    def _resync(self, expected: int, now: float) -> None:
        """Adopt the MCU's ``expected``, renumber what is unacknowledged from it, resend."""
        self._counters.seq_resyncs += 1
        log.warning(
            "mcu_link_sequence_resync",
            port=self.path,
            mcu_expected=expected,
            host_next=self._next_seq,
            unacknowledged=len(self._unacked),
        )
        seq = expected
        for sent in self._unacked:
            sent.seq = seq
            sent.retransmitted = True  # Karn: its RTT means nothing now
            seq = (seq + 1) % SEQ_MODULO
        self._next_seq = seq
        self._nak_ignore = None
        if self._unacked:
            self._go_back(now)
        if self.on_resync is not None:
            self.on_resync()

    def _check_idle(self) -> None:
        if not self._unacked and not any(not item.framed.done() for item in self._queue):
            self._queue.clear()
            self._idle.set()
        else:
            self._idle.clear()

    # ----- failure ------------------------------------------------------------------------

    def _on_port_failure(self, failure: TransportError) -> None:
        log.error("mcu_link_port_failed", port=self.path, error=str(failure))
        self._shutdown(failure)
        if self.on_failure is not None:
            self.on_failure(failure)

    def _shutdown(self, failure: TransportError) -> None:
        """Stop the timer and fail every sender still waiting for room in the window."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._queue:
            item = self._queue.popleft()
            if not item.framed.done():
                item.framed.set_exception(failure)
        while self._unacked:
            sent = self._unacked.popleft()
            if not sent.acked.done():
                sent.acked.set_result(False)
        self._idle.set()
