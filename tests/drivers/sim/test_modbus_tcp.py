"""The Modbus TCP / RTU-over-TCP simulator against real clients: pymodbus over loopback.

Every wait here is on a Modbus answer, a client timeout, a connection event or a server
counter; nothing sleeps to synchronise.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from pymodbus import FramerType
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusIOException
from pymodbus.pdu import ExceptionResponse

from smartpole.drivers.modbus.mbap import MbapRequest, encode_adu, encode_request
from smartpole.drivers.modbus.pdu import Request
from smartpole.drivers.modbus.points import RegisterKind
from smartpole.drivers.modbus.rtu import encode_request as encode_rtu_request
from smartpole.drivers.sim.faults import BABBLE_BYTES, SLOW_EXTRA_S, FaultMode
from smartpole.drivers.sim.modbus_bank import RegisterBank
from smartpole.drivers.sim.modbus_tcp import Framing, ModbusTcpServer

BLOCK = 0x01F4
VALUES = [0x0100 + i for i in range(14)]
FRAMINGS: list[Framing] = ["tcp", "rtu"]
LOST_ANSWER = "No response received"


def _bank(offset: int = 0) -> RegisterBank:
    bank = RegisterBank()
    bank.set(RegisterKind.HOLDING, BLOCK, [v + offset for v in VALUES])
    bank.set(RegisterKind.HOLDING, 0x0300, [0, 0])
    bank.set(RegisterKind.INPUT, 0x0010, [offset + 7, offset + 8, offset + 9])
    bank.set(RegisterKind.COIL, 0x0020, [1, 0, 1, 1, 0, 0, 1, 0, 1, 1])
    bank.set(RegisterKind.DISCRETE, 0x0040, [0, 1, 1])
    return bank


@contextlib.asynccontextmanager
async def _client(
    server: ModbusTcpServer, *, response_timeout: float = 1, **kwargs: Any
) -> AsyncIterator[AsyncModbusTcpClient]:
    framer = FramerType.RTU if server.framing == "rtu" else FramerType.SOCKET
    client = AsyncModbusTcpClient(
        server.host, port=server.port, framer=framer, timeout=response_timeout, retries=0, **kwargs
    )
    try:
        assert await client.connect()
        yield client
    finally:
        client.close()


@contextlib.asynccontextmanager
async def _rig(
    framing: Framing, *, response_timeout: float = 1, **kwargs: Any
) -> AsyncIterator[tuple[ModbusTcpServer, AsyncModbusTcpClient]]:
    async with (
        ModbusTcpServer({1: _bank()}, framing=framing, **kwargs) as server,
        _client(server, response_timeout=response_timeout) as client,
    ):
        yield server, client


@contextlib.asynccontextmanager
async def _raw(
    server: ModbusTcpServer,
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def _eventually(predicate: Callable[[], bool]) -> None:
    """Poll a server counter until it holds, like helpers.waiting.wait_until: for the moments no
    client-side event exists (a request received but, by design, not yet answered)."""
    async with asyncio.timeout(5):
        while not predicate():  # noqa: ASYNC110 - a counter, not an event we own
            await asyncio.sleep(0.01)


def _handler_tasks() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith("modbus-tcp conn")]


# ----- the happy path, both framings -----


@pytest.mark.asyncio
@pytest.mark.parametrize("framing", FRAMINGS)
async def test_reads_every_table(framing: Framing) -> None:
    async with _rig(framing) as (server, client):
        rr = await client.read_holding_registers(BLOCK, count=14, device_id=1)
        assert rr.registers == VALUES
        ir = await client.read_input_registers(0x0010, count=3, device_id=1)
        assert ir.registers == [7, 8, 9]
        co = await client.read_coils(0x0020, count=10, device_id=1)
        assert co.bits[:10] == [True, False, True, True, False, False, True, False, True, True]
        di = await client.read_discrete_inputs(0x0040, count=3, device_id=1)
        assert di.bits[:3] == [False, True, True]
        stats = server.stats
        assert (stats.requests, stats.answered, stats.by_address) == (4, 4, {1: 4})
        assert (stats.connections, stats.open_connections, stats.bad_frames) == (1, 1, 0)


@pytest.mark.asyncio
@pytest.mark.parametrize("framing", FRAMINGS)
async def test_writes_then_read_back(framing: Framing) -> None:
    async with _rig(framing) as (_, client):
        wr = await client.write_register(0x0301, 0xBEEF, device_id=1)
        assert (wr.address, wr.registers) == (0x0301, [0xBEEF])
        wm = await client.write_registers(BLOCK + 2, [0xA, 0xB, 0xC], device_id=1)
        assert (wm.address, wm.count) == (BLOCK + 2, 3)
        wc = await client.write_coil(0x0021, True, device_id=1)
        assert not wc.isError()
        wcs = await client.write_coils(0x0024, [True, True, False], device_id=1)
        assert not wcs.isError()
        rr = await client.read_holding_registers(0x0300, count=2, device_id=1)
        assert rr.registers == [0, 0xBEEF]
        rr = await client.read_holding_registers(BLOCK, count=6, device_id=1)
        assert rr.registers == [*VALUES[:2], 0xA, 0xB, 0xC, VALUES[5]]
        co = await client.read_coils(0x0020, count=8, device_id=1)
        assert co.bits == [True, True, True, True, True, True, False, False]


@pytest.mark.asyncio
@pytest.mark.parametrize("framing", FRAMINGS)
async def test_unmapped_address_is_exception_2(framing: Framing) -> None:
    async with _rig(framing) as (_, client):
        rr = await client.read_holding_registers(0x0000, count=2, device_id=1)
        assert rr.isError()
        assert isinstance(rr, ExceptionResponse)
        assert (rr.function_code, rr.exception_code) == (0x83, 2)
        wr = await client.write_register(BLOCK + 14, 1, device_id=1)
        assert (wr.function_code, wr.exception_code) == (0x86, 2)


@pytest.mark.asyncio
@pytest.mark.parametrize("framing", FRAMINGS)
async def test_answer_waits_turnaround(framing: Framing) -> None:
    loop = asyncio.get_running_loop()
    async with _rig(framing, turnaround_s=0.2) as (_, client):
        start = loop.time()
        rr = await client.read_holding_registers(BLOCK, count=1, device_id=1)
        assert loop.time() - start >= 0.2
        assert rr.registers == VALUES[:1]


# ----- unit ids -----


@pytest.mark.asyncio
async def test_tcp_unknown_unit_is_gateway_exception_0x0b() -> None:
    async with _rig("tcp") as (server, client):
        rr = await client.read_holding_registers(BLOCK, count=1, device_id=7)
        assert isinstance(rr, ExceptionResponse)
        assert (rr.dev_id, rr.function_code, rr.exception_code) == (7, 0x83, 0x0B)
        assert server.stats.by_address == {7: 1}


@pytest.mark.asyncio
async def test_tcp_answer_any_unit_serves_every_id_from_the_one_bank() -> None:
    async with (
        ModbusTcpServer({1: _bank()}, answer_any_unit=True) as server,
        _client(server) as client,
    ):
        for unit in (0, 7, 255):
            rr = await client.read_holding_registers(BLOCK, count=2, device_id=unit)
            assert (rr.dev_id, rr.registers) == (unit, VALUES[:2])
        server.set_fault(1, FaultMode.EXCEPTION)  # the bank's fault, whatever id is asked
        rr = await client.read_holding_registers(BLOCK, count=2, device_id=7)
        assert rr.exception_code == 4


@pytest.mark.parametrize(
    ("banks", "framing"),
    [({1: RegisterBank(), 2: RegisterBank()}, "tcp"), ({1: RegisterBank()}, "rtu")],
)
def test_answer_any_unit_needs_one_tcp_bank(
    banks: dict[int, RegisterBank], framing: Framing
) -> None:
    with pytest.raises(ValueError, match="answer_any_unit"):
        ModbusTcpServer(banks, framing=framing, answer_any_unit=True)


@pytest.mark.asyncio
async def test_rtu_unknown_unit_is_silent_like_a_serial_bus() -> None:
    async with _rig("rtu") as (server, client):
        with pytest.raises(ModbusIOException, match=LOST_ANSWER):
            await client.read_holding_registers(BLOCK, count=1, device_id=7)
        assert server.stats.by_address == {7: 1}
        assert server.stats.answered == 0


# ----- faults -----


@pytest.mark.asyncio
@pytest.mark.parametrize("framing", FRAMINGS)
async def test_exception_fault_is_server_device_failure(framing: Framing) -> None:
    async with _rig(framing) as (server, client):
        server.set_fault(1, FaultMode.EXCEPTION)
        rr = await client.read_holding_registers(BLOCK, count=1, device_id=1)
        assert (rr.function_code, rr.exception_code) == (0x83, 4)
        wr = await client.write_register(0x0300, 5, device_id=1)
        assert wr.exception_code == 4
        server.set_fault(1, FaultMode.NONE)
        rr = await client.read_holding_registers(0x0300, count=1, device_id=1)
        assert rr.registers == [0]  # the refused write was not executed


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("framing", "fault"),
    [
        ("tcp", FaultMode.NO_ANSWER),
        ("tcp", FaultMode.BAD_CRC),
        ("rtu", FaultMode.NO_ANSWER),
        ("rtu", FaultMode.BAD_CRC),
        ("rtu", FaultMode.GARBAGE),
    ],
)
async def test_lost_answer_times_out_on_a_live_connection(
    framing: Framing, fault: FaultMode
) -> None:
    async with _rig(framing) as (server, client):
        server.set_fault(1, fault)
        with pytest.raises(ModbusIOException, match=LOST_ANSWER):
            await client.write_register(0x0300, 0x55, device_id=1)
        assert client.connected
        server.set_fault(1, FaultMode.NONE)
        rr = await client.read_holding_registers(0x0300, count=1, device_id=1)
        # NO_ANSWER is a dead device; the others executed and only spoiled the answer.
        assert rr.registers == [0 if fault is FaultMode.NO_ANSWER else 0x55]
        stats = server.stats
        assert (stats.requests, stats.connections) == (2, 1)
        assert stats.answered == (1 if fault is FaultMode.NO_ANSWER else 2)


@pytest.mark.asyncio
async def test_tcp_garbage_closes_the_connection_and_pymodbus_reconnects() -> None:
    connected = asyncio.Event()
    ups: list[bool] = []

    def trace(up: bool) -> None:
        ups.append(up)
        if len(ups) == 3:  # up, down (our close), up again
            connected.set()

    async with (
        ModbusTcpServer({1: _bank()}) as server,
        _client(server, trace_connect=trace) as client,
    ):
        server.set_fault(1, FaultMode.GARBAGE)
        # pymodbus does not fail the pending request when the link drops: it waits out the
        # timeout, while its reconnect task (reconnect_delay 0.1 s) opens a new connection.
        with pytest.raises(ModbusIOException, match=LOST_ANSWER):
            await client.read_holding_registers(BLOCK, count=2, device_id=1)
        async with asyncio.timeout(5):
            await connected.wait()
        assert ups == [True, False, True]
        server.set_fault(1, FaultMode.NONE)
        rr = await client.read_holding_registers(BLOCK, count=2, device_id=1)
        assert rr.registers == VALUES[:2]
        stats = server.stats
        assert (stats.requests, stats.answered) == (2, 2)
        assert (stats.connections, stats.open_connections) == (2, 1)


@pytest.mark.asyncio
@pytest.mark.parametrize("framing", FRAMINGS)
async def test_slow_fault_answers_late(framing: Framing) -> None:
    loop = asyncio.get_running_loop()
    async with _rig(framing, response_timeout=SLOW_EXTRA_S + 3) as (server, client):
        server.set_fault(1, FaultMode.SLOW)
        start = loop.time()
        rr = await client.read_holding_registers(BLOCK, count=1, device_id=1)
        assert loop.time() - start >= SLOW_EXTRA_S
        assert rr.registers == VALUES[:1]


@pytest.mark.asyncio
async def test_tcp_late_answer_is_skipped_by_transaction_id() -> None:
    # Timeout 1.5 s: the next request is sent at 1.5 s, the late answer lands at 2 s and
    # the fresh one right after, well inside the second request's own timeout.
    async with _rig("tcp", response_timeout=1.5) as (server, client):
        server.set_fault(1, FaultMode.SLOW)
        with pytest.raises(ModbusIOException, match=LOST_ANSWER):
            await client.read_holding_registers(BLOCK, count=1, device_id=1)
        server.set_fault(1, FaultMode.NONE)
        rr = await client.read_holding_registers(BLOCK + 5, count=1, device_id=1)
        assert rr.registers == [VALUES[5]]


@pytest.mark.asyncio
async def test_rtu_over_tcp_late_answer_is_taken_for_the_next_one() -> None:
    """The hazard a client must handle on RTU over TCP, pinned for pymodbus 3.16: RTU has
    no transaction id, so after a timeout the late answer passes for the next request's
    (same unit and function). A poller has to reconnect or flush after every timeout."""
    async with _rig("rtu", response_timeout=1.5) as (server, client):
        server.set_fault(1, FaultMode.SLOW)
        with pytest.raises(ModbusIOException, match=LOST_ANSWER):
            await client.read_holding_registers(BLOCK, count=1, device_id=1)
        server.set_fault(1, FaultMode.NONE)
        rr = await client.read_holding_registers(BLOCK + 5, count=1, device_id=1)
        assert rr.registers == [VALUES[0]]  # not VALUES[5]: the previous request's answer


# ----- concurrency and shutdown -----


@pytest.mark.asyncio
@pytest.mark.parametrize("framing", FRAMINGS)
async def test_two_clients_at_once_get_their_own_answers(framing: Framing) -> None:
    async with (
        ModbusTcpServer({1: _bank(), 2: _bank(offset=0x1000)}, framing=framing) as server,
        _client(server) as one,
        _client(server) as two,
    ):

        async def poll(client: AsyncModbusTcpClient, unit: int, offset: int) -> None:
            for i in range(25):
                rr = await client.read_holding_registers(BLOCK + i % 14, count=1, device_id=unit)
                assert rr.registers == [VALUES[i % 14] + offset]
                await client.write_register(0x0300, i, device_id=unit)

        await asyncio.gather(poll(one, 1, 0), poll(two, 2, 0x1000))
        # A write by one client is what the other reads: one device, one memory.
        await one.write_register(0x0301, 0x4242, device_id=2)
        rr = await two.read_holding_registers(0x0300, count=2, device_id=2)
        assert rr.registers == [24, 0x4242]
        stats = server.stats
        assert (stats.connections, stats.open_connections) == (2, 2)
        assert stats.by_address == {1: 50, 2: 52}


@pytest.mark.asyncio
async def test_one_cpu_serves_concurrent_requests_one_at_a_time() -> None:
    loop = asyncio.get_running_loop()
    async with (
        ModbusTcpServer({1: _bank()}, turnaround_s=0.3) as server,
        _client(server) as one,
        _client(server) as two,
    ):
        start = loop.time()
        a, b = await asyncio.gather(
            one.read_holding_registers(BLOCK, count=1, device_id=1),
            two.read_holding_registers(BLOCK + 1, count=1, device_id=1),
        )
        assert loop.time() - start >= 0.6
        assert (a.registers, b.registers) == ([VALUES[0]], [VALUES[1]])


@pytest.mark.asyncio
@pytest.mark.parametrize("framing", FRAMINGS)
async def test_closes_cleanly_with_clients_connected(framing: Framing) -> None:
    loop = asyncio.get_running_loop()
    server = ModbusTcpServer({1: _bank()}, framing=framing, faults={1: FaultMode.SLOW})
    async with server, _client(server) as idle, _client(server) as busy:
        port = server.port
        server.set_fault(1, FaultMode.NONE)
        assert (await idle.read_holding_registers(BLOCK, count=1, device_id=1)).registers
        server.set_fault(1, FaultMode.SLOW)
        pending = asyncio.ensure_future(busy.read_holding_registers(BLOCK, count=1, device_id=1))
        await _eventually(lambda: server.stats.requests == 2)
        assert len(_handler_tasks()) == 2
        start = loop.time()
        await server.aclose()  # mid-answer: must not wait out the SLOW delay
        assert loop.time() - start < 0.5
        assert _handler_tasks() == []
        assert server.stats.open_connections == 0
        with pytest.raises(ModbusIOException, match=LOST_ANSWER):
            await pending
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", port)
        with pytest.raises(RuntimeError, match="not running"):
            _ = server.port


@pytest.mark.asyncio
async def test_cancelled_owner_closes_the_server_and_stays_cancelled() -> None:
    running = asyncio.Event()
    ports: list[int] = []

    async def owner() -> None:
        async with ModbusTcpServer({1: _bank()}) as server:
            ports.append(server.port)
            async with _raw(server) as (reader, writer):
                writer.write(encode_adu(1, 1, b"\x03\x01\xf4\x00\x01"))
                await reader.readexactly(11)  # answered: the server holds the connection
                running.set()
                await asyncio.Event().wait()

    task = asyncio.create_task(owner())
    async with asyncio.timeout(5):
        await running.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert _handler_tasks() == []
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", ports[0])


# ----- what only a raw socket can send -----


@pytest.mark.asyncio
async def test_bad_protocol_id_closes_that_connection_only() -> None:
    async with ModbusTcpServer({1: _bank()}) as server, _client(server) as client:
        async with _raw(server) as (reader, writer):
            good = encode_request(
                MbapRequest(transaction_id=9, unit_id=1, function=3, address=BLOCK, count=1)
            )
            writer.write(good + encode_adu(10, 1, b"\x03\0\0\0\1", protocol_id=1))
            async with asyncio.timeout(5):
                answer = await reader.read()  # until the server closes
            assert answer == encode_adu(9, 1, bytes([3, 2]) + VALUES[0].to_bytes(2, "big"))
        rr = await client.read_holding_registers(BLOCK, count=1, device_id=1)
        assert rr.registers == VALUES[:1]
        stats = server.stats
        assert (stats.bad_frames, stats.connections, stats.answered) == (1, 2, 2)


@pytest.mark.asyncio
async def test_absurd_length_closes_the_connection() -> None:
    async with ModbusTcpServer({1: _bank()}) as server, _raw(server) as (reader, writer):
        writer.write(bytes.fromhex("0001 0000 ffff 01"))
        async with asyncio.timeout(5):
            assert await reader.read() == b""
        assert server.stats.bad_frames == 1


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("pdu", "answer"),
    [
        (b"\x03\x01\xf4\x00", b"\x83\x03"),  # FC3 one byte short: illegal data value
        (b"\x2b\x0e\x01\x00", b"\xab\x01"),  # device identification: illegal function
    ],
)
async def test_malformed_pdu_gets_an_exception_and_the_stream_goes_on(
    pdu: bytes, answer: bytes
) -> None:
    async with ModbusTcpServer({1: _bank()}) as server, _raw(server) as (reader, writer):
        writer.write(encode_adu(5, 1, pdu) + encode_adu(6, 1, b"\x03\x01\xf4\x00\x01"))
        async with asyncio.timeout(5):
            first = await reader.readexactly(9)
            second = await reader.readexactly(11)
        assert first == encode_adu(5, 1, answer)
        assert second == encode_adu(6, 1, bytes([3, 2]) + VALUES[0].to_bytes(2, "big"))
        assert server.stats.bad_frames == 0


@pytest.mark.asyncio
async def test_rtu_noise_claiming_a_long_frame_is_dropped_after_the_idle_gap() -> None:
    async with ModbusTcpServer({1: _bank()}, framing="rtu") as server, _raw(server) as (r, w):
        request = encode_rtu_request(Request(1, 3, BLOCK, 1))
        # Noise whose header promises a 209-byte frame: only the stream going quiet lets the
        # server give up on it and find the real request behind it.
        w.write(bytes([1, 16, 0, 0, 0, 1, 200]) + request)
        async with asyncio.timeout(5):
            answer = await r.readexactly(7)
        assert answer[:5] == bytes([1, 3, 2]) + VALUES[0].to_bytes(2, "big")
        stats = server.stats
        assert (stats.bad_frames, stats.discarded_bytes, stats.answered) == (1, 7, 1)


@pytest.mark.asyncio
async def test_a_babbling_unit_sends_bytes_nobody_asked_for_and_keeps_the_connection() -> None:
    async with ModbusTcpServer({1: _bank()}, faults={1: FaultMode.BABBLE}) as server:
        async with _raw(server) as (reader, _writer):
            # Not a byte was asked for, yet bursts keep coming on the open connection.
            async with asyncio.timeout(5):
                data = await reader.readexactly(3 * BABBLE_BYTES)
            assert len(data) == 3 * BABBLE_BYTES
            await _eventually(lambda: server.stats.unsolicited >= 3)
            assert server.stats.open_connections == 1
        server.set_fault(1, FaultMode.NONE)
        async with _client(server) as client:
            rr = await client.read_holding_registers(BLOCK, count=len(VALUES), device_id=1)
            assert rr.registers == VALUES
