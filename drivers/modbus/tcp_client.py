"""Modbus TCP (MBAP) client: one request at a time over one asyncio connection.

Why not pymodbus here: a gateway polling five devices ten times a second spent most of
its per-request CPU in pymodbus' transaction manager and trace hook, and Modbus TCP is
simple enough that the whole exchange is a few struct operations
(bench/bench_poll_path.py measures both). The serial framings,
with their timing and resynchronisation problems, stay with pymodbus.

The stream rules, from the MBAP framing (``smartpole.drivers.modbus.mbap``):

* The length field alone delimits frames. A header with a protocol id other than 0 or an
  impossible length means the byte stream can no longer be trusted: there is no marker to
  resynchronise on, so the connection is dropped and the bus task reconnects.
* A frame whose transaction id is not the outstanding request's is a late answer to a
  request that already timed out; it is counted and skipped, never taken for the current
  answer (which a request-per-connection client could not tell apart).
* A half-received answer left over from a timed-out request is discarded when the next
  request is sent (the simulator's BAD_CRC fault over TCP truncates an answer).
* Bytes nobody asked for that break the stream between requests (a babbling device) are
  reported to the next request as garbage, once, with the link dropped: the device, not
  the line, is what the bus task then holds to account.

Bytes are handled in ``data_received`` with no copies in the usual case, where the whole
answer arrives in one segment; requests for a block are framed once and only their
transaction id changes from poll to poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import socket
import struct
from collections.abc import Sequence
from typing import Final

from smartpole.drivers.errors import ProtocolError, TransportError
from smartpole.drivers.modbus import pdu as pdus
from smartpole.drivers.modbus.faults import ReplyFault, ReplyTimeoutError
from smartpole.drivers.modbus.mbap import (
    HEADER_BYTES,
    MAX_LENGTH,
    MIN_LENGTH,
    MODBUS_PROTOCOL_ID,
    encode_adu,
    frame_size,
)
from smartpole.drivers.modbus.pdu import READ_FUNCTION
from smartpole.drivers.modbus.points import RegisterKind

_HEADER: Final = struct.Struct(">HHHB")  # transaction id, protocol id, length, unit id
_TID: Final = struct.Struct(">H")
_LENGTH_END: Final = 6  # bytes up to and including the length field
# Framed requests kept per client; a poll plan has a handful of blocks, diagnostics add a
# few more. Past this the cache starts over instead of growing without bound.
_MAX_CACHED_REQUESTS: Final = 256


class _End(enum.Enum):
    """How a request ended when no frame was handed over."""

    TIMEOUT = "timeout"
    BROKEN = "broken stream"  # a header that cannot be MBAP; the connection is closing
    LOST = "connection lost"


class _Link(asyncio.Protocol):
    """One connection. A fresh one per connect, so callbacks of an old socket that arrive
    late can never touch the state of the new one."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[bytes | _End] | None = None
        self.expected_tid = -1
        self.late_replies = 0
        self.discarded_bytes = 0
        self.broken = False  # the stream stopped being MBAP; the connection is going

    # ----- asyncio callbacks -----

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._finish(_End.LOST)

    def data_received(self, data: bytes) -> None:
        waiter = self.waiter
        if waiter is not None and not self.buffer and len(data) > HEADER_BYTES:
            # The usual case: exactly our answer, in one segment.
            tid, protocol, length, _ = _HEADER.unpack_from(data)
            if (
                tid == self.expected_tid
                and protocol == MODBUS_PROTOCOL_ID
                and len(data) == _LENGTH_END + length
                and MIN_LENGTH <= length <= MAX_LENGTH
            ):
                self.waiter = None
                if not waiter.done():  # cancelled, its task not yet resumed to see it
                    waiter.set_result(data)
                return
        self.buffer += data
        self._drain()

    # ----- framing -----

    def _drain(self) -> None:
        buf = self.buffer
        while buf:
            try:
                size = frame_size(buf)
            except ProtocolError:
                self._break()
                return
            if size is None or len(buf) < size:
                return
            frame = bytes(buf[:size])
            del buf[:size]
            tid = int.from_bytes(frame[0:2], "big")
            if self.waiter is not None and tid == self.expected_tid:
                self._finish(frame)
            else:
                self.late_replies += 1

    def _break(self) -> None:
        """The stream is not MBAP any more: nothing sound to skip to, so drop it."""
        self.discarded_bytes += len(self.buffer)
        self.buffer.clear()
        self.broken = True
        if self.transport is not None:
            self.transport.abort()
        self._finish(_End.BROKEN)

    def _finish(self, result: bytes | _End) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(result)

    def time_out(self, waiter: asyncio.Future[bytes | _End]) -> None:
        if self.waiter is waiter:
            self._finish(_End.TIMEOUT)

    def start(self, tid: int) -> asyncio.Future[bytes | _End]:
        """Arm for the answer to ``tid``; a partial answer to an earlier request goes."""
        if self.waiter is not None:
            raise RuntimeError("a Modbus TCP client runs one request at a time")
        if self.buffer:
            self.discarded_bytes += len(self.buffer)
            self.buffer.clear()
        waiter: asyncio.Future[bytes | _End] = asyncio.get_running_loop().create_future()
        self.waiter = waiter
        self.expected_tid = tid
        return waiter


