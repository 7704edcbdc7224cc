"""The pymodbus-backed client for the serial framings: RTU, and RTU over TCP.

Imported only when a pole has such a bus: pymodbus costs memory a TCP-only gateway does
not need (the daemon's budget is 60 MB).

pymodbus is configured not to reconnect by itself: the bus task that owns this client is the
one place that decides when to retry, so a dead port is retried with our backoff and
reported once instead of being retried silently inside the library.

pymodbus turns every bad reply (CRC error, garbage, another unit's answer) into the same
timeout. The bytes that did arrive are kept through its packet trace hook, so a timeout can
be told apart afterwards by our own RTU framer and counted for what it was; a technician
fixing a bus needs to know whether a device is silent or its wiring is noisy.

On a half-duplex RS-485 pair a master must not talk over a frame in progress: a slow
slave's late answer can still be on the wire when the next request is due. So a request
goes out only once the line has been quiet for the RTU inter-frame silence since the last
byte received (never waiting longer than one reply timeout: a line that babbles without
end must not stop the bus), and bytes that arrive while no request is outstanding (late
answers, noise) are counted (``stray_bytes``) and dropped with pymodbus' receive buffer
when the next request is sent, never taken for its answer.

A late answer that comes after the next request has gone out would be taken for that
request's answer if it has the same unit and function: RTU frames carry nothing else to
tell them apart. So after a timeout in silence, the next request to the same unit with
the same function waits until the line has been quiet for one more reply timeout; an
answer that comes in that time is a late answer, dropped and counted (``late_answers``,
and every byte in ``stray_bytes``). Only an answer later than twice the timeout could
still be mistaken, and a device that slow needs a longer timeout. Not after a corrupt
answer (that was the device's answer, spoilt: none is still to come).

Devices listen too: libmodbus and many RS-485 devices take the frame after a request for
another unit for that unit's answer, and ignore it (libmodbus waits up to 0.5 s for it).
After a request nobody answered, a request to any unit sent too soon is not heard, so
one dead device would take its neighbours offline with it. So after a timeout in silence
every request waits until ``listen_window_s`` after the unanswered request was sent (at
the default 0.5 s timeout and 0.6 s window, 0.1 s more per timeout): a dead device costs
its neighbours one timeout and that rest per probe.

It also speaks plain Modbus TCP, which the product no longer uses it for; the benchmarks
keep it as the baseline the TCP client is measured against.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Sequence
from typing import TYPE_CHECKING

from pymodbus import FramerType
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException
from pymodbus.pdu import ExceptionResponse, ModbusPDU

from smartpole.drivers.cancellation import raise_if_cancelled
from smartpole.drivers.errors import ProtocolError, TransportError
from smartpole.drivers.line import frame_gap_s
from smartpole.drivers.modbus.faults import ReplyFault, ReplyTimeoutError
from smartpole.drivers.modbus.pdu import exception_error
from smartpole.drivers.modbus.points import RegisterKind
from smartpole.drivers.modbus.rtu import classify_reply

if TYPE_CHECKING:
    from smartpole.drivers.modbus.client import Endpoint

# pymodbus logs every timeout at error level; the bus task reports failures once per
# episode instead, so the library's own chatter is kept out of the journal.
logging.getLogger("pymodbus").setLevel(logging.CRITICAL)

_Key = tuple[int, str]  # a request's unit and what it does, e.g. (1, "read holding")


class PymodbusClient:
    """One bus through pymodbus. Not shared: exactly one bus task owns an instance."""

    def __init__(self, endpoint: Endpoint, *, timeout_s: float) -> None:
        self.endpoint = endpoint
        self.timeout_s = timeout_s
        self._sent = b""
        self._received = bytearray()
        self._last_trace = b""
        self._outstanding = False  # a request is waiting for its answer
        self._last_rx = 0.0  # monotonic time the last byte arrived
        # The silence before talking: RTU frames on any carrier (a gateway's serial side too).
        self._silence_s = 0.0 if endpoint.framing == "tcp" else frame_gap_s(endpoint.baudrate)
        self.stray_bytes = 0  # arrived while no request was outstanding: late answers, noise
        self.late_answers = 0  # bursts that arrived in the quiet period after a timeout
        self._late_until = 0.0  # monotonic end of the quiet period after the last timeout
        self._late_key: _Key | None = None  # the unit and function that timed out
        self._late_seen = True  # this quiet period's late answer is counted already
        self._listeners_until = 0.0  # monotonic end of the listeners' window after a timeout
        self._client: AsyncModbusSerialClient | AsyncModbusTcpClient
        if endpoint.framing == "rtu":
            self._client = AsyncModbusSerialClient(
                endpoint.port,
                baudrate=endpoint.baudrate,
                bytesize=endpoint.bytesize,
                parity=endpoint.parity,
                stopbits=endpoint.stopbits,
                timeout=timeout_s,
                retries=0,
                reconnect_delay=0,
                trace_packet=self._trace,
            )
        else:
            self._client = AsyncModbusTcpClient(
                endpoint.host,
                port=endpoint.tcp_port,
                framer=FramerType.SOCKET if endpoint.framing == "tcp" else FramerType.RTU,
                timeout=timeout_s,
                retries=0,
                reconnect_delay=0,
                trace_packet=self._trace,
            )

    @property
    def connected(self) -> bool:
        return bool(self._client.connected)

    async def connect(self) -> None:
        if not await self._client.connect():
            self._client.close()
            what = "serial port" if self.endpoint.framing == "rtu" else "TCP endpoint"
            raise TransportError(f"cannot open {what} {self.endpoint}")

    def close(self) -> None:
        self._client.close()

    def _trace(self, sending: bool, data: bytes) -> bytes:
        if sending:
            self._sent = data
            self._received.clear()
            self._last_trace = b""
        else:
            # pymodbus passes its whole receive buffer each time; keep only what is new.
            new = data[len(self._last_trace) :] if data.startswith(self._last_trace) else data
            self._received += new
            self._last_trace = data
            self._last_rx = time.monotonic()
            if not self._outstanding:
                self.stray_bytes += len(new)
                if not self._late_seen and self._last_rx < self._late_until:
                    self._late_seen = True
                    self.late_answers += 1
        return data

    async def _quiet_line(self, key: _Key) -> None:
        """Until the quiet period after a timeout of ``key`` is over and nothing has arrived
        for the inter-frame silence, at most one timeout more."""
        if not self._silence_s:
            return
        if key == self._late_key and (late := self._late_until - time.monotonic()) > 0:
            await asyncio.sleep(late)  # the line's discipline, not synchronisation
        if (listening := self._listeners_until - time.monotonic()) > 0:
            await asyncio.sleep(listening)  # the devices' discipline, not synchronisation
        give_up = time.monotonic() + self.timeout_s
        while (wait := self._last_rx + self._silence_s - time.monotonic()) > 0:
            if time.monotonic() >= give_up:
                return
            await asyncio.sleep(wait)  # the line's silence, not synchronisation

    async def read(self, kind: RegisterKind, address: int, count: int, unit_id: int) -> list[int]:
        """Read ``count`` registers or bits; bits come back as 0/1 integers."""
        key = (unit_id, f"read {kind.value}")
        await self._quiet_line(key)
        client = self._client
        if kind is RegisterKind.HOLDING:
            call = client.read_holding_registers(address, count=count, device_id=unit_id)
        elif kind is RegisterKind.INPUT:
            call = client.read_input_registers(address, count=count, device_id=unit_id)
        elif kind is RegisterKind.COIL:
            call = client.read_coils(address, count=count, device_id=unit_id)
        else:
            call = client.read_discrete_inputs(address, count=count, device_id=unit_id)
        reply = await self._execute(call, unit_id, key)
        return _values_of(reply, kind, count, unit_id)

    async def write(
        self, kind: RegisterKind, address: int, values: Sequence[int], unit_id: int
    ) -> None:
        """Write registers (FC 06/16) or coils (FC 05/15)."""
        key = (unit_id, f"write {kind.value}")
        await self._quiet_line(key)
        client = self._client
        if kind is RegisterKind.COIL:
            bits = [bool(v) for v in values]
            call = (
                client.write_coil(address, bits[0], device_id=unit_id)
                if len(bits) == 1
                else client.write_coils(address, bits, device_id=unit_id)
            )
        elif kind is RegisterKind.HOLDING:
            words = list(values)
            call = (
                client.write_register(address, words[0], device_id=unit_id)
                if len(words) == 1
                else client.write_registers(address, words, device_id=unit_id)
            )
        else:
            raise ProtocolError(f"{kind.value} registers cannot be written")
        reply = await self._execute(call, unit_id, key)
        _raise_for_exception(reply, unit_id)

    async def _execute(self, call: Awaitable[ModbusPDU], unit_id: int, key: _Key) -> ModbusPDU:
        started = time.monotonic()
        self._outstanding = True
        try:
            reply: ModbusPDU = await call
        except ModbusIOException as exc:
            waited = time.monotonic() - started
            fault = self.last_fault(unit_id)
            if self._silence_s and fault is ReplyFault.NO_ANSWER:
                # Silence: its answer may still come. (A corrupt one was its answer, spoilt.)
                self._late_until = time.monotonic() + self.timeout_s
                self._late_key = key
                self._late_seen = False
                self._listeners_until = started + self.endpoint.listen_window_s
            if self.endpoint.framing == "rtu-over-tcp":
                # RTU frames carry no transaction id: a late answer would be taken for the
                # next request's. A fresh connection leaves it behind.
                self._client.close()
            raise ReplyTimeoutError(
                f"{fault.value} from unit {unit_id} within {waited:.2f} s", fault
            ) from exc
        except ConnectionException as exc:
            raise TransportError(f"{self.endpoint} is not usable: {exc}") from exc
        except ModbusException as exc:
            raise ProtocolError(f"bad reply from unit {unit_id}: {exc}") from exc
        finally:
            self._outstanding = False
            raise_if_cancelled()  # pymodbus awaits with wait_for, which can lose it (3.11)
        return reply

    def last_fault(self, unit_id: int) -> ReplyFault:
        """Classify the bytes that arrived after the last request (RTU framing only)."""
        raw = bytes(self._received)
        if not raw:
            return ReplyFault.NO_ANSWER
        if self.endpoint.framing == "tcp":
            return ReplyFault.GARBAGE
        function = self._sent[1] if len(self._sent) > 1 else 0
        return classify_reply(raw, unit_id, function)


def _raise_for_exception(reply: ModbusPDU, unit_id: int) -> None:
    if isinstance(reply, ExceptionResponse) or reply.isError():
        raise exception_error(int(getattr(reply, "exception_code", 0)), unit_id)


def _values_of(reply: ModbusPDU, kind: RegisterKind, count: int, unit_id: int) -> list[int]:
    _raise_for_exception(reply, unit_id)
    if kind.is_bit:
        bits = list(reply.bits)
        if len(bits) < count:
            raise ProtocolError(f"unit {unit_id} returned {len(bits)} bits, asked for {count}")
        return [1 if bit else 0 for bit in bits[:count]]
    registers = list(reply.registers)
    if len(registers) != count:
        raise ProtocolError(
            f"unit {unit_id} returned {len(registers)} registers, asked for {count}"
        )
    return registers
