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
* BABBLE: random bytes instead of each answer, and, while any unit babbles, a burst of
  ``BABBLE_BYTES`` random bytes every ``BABBLE_EVERY_S`` on every connection, asked for
  or not; the server keeps the connection open. A device with a broken firmware or a
  serial gateway echoing line noise does this.

BAD_CRC, GARBAGE and SLOW execute the request first, as on the serial simulator.

Over ``framing="rtu"`` the faults are exactly the serial ones (BAD_CRC flips the CRC,
GARBAGE is random bytes and the connection stays, like noise on a line), and units nobody
serves, as well as broadcasts to unit 0, get silence, as behind a real serial gateway.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final, Literal, TypeAlias

import structlog

from smartpole.drivers.errors import ProtocolError
from smartpole.drivers.modbus import mbap
from smartpole.drivers.modbus.pdu import ExceptionCode, Request, encode_exception
from smartpole.drivers.modbus.rtu import BROADCAST_UNIT
from smartpole.drivers.sim.bus import BusServer, ReplyTiming
from smartpole.drivers.sim.faults import BABBLE_BYTES, BABBLE_EVERY_S, FaultMode
from smartpole.drivers.sim.modbus_bank import RegisterBank, handle_pdu, handle_request
from smartpole.drivers.sim.rtu_line import RtuListener, device_answer
from smartpole.drivers.sim.server import Line, TcpAddress

log = structlog.get_logger(__name__)

Framing = Literal["tcp", "rtu"]

# RTU over TCP: how long the stream must stay quiet before a partial frame counts as
# finished (the serial 3.5-character gap, taken long enough for event-loop jitter).
RTU_IDLE_GAP_S: Final = 0.05


@dataclass(frozen=True, slots=True)
class _Reply:
    data: bytes
    close_after: bool = False  # the answer broke the stream; drop the connection


# What to send (None: stay silent) and how long the device takes before sending it.
_Decision: TypeAlias = tuple[_Reply | None, float]


class ModbusTcpServer(BusServer[int]):
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

    ``stats.by_address`` counts requests by the unit they were addressed to, served or
    not; ``bad_frames`` counts broken MBAP streams (TCP) or noise bursts (RTU).
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
        if answer_any_unit and (framing != "tcp" or len(banks) != 1):
            raise ValueError("answer_any_unit needs framing='tcp' and exactly one bank")
        super().__init__(
            "modbus-tcp",
            timing=ReplyTiming(None, turnaround_s),
            faults=faults,
            tcp=TcpAddress(host, port),
        )
        self._banks = banks
        self._framing: Framing = framing
        self._any_unit = answer_any_unit
        self._cpu = asyncio.Lock()

    @property
    def framing(self) -> Framing:
        return self._framing

    def _start_fields(self) -> dict[str, object]:
        return {
            "framing": self._framing,
            "units": sorted(self._banks),
            "answer_any_unit": self._any_unit,
        }

    async def _start(self) -> None:
        self._cpu = asyncio.Lock()  # bound to this loop; nothing stale from a past run
        await super()._start()

    # ----- connections -----

    async def _converse(self, line: Line) -> None:
        if self._framing == "tcp":
            await self._converse_tcp(line)
        else:
            await self._converse_rtu(line)

    async def _converse_tcp(self, line: Line) -> None:
        babbler = self.spawn(self._babble(line), name=f"{self.name} babble {line.peer}")
        try:
            await self._converse_mbap(line)
        finally:
            babbler.cancel()

    async def _babble(self, line: Line) -> None:
        """Bytes nobody asked for, while any unit's fault is BABBLE."""
        while True:
            await asyncio.sleep(BABBLE_EVERY_S)  # the device's own rhythm, not test sync
            if any(self.fault_of(unit) is FaultMode.BABBLE for unit in self._banks):
                if not line.write(self._rng.randbytes(BABBLE_BYTES)):
                    return
                self._stats.unsolicited += 1
                self._progress()

    async def _converse_mbap(self, line: Line) -> None:
        buf = bytearray()
        while True:
            try:
                used, req = mbap.decode_request(buf)
            except ProtocolError as exc:
                self._stats.bad_frames += 1
                self._stats.discarded_bytes += len(buf)
                log.info("sim_bad_stream", peer=line.peer, error=str(exc))
                return
            if req is None:
                if not (chunk := await line.read()):
                    self._stats.discarded_bytes += len(buf)
                    return
                buf += chunk
                continue
            del buf[:used]
            if not await self._answer(line, req.unit_id, functools.partial(self._decide_tcp, req)):
                return

    async def _converse_rtu(self, line: Line) -> None:
        listener = RtuListener(line, gap_s=RTU_IDLE_GAP_S, stats=self._stats)
        while (req := await listener.next_request()) is not None:
            if not await self._answer(line, req.unit_id, functools.partial(self._decide_rtu, req)):
                return

    async def _answer(self, line: Line, unit_id: int, decide: Callable[[], _Decision]) -> bool:
        """Run one request on the device's single CPU and send its answer; False when the
        connection must be dropped afterwards."""
        async with self._cpu:
            self._stats.requests += 1
            self._stats.by_address[unit_id] += 1
            reply, delay = decide()
            if reply is None:
                self._progress()
                return True
            await asyncio.sleep(delay)  # the device thinking, not test synchronisation
        if not line.write(reply.data):
            return False
        await line.drain()
        self._stats.answered += 1
        self._progress()
        return not reply.close_after

    # ----- what a device answers; pure apart from the bank and the fault table -----

    def _decide_tcp(self, req: mbap.MbapRequest) -> _Decision:
        served = req.unit_id
        if served not in self._banks and self._any_unit:
            (served,) = self._banks
        bank = self._banks.get(served)
        fault = FaultMode.NONE if bank is None else self.fault_of(served)
        self._log_request(req.unit_id, req.function, req.address, req.count, fault)
        if fault is FaultMode.NO_ANSWER:
            self._stats.ignored += 1
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
        delay = self.timing.delay_s(0, 0, fault)
        if fault is FaultMode.BAD_CRC:
            return _Reply(frame[:-1]), delay
        if fault is FaultMode.GARBAGE:
            return _Reply(self._rng.randbytes(len(frame)), close_after=True), delay
        if fault is FaultMode.BABBLE:
            return _Reply(self._rng.randbytes(len(frame))), delay
        return _Reply(frame), delay

    def _decide_rtu(self, req: Request) -> _Decision:
        bank = self._banks.get(req.unit_id)
        if req.unit_id == BROADCAST_UNIT or bank is None:
            handle_request(self._banks, req)  # silent either way; faults are per unit
            return None, 0.0
        fault = self.fault_of(req.unit_id)
        self._log_request(req.unit_id, req.function, req.address, req.count, fault)
        reply = device_answer(self, req.unit_id, bank, req, fault)
        if reply is None:
            self._stats.ignored += 1
            return None, 0.0
        return _Reply(reply), self.timing.delay_s(0, 0, fault)

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