class ModbusTcpClient:
    """One Modbus TCP endpoint. Not shared: the bus task that owns it serialises requests."""

    def __init__(self, host: str, port: int, *, timeout_s: float) -> None:
        self.host = host
        self.port = port
        self.timeout_s = timeout_s
        self.last_fault = ReplyFault.NO_ANSWER
        self._link: _Link | None = None
        self._tid = 0
        self._late_before = 0  # counters of links already closed
        self._discarded_before = 0
        # (unit id, function, address, count) of a read -> the framed request after its tid
        self._reads: dict[tuple[int, int, int, int], bytes] = {}

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def connected(self) -> bool:
        link = self._link
        return link is not None and link.transport is not None and not link.transport.is_closing()

    @property
    def stream_broken(self) -> bool:
        """Garbage broke the stream and the next request has yet to hear of it."""
        return self._link is not None and self._link.broken

    @property
    def late_replies(self) -> int:
        """Answers that came after their request had timed out, skipped by transaction id."""
        return self._late_before + (self._link.late_replies if self._link else 0)

    @property
    def discarded_bytes(self) -> int:
        """Bytes dropped as half answers or as a stream that stopped being MBAP."""
        return self._discarded_before + (self._link.discarded_bytes if self._link else 0)

    async def connect(self) -> None:
        if self.connected:
            return
        self.close()
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.timeout_s):
                transport, link = await loop.create_connection(_Link, self.host, self.port)
        except (OSError, TimeoutError) as exc:
            reason = str(exc) or "timed out"
            raise TransportError(f"cannot open TCP endpoint {self}: {reason}") from exc
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._link = link

    def close(self) -> None:
        link, self._link = self._link, None
        if link is None:
            return
        self._late_before += link.late_replies
        self._discarded_before += link.discarded_bytes
        if link.transport is not None:
            link.transport.close()

    async def read(self, kind: RegisterKind, address: int, count: int, unit_id: int) -> list[int]:
        """Read ``count`` registers or bits; bits come back as 0/1 integers."""
        function = READ_FUNCTION[kind]
        key = (unit_id, function, address, count)
        tail = self._reads.get(key)
        if tail is None:
            if len(self._reads) >= _MAX_CACHED_REQUESTS:
                self._reads.clear()
            tail = self._reads[key] = _frame(pdus.Request(unit_id, function, address, count))
        pdu = await self._transact(unit_id, function, tail)
        bits = kind.is_bit
        try:
            values = pdus.parse_bits(pdu, function) if bits else pdus.parse_registers(pdu, function)
        except ProtocolError as exc:
            raise self._fault(ReplyFault.GARBAGE, unit_id, f"({exc})") from exc
        if bits:
            if len(values) < count:
                raise ProtocolError(
                    f"unit {unit_id} returned {len(values)} bits, asked for {count}"
                )
            return values[:count]
        if len(values) != count:
            raise ProtocolError(
                f"unit {unit_id} returned {len(values)} registers, asked for {count}"
            )
        return values

    async def write(
        self, kind: RegisterKind, address: int, values: Sequence[int], unit_id: int
    ) -> None:
        """Write registers (FC 06/16) or coils (FC 05/15)."""
        words = tuple(values)
        if not words:
            raise ProtocolError("nothing to write")
        function = pdus.write_function(kind, len(words))
        if kind is RegisterKind.COIL:
            carried = tuple(1 if v else 0 for v in words)
            if function == pdus.WRITE_SINGLE_COIL:
                carried = (pdus.COIL_ON if carried[0] else 0,)
        elif any(not 0 <= w <= 0xFFFF for w in words):
            raise ProtocolError(f"register values out of 16-bit range: {list(words)}")
        else:
            carried = words
        req = pdus.Request(unit_id, function, address, len(words), carried)
        pdu = await self._transact(unit_id, function, _frame(req))
        try:
            pdus.parse_write_echo(pdu, function)
        except ProtocolError as exc:
            raise self._fault(ReplyFault.GARBAGE, unit_id, f"({exc})") from exc

    async def _transact(self, unit_id: int, function: int, tail: bytes) -> bytes:
        """Send one framed request and return the answer's PDU, checked for unit and
        function; exception answers raise DeviceExceptionError."""
        link = self._link
        if link is not None and link.broken:
            self.close()  # once: the next request finds the link gone
            raise self._fault(
                ReplyFault.GARBAGE, unit_id, "(bytes nobody asked for broke the stream)"
            )
        transport = None if link is None else link.transport
        if link is None or transport is None or transport.is_closing():
            raise TransportError(f"{self} is not connected")
        tid = self._tid = (self._tid + 1) & 0xFFFF
        waiter = link.start(tid)
        loop = asyncio.get_running_loop()
        timer = loop.call_later(self.timeout_s, link.time_out, waiter)
        try:
            transport.write(_TID.pack(tid) + tail)
            reply = await waiter
        finally:
            timer.cancel()
            if link.waiter is waiter:  # cancelled, or write() failed
                link.waiter = None
        if not isinstance(reply, bytes):
            if reply is _End.BROKEN:
                self.close()  # reported here; the next request finds the link gone
            raise self._failure(reply, link, unit_id)
        pdu = reply[HEADER_BYTES:]
        if reply[6] != unit_id and unit_id != 0:
            # Unit 0 is what single-device products that answer with their own id (0 or
            # 255) are configured with; pymodbus accepted any unit for it too.
            raise self._fault(ReplyFault.WRONG_UNIT, unit_id, f"(unit {reply[6]})")
        answered = pdu[0]
        if answered == function:
            return pdu
        if answered != function | pdus.EXCEPTION_FLAG:
            raise self._fault(ReplyFault.WRONG_FUNCTION, unit_id, f"(function {answered})")
        try:
            code = pdus.exception_code(pdu, function)
        except ProtocolError as exc:
            raise self._fault(ReplyFault.GARBAGE, unit_id, f"({exc})") from exc
        assert code is not None
        raise pdus.exception_error(code, unit_id)

    def _failure(self, end: _End, link: _Link, unit_id: int) -> Exception:
        if end is _End.LOST:
            return TransportError(f"{self}: connection lost")
        if end is _End.BROKEN:
            return self._fault(ReplyFault.GARBAGE, unit_id, "(not Modbus TCP; disconnected)")
        fault = ReplyFault.GARBAGE if link.buffer else ReplyFault.NO_ANSWER
        return self._fault(fault, unit_id, f"within {self.timeout_s:.2f} s")

    def _fault(self, fault: ReplyFault, unit_id: int, detail: str) -> ReplyTimeoutError:
        self.last_fault = fault
        return ReplyTimeoutError(f"{fault.value} from unit {unit_id} {detail}", fault)


def _frame(req: pdus.Request) -> bytes:
    """The request's ADU minus its transaction id, which changes from request to request."""
    try:
        adu = encode_adu(0, req.unit_id, pdus.encode_request(req))
    except (ValueError, OverflowError) as exc:
        raise ProtocolError(f"cannot frame {req}: {exc}") from exc
    return adu[2:]
