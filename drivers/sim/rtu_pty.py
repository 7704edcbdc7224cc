"""Modbus RTU slave on a pseudo-terminal, for hardware-in-the-loop rigs and tests.

A pty gives clients a real tty path, so the production serial stack (pyserial, pymodbus'
serial transport, termios settings) runs unmodified against simulated devices, and faults
a real RS-485 bus produces (silence, corrupt CRC, noise, late answers) can be injected.

Banks that hold their own unit id (:class:`SelfAddressedBank`, a simulated device whose
profile has ``addressing``) are served as such devices are: they also answer their probe
unit, and a master's write to their address register moves them to the new unit id once
the write's answer is built (the answer still comes from the old id, like the device's).
A baud-code write is only recorded: a pty has no line speed, so the device keeps answering
whatever speed the client sets.

The devices share one pair of wires, each with its own CPU. A SLOW device's answer does
not hold the others up: it goes out when ready, and if it is on the wire (by wire time at
the line's baud rate) while the master sends a request or another device answers, both
frames are spoiled, as two transmitters on RS-485 spoil each other. That is what a late
answer costs its neighbours on a real bus, and what a master's budget for a slow device
has to keep rare.

``listen_window_s`` gives every device the listening real RS-485 devices and libmodbus have
(:class:`~smartpole.drivers.sim.rtu_line.LineListeners`): after a request for another unit,
the next frame within the window is taken for that unit's answer and ignored, so a master
that asks the next unit too soon after a silent one is not heard (``stats.ignored``).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Mapping
from functools import partial
from typing import Final, Protocol, runtime_checkable

import structlog

from smartpole.drivers.line import frame_gap_s, wire_time_s
from smartpole.drivers.modbus.crc import crc16_modbus
from smartpole.drivers.modbus.pdu import ExceptionCode, Request, RequestRefusedError
from smartpole.drivers.modbus.rtu import BROADCAST_UNIT, encode_request
from smartpole.drivers.sim.bus import BusServer, ReplyTiming, sleep_until
from smartpole.drivers.sim.faults import FaultMode
from smartpole.drivers.sim.modbus_bank import RegisterBank, handle_request
from smartpole.drivers.sim.rtu_line import LineListeners, RtuListener, device_answer
from smartpole.drivers.sim.server import Line

log = structlog.get_logger(__name__)

# A pty has no line timing and the event loop can delay a read by milliseconds, so the
# RTU 3.5-character silence that ends a frame is never taken shorter than this.
_MIN_FRAME_GAP_S: Final = 0.05
_MAX_PENDING_TX: Final = 4096
# How long a transmission is remembered for late answers to collide with.
_AIR_MEMORY_S: Final = 10.0

_Span = tuple[float, float]  # a frame on the wire: (start, end), monotonic seconds


@runtime_checkable
class SelfAddressedBank(Protocol):
    """A bank that keeps its own unit id and may be moved by a master (devices.SimulatedBank)."""

    @property
    def probe_unit(self) -> int | None: ...

    def attach(
        self, unit_id: int, *, baudrate: int | None = None, mover: Callable[[int, int], None]
    ) -> None: ...


class RtuPtyServer(BusServer[int]):
    """Serve the units in ``banks`` on a fresh pty whose slave path is ``.path``.

    Requests are answered strictly one after another, like a real half-duplex slave, while
    the line goes on being listened to. ``stats.by_address`` counts requests by the unit
    they were addressed to, served or not: a master's view of whom it asked.
    """

    def __init__(
        self,
        banks: Mapping[int, RegisterBank],
        *,
        baudrate: int = 9600,
        turnaround_s: float = 0.0,
        faults: Mapping[int, FaultMode] | None = None,
        listen_window_s: float = 0.0,
    ) -> None:
        super().__init__(
            "modbus-rtu",
            timing=ReplyTiming(baudrate, turnaround_s),
            faults=faults,
            max_pending=_MAX_PENDING_TX,
        )
        # Our own copy: re-addressing re-keys it, never the caller's mapping.
        self._banks: dict[int, RegisterBank] = dict(banks)
        self._moves: list[tuple[RegisterBank, int, int]] = []  # applied after each request
        for unit, bank in self._banks.items():
            if isinstance(bank, SelfAddressedBank):
                bank.attach(unit, baudrate=baudrate, mover=partial(self._request_move, bank))
        self._baudrate = baudrate
        self._frame_gap_s = max(frame_gap_s(baudrate), _MIN_FRAME_GAP_S)
        self._late: list[_Span] = []  # slow devices' answers, recent or still to go out
        self._air: deque[_Span] = deque()  # recent requests heard and answers sent
        self._listeners = LineListeners(listen_window_s)

    @property
    def units(self) -> list[int]:
        """The unit ids served now (re-addressing changes them)."""
        return sorted(self._banks)

    def _start_fields(self) -> dict[str, object]:
        return {"units": sorted(self._banks), "baudrate": self._baudrate}

    async def _converse(self, line: Line) -> None:
        # Each request travels with the moment it was taken off the line: its answer is timed
        # from then, so the simulator's own hand-over between tasks is not charged to the
        # wire (a rig measuring a master would otherwise see the simulator's overhead).
        queue: asyncio.Queue[tuple[Request, float]] = asyncio.Queue()
        self.spawn(self._serve_forever(line, queue), name=f"{self.name}-tx {line.peer}")
        listener = RtuListener(line, gap_s=self._frame_gap_s, stats=self._stats)
        while (request := await listener.next_request()) is not None:
            now = time.monotonic()
            span = (now, now + wire_time_s(len(encode_request(request)), self._baudrate))
            if _overlaps(span, self._late):
                # A slow device's late answer was on the wire: nobody understood this one.
                self._stats.collisions += 1
                self._stats.bad_frames += 1
                log.debug("sim_collision", unit=request.unit_id, what="request")
                continue
            self._on_air(span)
            if not self._heard(request, now):
                continue
            queue.put_nowait((request, now))

    def _heard(self, request: Request, now: float) -> bool:
        """False if the devices it is for took it for another unit's answer (listening)."""
        unit = request.unit_id
        addressed = {
            each
            for each, bank in self._banks.items()
            if each == unit
            or unit == BROADCAST_UNIT
            or (isinstance(bank, SelfAddressedBank) and bank.probe_unit == unit)
        }
        heard = self._listeners.hears(sorted(self._banks), addressed, now)
        if addressed and not heard:
            self._stats.requests += 1
            self._stats.by_address[unit] += 1
            self._stats.ignored += 1
            log.debug("sim_taken_for_an_answer", unit=unit)
            return False
        return True

    # ----- answer side: one request at a time, like a half-duplex slave -----

    async def _serve_forever(self, line: Line, queue: asyncio.Queue[tuple[Request, float]]) -> None:
        while True:
            request, arrived = await queue.get()
            await self._serve(line, request, arrived)
            self._progress()

    async def _serve(self, line: Line, req: Request, arrived: float) -> None:
        self._stats.requests += 1
        self._stats.by_address[req.unit_id] += 1
        fault = self.fault_of(req.unit_id)
        log.debug(
            "sim_request",
            unit=req.unit_id,
            function=req.function,
            address=req.address,
            count=req.count,
            fault=str(fault),
        )
        reply = self._reply_for(req, fault)
        if reply is None:
            return
        # Timed from the request's arrival: never sooner than copper allows; a device still
        # busy with the one before answers as soon as it is done (half duplex, one CPU).
        due = arrived + self.timing.delay_s(len(encode_request(req)), len(reply), fault)
        if fault is FaultMode.SLOW:
            # Its own CPU is busy, not the line: the others go on answering meanwhile.
            end = max(due, time.monotonic())
            span = (end - wire_time_s(len(reply), self._baudrate), end)
            self._late.append(span)
            self.spawn(self._answer_late(line, req, reply, span), name=f"{self.name}-late")
            return
        await sleep_until(due)
        end = time.monotonic()
        span = (end - wire_time_s(len(reply), self._baudrate), end)
        if _overlaps(span, self._late):
            self._stats.collisions += 1
            reply = _spoiled(reply)
            log.debug("sim_collision", unit=req.unit_id, what="answer")
        self._on_air(span)
        self._send(line, req, reply)

    async def _answer_late(self, line: Line, req: Request, reply: bytes, span: _Span) -> None:
        """A slow device's answer, sent once it is complete on the wire; spoiled by (and
        spoiling) whatever else was on the wire meanwhile."""
        await sleep_until(span[1])  # the device thinking
        if _overlaps(span, self._air):
            self._stats.collisions += 1
            reply = _spoiled(reply)
            log.debug("sim_collision", unit=req.unit_id, what="late answer")
        self._on_air(span)
        self._send(line, req, reply)
        self._progress()

    def _on_air(self, span: _Span) -> None:
        self._air.append(span)
        forget = span[0] - _AIR_MEMORY_S
        while self._air and self._air[0][1] < forget:
            self._air.popleft()
        self._late = [late for late in self._late if late[1] >= forget]

    def _send(self, line: Line, req: Request, reply: bytes) -> None:
        self._listeners.answer_seen()
        if line.write(reply):
            self._stats.answered += 1
            log.debug("sim_answer", unit=req.unit_id, function=req.function, size=len(reply))
        else:  # a client that does not read: the pty drops it, as a jammed line would
            log.warning("sim_tx_overrun", sim=self.name, dropped=len(reply))

    def _reply_for(self, req: Request, fault: FaultMode) -> bytes | None:
        try:
            return self._route(req, fault)
        finally:
            self._apply_moves()  # a re-addressed device moves once its answer is built

    def _route(self, req: Request, fault: FaultMode) -> bytes | None:
        if req.unit_id == BROADCAST_UNIT:
            return handle_request(self._banks, req)  # applied everywhere, answered nowhere
        bank = self._banks.get(req.unit_id)
        if bank is not None:
            return self._answer(req.unit_id, bank, req, fault)
        # A probe unit: every device with it answers, each with its own id and fault.
        replies = [
            reply
            for unit, each in self._banks.items()
            if isinstance(each, SelfAddressedBank) and each.probe_unit == req.unit_id
            if (reply := self._answer(unit, each, req, self.fault_of(unit))) is not None
        ]
        if len(replies) > 1:
            return _collision(replies)
        return replies[0] if replies else None  # silent for units nobody serves

    def _answer(
        self, unit: int, bank: RegisterBank, req: Request, fault: FaultMode
    ) -> bytes | None:
        reply = device_answer(self, unit, bank, req, fault)
        if fault is FaultMode.NO_ANSWER:
            self._stats.ignored += 1
        return reply

    # ----- re-addressing: banks move only between requests, never while one is served -----

    def _request_move(self, bank: RegisterBank, old: int, new: int) -> None:
        """A bank's address register is being written; refuse (exception 3) what the
        mapping cannot hold: two simulated devices on one unit id."""
        if self._banks.get(old) is not bank:
            raise RequestRefusedError(
                f"unit {old} is not this device's", ExceptionCode.SERVER_DEVICE_FAILURE
            )
        holder = self._banks.get(new)
        if (holder is not None and holder is not bank) or any(n == new for _, _, n in self._moves):
            log.warning("sim_unit_taken", sim=self.name, unit=old, to=new)
            raise RequestRefusedError(
                f"unit {new} is already served by another simulated device",
                ExceptionCode.ILLEGAL_DATA_VALUE,
            )
        self._moves.append((bank, old, new))

    def _apply_moves(self) -> None:
        moves, self._moves = self._moves, []
        for bank, old, new in moves:
            if self._banks.get(old) is bank:
                del self._banks[old]
            self._banks[new] = bank
            if old in self._faults:
                self._faults[new] = self._faults.pop(old)  # the fault is the device's
            log.info("sim_unit_moved", sim=self.name, unit=old, to=new)


def _overlaps(span: _Span, others: list[_Span] | deque[_Span]) -> bool:
    start, end = span
    return any(s < end and start < e for s, e in others if (s, e) != span)


def _spoiled(frame: bytes) -> bytes:
    """A frame another transmitter talked over: its CRC no longer checks."""
    return frame[:-1] + bytes([frame[-1] ^ 0xFF]) if frame else frame


def _collision(replies: list[bytes]) -> bytes:
    """Several devices answering at once on one pair of wires: the master hears a mix."""
    mixed = bytearray(max(len(r) for r in replies))
    for reply in replies:
        for i, byte in enumerate(reply):
            mixed[i] |= byte
    if crc16_modbus(bytes(mixed)) == 0:
        mixed[-1] ^= 0xFF  # never a valid frame by chance
    return bytes(mixed)
