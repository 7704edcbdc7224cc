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
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tty
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from functools import partial
from types import TracebackType
from typing import Final, Protocol, Self, runtime_checkable

import structlog

from smartpole.drivers.line import frame_gap_s, reply_delay_s
from smartpole.drivers.modbus.crc import crc16_modbus
from smartpole.drivers.modbus.pdu import ExceptionCode, Request, RequestRefusedError
from smartpole.drivers.modbus.rtu import (
    BROADCAST_UNIT,
    decode_request,
    encode_frame,
    encode_request,
)
from smartpole.drivers.sim.faults import SLOW_EXTRA_S, FaultMode
from smartpole.drivers.sim.modbus_bank import (
    RegisterBank,
    exception_response,
    handle_pdu,
    handle_request,
)

log = structlog.get_logger(__name__)

# A pty has no line timing and the event loop can delay a read by milliseconds, so the
# RTU 3.5-character silence that ends a frame is never taken shorter than this.
_MIN_FRAME_GAP_S: Final = 0.05
_READ_CHUNK: Final = 4096
_MAX_PENDING_TX: Final = 4096


@runtime_checkable
class SelfAddressedBank(Protocol):
    """A bank that keeps its own unit id and may be moved by a master (devices.SimulatedBank)."""

    @property
    def probe_unit(self) -> int | None: ...

    def attach(
        self, unit_id: int, *, baudrate: int | None = None, mover: Callable[[int, int], None]
    ) -> None: ...


@dataclass
class SimStats:
    """Counters for rig assertions and dashboards; ``bad_frames`` counts noise bursts."""

    requests: int = 0
    answered: int = 0
    bad_frames: int = 0
    discarded_bytes: int = 0
    by_unit: dict[int, int] = field(default_factory=dict)


