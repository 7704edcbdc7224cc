"""Modbus TCP and RTU-over-TCP slave on loopback, for hardware-in-the-loop rigs and tests.

The pole's relay module and EV charger speak Modbus TCP; some serial gateways pass raw
RTU frames (address, PDU, CRC) through a TCP socket instead. One server class simulates
both, so the real agent and pymodbus' TCP transport run unmodified against it.

Fault semantics over TCP (``framing="tcp"``), per unit as in :mod:`.rtu_pty`:

* NO_ANSWER: the request is not executed and nothing is sent; the connection stays up.
* EXCEPTION: exception 4 (server device failure), request not executed.
* BAD_CRC: MBAP has no CRC, so the answer is sent with its last byte dropped: the header
  promises one byte more than arrives, the client waits for it and times out. The
  connection stays up; a client must discard a half-received answer before its next
  request (pymodbus clears its receive buffer on every send, so it recovers).
* GARBAGE: random bytes of the answer's length, then the server closes the connection.
  A random MBAP header leaves the client's stream unrecoverable (its length field can
  promise up to 64 KiB), so this models a device that babbles and resets the link.
* SLOW: the answer comes ``SLOW_EXTRA_S`` late, with its own transaction id; a client
  that has given up on it must skip it by transaction id.

BAD_CRC, GARBAGE and SLOW execute the request first, as on the serial simulator.

Over ``framing="rtu"`` the faults are exactly the serial ones (BAD_CRC flips the CRC,
GARBAGE is random bytes and the connection stays, like noise on a line), and units nobody
serves, as well as broadcasts to unit 0, get silence, as behind a real serial gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import Final, Literal, Self, TypeAlias

import structlog

from smartpole.drivers.errors import ProtocolError
from smartpole.drivers.modbus import mbap
from smartpole.drivers.modbus.pdu import ExceptionCode, Request, encode_exception
from smartpole.drivers.modbus.rtu import BROADCAST_UNIT
from smartpole.drivers.modbus.rtu import decode_request as decode_rtu_request
from smartpole.drivers.sim.faults import SLOW_EXTRA_S, FaultMode
from smartpole.drivers.sim.modbus_bank import (
    RegisterBank,
    exception_response,
    handle_pdu,
    handle_request,
)

log = structlog.get_logger(__name__)

Framing = Literal["tcp", "rtu"]

# RTU over TCP: how long the stream must stay quiet before a partial frame counts as
# finished (the serial 3.5-character gap, taken long enough for event-loop jitter).
RTU_IDLE_GAP_S: Final = 0.05
_READ_CHUNK: Final = 4096


@dataclass
class TcpSimStats:
    """Counters for rig assertions; ``bad_frames`` counts broken MBAP streams (TCP) or
    noise bursts (RTU), ``connections`` every connection accepted since start."""

    requests: int = 0
    answered: int = 0
    bad_frames: int = 0
    discarded_bytes: int = 0
    connections: int = 0
    open_connections: int = 0
    by_unit: dict[int, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Reply:
    data: bytes
    close_after: bool = False  # the answer broke the stream; drop the connection


# What to send (None: stay silent) and how long the device takes before sending it.
_Decision: TypeAlias = tuple[_Reply | None, float]


class ModbusTcpServer:
    """Serve the units in ``banks`` on ``host``:``port`` (``port=0``: any free port).

    Many clients may connect at once, but requests are executed one at a time across all
    of them, turnaround and SLOW delays included, because a device has one CPU (and a
    serial gateway one bus).

    Unit ids in TCP framing: a unit in ``banks`` is served; any other gets exception 0x0B
    (gateway target device failed to respond), which is what gateways and multi-unit
    devices such as Alfen chargers answer. Many single-device TCP products ignore the unit
    id instead; ``answer_any_unit=True`` (only with exactly one bank) serves every unit id
    from that bank, echoing the id asked for, and the bank's faults apply. Modbus TCP has
    no broadcast, so unit 0 is an ordinary id here.
    """

    def __init__(
        self,
        banks: Mapping[int, RegisterBank],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        framing: Framing = "tcp",
        turnaround_s: float = 0.0,
        faults: Mapping[int, FaultMode] | None = None,
        answer_any_unit: bool = False,
    ) -> None:
        if framing not in ("tcp", "rtu"):
            raise ValueError(f"framing must be 'tcp' or 'rtu', not {framing!r}")
        if turnaround_s < 0 or not 0 <= port <= 0xFFFF:
            raise ValueError(f"bad settings: port={port} turnaround_s={turnaround_s}")
        if answer_any_unit and (framing != "tcp" or len(banks) != 1):
            raise ValueError("answer_any_unit needs framing='tcp' and exactly one bank")
        self._banks = banks
        self._host = host
        self._port = port
        self._framing: Framing = framing
        self._turnaround_s = turnaround_s
        self._faults: dict[int, FaultMode] = dict(faults or {})
        self._any_unit = answer_any_unit
        self._stats = TcpSimStats()
        self._server: asyncio.Server | None = None
        self._bound: tuple[str, int] | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._closing = False
        self._cpu = asyncio.Lock()

    @property
    def host(self) -> str:
        """The address clients connect to; only valid while the server runs."""
        return self._address()[0]

    @property
    def port(self) -> int:
        """The bound port (the one the OS picked when ``port=0``); only while running."""
        return self._address()[1]

    @property
    def framing(self) -> Framing:
        return self._framing

    @property
    def stats(self) -> TcpSimStats:
        """A snapshot, so callers can compare before/after without aliasing live counters."""
        return replace(self._stats, by_unit=dict(self._stats.by_unit))

    def set_fault(self, unit_id: int, mode: FaultMode) -> None:
        """Change a unit's behaviour while running; applies from the next request on."""
        self._faults[unit_id] = FaultMode(mode)
        log.info("sim_fault_set", address=self._bound, unit=unit_id, fault=str(mode))

    def _address(self) -> tuple[str, int]:
        if self._bound is None:
            raise RuntimeError("ModbusTcpServer is not running")
        return self._bound

    async def __aenter__(self) -> Self:
        if self._server is not None:
            raise RuntimeError("ModbusTcpServer already running")
        self._cpu = asyncio.Lock()  # bound to this loop; nothing stale from a past run
        self._closing = False
        server = await asyncio.start_server(self._on_connect, self._host, self._port)
        addresses = {sock.getsockname()[:2] for sock in server.sockets}
        if len(addresses) != 1:
            server.close()
            await server.wait_closed()
            raise ValueError(f"{self._host!r} binds {sorted(addresses)}; give one address")
        (address,) = addresses
        self._server, self._bound = server, (str(address[0]), int(address[1]))
        log.info(
            "sim_started",
            address=self._bound,
            framing=self._framing,
            units=sorted(self._banks),
            answer_any_unit=self._any_unit,
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop listening, cancel every connection handler and wait until each has closed
        its socket. Cancelling this call is re-raised; handlers still close themselves."""
        server = self._server
        if server is None:
            return
        self._server = None
        self._closing = True
        server.close()  # listening sockets close now; no new connections
        # A connection accepted just before close() may register while we wait: loop.
        while self._handlers:
            pending = set(self._handlers)
            for task in pending:
                task.cancel()
            # wait() does not re-raise the handlers' CancelledError, but does raise ours.
            await asyncio.wait(pending)
        await server.wait_closed()
        self._bound = None
        log.info("sim_stopped", stats=self._stats)

    # ----- connections -----

    def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # A plain callback, not a coroutine, so the task is registered before anything
        # can await: aclose() then never misses a connection it has to close.
        peer = writer.get_extra_info("peername")
        task = asyncio.get_running_loop().create_task(
            self._handle(reader, writer, peer), name=f"modbus-tcp conn {peer}"
        )
        self._handlers.add(task)
        task.add_done_callback(self._on_handler_done)

    def _on_handler_done(self, task: asyncio.Task[None]) -> None:
        self._handlers.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("sim_connection_crashed", task=task.get_name(), exc_info=exc)

    async def _handle(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: object
    ) -> None:
        stats = self._stats
        stats.connections += 1
        stats.open_connections += 1
        log.debug("sim_connected", peer=peer)
        try:
            if not self._closing:
                if self._framing == "tcp":
                    await self._converse_tcp(reader, writer, peer)
                else:
                    await self._converse_rtu(reader, writer)
        except OSError as exc:  # the peer reset or vanished mid-answer
            log.debug("sim_connection_lost", peer=peer, error=str(exc))
        finally:
            stats.open_connections -= 1
            transport = writer.transport
            # Never wait on a peer that is not reading, nor when shutting down; either way
            # the socket is closed on the loop's next pass, even if we are cancelled below.
            if self._closing or transport.get_write_buffer_size():
                transport.abort()
            else:
                writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            log.debug("sim_disconnected", peer=peer)

    async def _converse_tcp(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: object
    ) -> None:
        buf = bytearray()
        while True:
            try:
                used, req = mbap.decode_request(buf)
            except ProtocolError as exc:
                self._stats.bad_frames += 1
                self._stats.discarded_bytes += len(buf)
                log.info("sim_bad_stream", peer=peer, error=str(exc))
                return
            if req is None:
                if not (chunk := await reader.read(_READ_CHUNK)):
                    self._stats.discarded_bytes += len(buf)
                    return
                buf += chunk
                continue
            del buf[:used]
            if not await self._answer(
                writer, req.unit_id, functools.partial(self._decide_tcp, req)
            ):
                return

    async def _converse_rtu(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        buf = bytearray()
        at_end = in_noise = False
        while True:
            used, req = decode_rtu_request(buf, at_end=at_end)
            if used == 0:
                at_end = False
                try:
                    # Only a partial frame waits for the line to go quiet.
                    async with asyncio.timeout(RTU_IDLE_GAP_S if buf else None):
                        chunk = await reader.read(_READ_CHUNK)
                except TimeoutError:
                    at_end = True
                    continue
                if not chunk:
                    self._stats.discarded_bytes += len(buf)
                    return
                buf += chunk
                continue
            del buf[:used]
            if req is None:
                self._stats.discarded_bytes += used
                if not in_noise:
                    in_noise = True
                    self._stats.bad_frames += 1
                continue
            in_noise = False
            if not await self._answer(
                writer, req.unit_id, functools.partial(self._decide_rtu, req)
            ):
                return

    async def _answer(
        self, writer: asyncio.StreamWriter, unit_id: int, decide: Callable[[], _Decision]
    ) -> bool:
        """Run one request on the device's single CPU and send its answer; False when the
        connection must be dropped afterwards."""
        async with self._cpu:
            stats = self._stats
            stats.requests += 1
            stats.by_unit[unit_id] = stats.by_unit.get(unit_id, 0) + 1
            reply, delay = decide()
            if reply is None:
                return True
            await asyncio.sleep(delay)  # the device thinking, not test synchronisation
        if writer.is_closing():
            return False
        writer.write(reply.data)
        await writer.drain()
        stats.answered += 1
        return not reply.close_after

    # ----- what a device answers; pure apart from the bank and the fault table -----

    def _delay_for(self, fault: FaultMode) -> float:
        return self._turnaround_s + (SLOW_EXTRA_S if fault is FaultMode.SLOW else 0.0)

    def _decide_tcp(self, req: mbap.MbapRequest) -> _Decision:
        served = req.unit_id
        if served not in self._banks and self._any_unit:
            (served,) = self._banks
        bank = self._banks.get(served)
        fault = FaultMode.NONE if bank is None else self._faults.get(served, FaultMode.NONE)
        self._log_request(req.unit_id, req.function, req.address, req.count, fault)
        if fault is FaultMode.NO_ANSWER:
            return None, 0.0
        if bank is None:
            pdu = encode_exception(req.function, ExceptionCode.GATEWAY_TARGET_FAILED_TO_RESPOND)
        elif fault is FaultMode.EXCEPTION:
            pdu = encode_exception(req.function, ExceptionCode.SERVER_DEVICE_FAILURE)
        elif req.error_code is not None:
            pdu = encode_exception(req.function, req.error_code)
        else:
            pdu = handle_pdu(bank, req.request)
        frame = mbap.encode_response(req.transaction_id, req.unit_id, pdu)
        delay = self._delay_for(fault)
        if fault is FaultMode.BAD_CRC:
            return _Reply(frame[:-1]), delay
        if fault is FaultMode.GARBAGE:
            return _Reply(os.urandom(len(frame)), close_after=True), delay
        return _Reply(frame), delay

    def _decide_rtu(self, req: Request) -> _Decision:
        if req.unit_id == BROADCAST_UNIT or req.unit_id not in self._banks:
            handle_request(self._banks, req)  # silent either way; faults are per unit
            return None, 0.0
        fault = self._faults.get(req.unit_id, FaultMode.NONE)
        self._log_request(req.unit_id, req.function, req.address, req.count, fault)
        if fault is FaultMode.NO_ANSWER:
            return None, 0.0
        delay = self._delay_for(fault)
        if fault is FaultMode.EXCEPTION:
            code = ExceptionCode.SERVER_DEVICE_FAILURE
            return _Reply(exception_response(req.unit_id, req.function, code)), delay
        frame = handle_request(self._banks, req)
        if frame is None:
            return None, 0.0
        if fault is FaultMode.BAD_CRC:
            frame = frame[:-2] + bytes(b ^ 0xFF for b in frame[-2:])
        elif fault is FaultMode.GARBAGE:
            frame = os.urandom(len(frame))
        return _Reply(frame), delay

    @staticmethod
    def _log_request(unit: int, function: int, address: int, count: int, fault: FaultMode) -> None:
        log.debug(
            "sim_request",
            unit=unit,
            function=function,
            address=address,
            count=count,
            fault=str(fault),
        )