class RtuPtyServer:
    """Serve the units in ``banks`` on a fresh pty whose slave path is ``.path``.

    Requests are answered strictly one after another, like a real half-duplex slave.
    The server keeps its own slave fd open so the master never sees EIO when a client
    closes the port, and a client can reconnect to the same path.
    """

    def __init__(
        self,
        banks: Mapping[int, RegisterBank],
        *,
        baudrate: int = 9600,
        turnaround_s: float = 0.0,
        faults: Mapping[int, FaultMode] | None = None,
    ) -> None:
        if baudrate <= 0 or turnaround_s < 0:
            raise ValueError(f"bad timing: baudrate={baudrate} turnaround_s={turnaround_s}")
        # Our own copy: re-addressing re-keys it, never the caller's mapping.
        self._banks: dict[int, RegisterBank] = dict(banks)
        self._moves: list[tuple[RegisterBank, int, int]] = []  # applied after each request
        for unit, bank in self._banks.items():
            if isinstance(bank, SelfAddressedBank):
                bank.attach(unit, baudrate=baudrate, mover=partial(self._request_move, bank))
        self._baudrate = baudrate
        self._turnaround_s = turnaround_s
        self._faults: dict[int, FaultMode] = dict(faults or {})
        self._frame_gap_s = max(frame_gap_s(baudrate), _MIN_FRAME_GAP_S)
        self._stats = SimStats()
        self._rx = bytearray()
        self._tx = bytearray()
        self._in_noise = False
        self._queue: asyncio.Queue[Request] = asyncio.Queue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._master_fd: int | None = None
        self._slave_fd: int | None = None
        self._path: str | None = None
        self._gap_timer: asyncio.TimerHandle | None = None
        self._worker: asyncio.Task[None] | None = None

    @property
    def path(self) -> str:
        """The tty path clients open; only valid while the server runs."""
        if self._path is None:
            raise RuntimeError("RtuPtyServer is not running")
        return self._path

    @property
    def stats(self) -> SimStats:
        """A snapshot, so callers can compare before/after without aliasing live counters."""
        return replace(self._stats, by_unit=dict(self._stats.by_unit))

    @property
    def units(self) -> list[int]:
        """The unit ids served now (re-addressing changes them)."""
        return sorted(self._banks)

    def set_fault(self, unit_id: int, mode: FaultMode) -> None:
        """Change a unit's behaviour while running; applies from the next request on."""
        self._faults[unit_id] = FaultMode(mode)
        log.info("sim_fault_set", path=self._path, unit=unit_id, fault=str(mode))

    async def __aenter__(self) -> Self:
        if self._master_fd is not None:
            raise RuntimeError("RtuPtyServer already running")
        loop = asyncio.get_running_loop()
        self._queue = asyncio.Queue()  # bound to this loop; nothing stale from a past run
        with contextlib.ExitStack() as undo:
            master, slave = os.openpty()
            undo.callback(os.close, master)
            undo.callback(os.close, slave)
            tty.setraw(slave)  # no echo, no CR/LF mangling: RTU is binary
            os.set_blocking(master, False)
            path = os.ttyname(slave)
            loop.add_reader(master, self._on_readable)
            undo.pop_all()
        self._loop, self._master_fd, self._slave_fd, self._path = loop, master, slave, path
        self._worker = loop.create_task(self._serve_forever(), name=f"rtu-pty {path}")
        self._worker.add_done_callback(self._on_worker_done)
        log.info("sim_started", path=path, units=sorted(self._banks), baudrate=self._baudrate)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop serving; all fd cleanup happens before the first await, so a cancel
        arriving while we wait for the worker cannot leak descriptors."""
        master, slave, loop, worker = self._master_fd, self._slave_fd, self._loop, self._worker
        self._master_fd = self._slave_fd = self._path = None
        self._worker = None
        if self._gap_timer is not None:
            self._gap_timer.cancel()
            self._gap_timer = None
        if master is not None and loop is not None:
            loop.remove_reader(master)
            loop.remove_writer(master)
            os.close(master)
        if slave is not None:
            os.close(slave)
        self._rx.clear()
        self._tx.clear()
        self._in_noise = False
        if worker is not None:
            worker.cancel()
            # wait() does not re-raise the worker's CancelledError, but does raise ours.
            await asyncio.wait({worker})
            log.info("sim_stopped", stats=self._stats)

    @staticmethod
    def _on_worker_done(task: asyncio.Task[None]) -> None:
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("sim_worker_crashed", exc_info=exc)

    # ----- receive side: runs in loop callbacks, never blocks -----

    def _on_readable(self) -> None:
        fd, loop = self._master_fd, self._loop
        if fd is None or loop is None:
            return
        try:
            chunk = os.read(fd, _READ_CHUNK)
        except BlockingIOError:
            return
        except OSError as exc:
            # Only possible if our own slave fd vanished; stop rather than spin on it.
            log.error("sim_read_failed", path=self._path, error=str(exc))
            loop.remove_reader(fd)
            return
        if not chunk:  # EOF, same cause as above
            loop.remove_reader(fd)
            return
        if self._gap_timer is not None:
            self._gap_timer.cancel()
            self._gap_timer = None
        self._rx += chunk
        self._drain(at_end=False)
        if self._rx:
            self._gap_timer = loop.call_later(self._frame_gap_s, self._on_line_silent)

    def _on_line_silent(self) -> None:
        self._gap_timer = None
        self._drain(at_end=True)

    def _drain(self, *, at_end: bool) -> None:
        while self._rx:
            used, req = decode_request(self._rx, at_end=at_end)
            if used == 0:
                return
            del self._rx[:used]
            if req is None:
                self._stats.discarded_bytes += used
                if not self._in_noise:
                    self._in_noise = True
                    self._stats.bad_frames += 1
                    log.debug("sim_bad_frame", path=self._path)
                continue
            self._in_noise = False
            self._queue.put_nowait(req)

    # ----- answer side: one request at a time, like a half-duplex slave -----

    async def _serve_forever(self) -> None:
        while True:
            req = await self._queue.get()
            await self._serve(req)

    async def _serve(self, req: Request) -> None:
        stats = self._stats
        stats.requests += 1
        stats.by_unit[req.unit_id] = stats.by_unit.get(req.unit_id, 0) + 1
        fault = self._faults.get(req.unit_id, FaultMode.NONE)
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
        delay = reply_delay_s(
            len(encode_request(req)), len(reply), self._baudrate, self._turnaround_s
        )
        if fault is FaultMode.SLOW:
            delay += SLOW_EXTRA_S
        await asyncio.sleep(delay)  # emulates the device and the wire, not test sync
        if self._send(reply):
            stats.answered += 1
            log.debug("sim_answer", unit=req.unit_id, function=req.function, size=len(reply))

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
            if (reply := self._answer(unit, each, req, self._faults.get(unit, FaultMode.NONE)))
            is not None
        ]
        if len(replies) > 1:
            return _collision(replies)
        return replies[0] if replies else None  # silent for units nobody serves

    def _answer(
        self, unit: int, bank: RegisterBank, req: Request, fault: FaultMode
    ) -> bytes | None:
        """One device's answer, from its own unit id (also to a probe), spoilt by its fault."""
        if fault is FaultMode.NO_ANSWER:
            return None
        if fault is FaultMode.EXCEPTION:
            return exception_response(unit, req.function, ExceptionCode.SERVER_DEVICE_FAILURE)
        reply = encode_frame(unit, handle_pdu(bank, req))
        if fault is FaultMode.BAD_CRC:
            return reply[:-2] + bytes(b ^ 0xFF for b in reply[-2:])
        if fault is FaultMode.GARBAGE:
            return os.urandom(len(reply))
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
            log.warning("sim_unit_taken", path=self._path, unit=old, to=new)
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
            log.info("sim_unit_moved", path=self._path, unit=old, to=new)

    def _send(self, data: bytes) -> bool:
        """Write without blocking the loop; a full pty buffer queues, then drops like a
        jammed line would, rather than growing without bound while nobody reads."""
        if self._master_fd is None:
            return False
        if len(self._tx) + len(data) > _MAX_PENDING_TX:
            log.warning("sim_tx_overrun", path=self._path, dropped=len(data))
            return False
        self._tx += data
        self._flush()
        return True

    def _flush(self) -> None:
        fd, loop = self._master_fd, self._loop
        if fd is None or loop is None:
            return
        try:
            del self._tx[: os.write(fd, self._tx)]
        except BlockingIOError:
            pass  # pty buffer full: the writer callback below retries
        except OSError as exc:
            log.error("sim_write_failed", path=self._path, error=str(exc))
            self._tx.clear()
        if self._tx:
            loop.add_writer(fd, self._flush)
        else:
            loop.remove_writer(fd)


def _collision(replies: list[bytes]) -> bytes:
    """Several devices answering at once on one pair of wires: the master hears a mix."""
    mixed = bytearray(max(len(r) for r in replies))
    for reply in replies:
        for i, byte in enumerate(reply):
            mixed[i] |= byte
    if crc16_modbus(bytes(mixed)) == 0:
        mixed[-1] ^= 0xFF  # never a valid frame by chance
    return bytes(mixed)
