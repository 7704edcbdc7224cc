"""Our Modbus TCP client over loopback: against the simulator for everything it can do,
and against a scripted MBAP peer for the broken answers no simulator fault produces.

Every wait here is on an answer, a client timeout or a connection event; nothing sleeps to
synchronise.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import yaml

from helpers.paths import REPO
from smartpole.agent.buses.kind import BusContext
from smartpole.agent.buses.modbus.config import ModbusTcpBus
from smartpole.agent.buses.modbus.task import ModbusBusTask
from smartpole.agent.buses.registry import load_config
from smartpole.agent.core.audit import AuditLog
from smartpole.agent.core.points import PointTable, Quality
from smartpole.drivers.errors import DeviceExceptionError, ProtocolError, TransportError
from smartpole.drivers.modbus.client import Endpoint, ModbusClient
from smartpole.drivers.modbus.faults import ReplyFault, ReplyTimeoutError
from smartpole.drivers.modbus.mbap import encode_adu
from smartpole.drivers.modbus.points import RegisterKind
from smartpole.drivers.modbus.tcp_client import ModbusTcpClient
from smartpole.drivers.sim.faults import SLOW_EXTRA_S, FaultMode
from smartpole.drivers.sim.modbus_bank import RegisterBank
from smartpole.drivers.sim.modbus_tcp import ModbusTcpServer

BLOCK = 0x0100
VALUES = [0x1000 + i for i in range(20)]
HOLDING, INPUT, COIL, DISCRETE = (
    RegisterKind.HOLDING,
    RegisterKind.INPUT,
    RegisterKind.COIL,
    RegisterKind.DISCRETE,
)


def _bank() -> RegisterBank:
    bank = RegisterBank()
    bank.set(HOLDING, BLOCK, VALUES)
    bank.set(INPUT, 0x0010, [7, 8, 9])
    bank.set(COIL, 0x0020, [1, 0, 1, 1, 0, 0, 1, 0, 1, 1])
    bank.set(DISCRETE, 0x0040, [0, 1, 1])
    return bank


@contextlib.asynccontextmanager
async def _rig(
    timeout_s: float = 1.0, **kwargs: object
) -> AsyncIterator[tuple[ModbusTcpServer, ModbusClient]]:
    async with ModbusTcpServer({1: _bank()}, **kwargs) as server:  # type: ignore[arg-type]
        endpoint = Endpoint("tcp", host=server.host, tcp_port=server.port)
        async with ModbusClient(endpoint, timeout_s=timeout_s) as client:
            yield server, client


Script = Callable[[bytes], bytes | None]  # a request ADU -> what the peer sends back


@contextlib.asynccontextmanager
async def _scripted(script: Script, timeout_s: float = 1.0) -> AsyncIterator[ModbusTcpClient]:
    """A peer that answers each request with whatever ``script`` builds from it; None
    closes the connection without an answer."""
    closed = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                header = await reader.readexactly(6)
                body = await reader.readexactly(int.from_bytes(header[4:6], "big"))
                reply = script(header + body)
                if reply is None:
                    break
                for chunk in _chunks(reply):
                    writer.write(chunk)
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            closed.set()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = ModbusTcpClient("127.0.0.1", port, timeout_s=timeout_s)
    try:
        await client.connect()
        try:
            yield client
        finally:
            client.close()
            async with asyncio.timeout(5):
                await closed.wait()  # the peer has seen the close and its handler has ended
    finally:
        server.close()
        await server.wait_closed()


_SPLIT = b"\xff\xfe split here \xfe\xff"


def _chunks(reply: bytes) -> list[bytes]:
    """Scripts mark where the peer pauses between TCP segments with _SPLIT."""
    return [part for part in reply.split(_SPLIT) if part]


def _tid(request: bytes) -> int:
    return int.from_bytes(request[0:2], "big")


def _answer(
    request: bytes, pdu: bytes, *, tid: int | None = None, unit: int | None = None
) -> bytes:
    return encode_adu(
        _tid(request) if tid is None else tid, request[6] if unit is None else unit, pdu
    )


def _registers(values: list[int]) -> bytes:
    data = b"".join(v.to_bytes(2, "big") for v in values)
    return bytes([3, len(data)]) + data


# ----- against the simulator -----


@pytest.mark.asyncio
async def test_reads_every_table_and_writes_read_back() -> None:
    async with _rig() as (server, client):
        assert await client.read(HOLDING, BLOCK, 20, 1) == VALUES
        assert await client.read(INPUT, 0x0010, 3, 1) == [7, 8, 9]
        assert await client.read(COIL, 0x0020, 10, 1) == [1, 0, 1, 1, 0, 0, 1, 0, 1, 1]
        assert await client.read(DISCRETE, 0x0040, 3, 1) == [0, 1, 1]
        await client.write(HOLDING, BLOCK, [0xBEEF], 1)
        await client.write(HOLDING, BLOCK + 2, [0xA, 0xB, 0xC], 1)
        await client.write(COIL, 0x0021, [1], 1)
        await client.write(COIL, 0x0024, [1, 1, 0], 1)
        assert await client.read(HOLDING, BLOCK, 6, 1) == [
            0xBEEF,
            VALUES[1],
            0xA,
            0xB,
            0xC,
            VALUES[5],
        ]
        assert await client.read(COIL, 0x0020, 8, 1) == [1, 1, 1, 1, 1, 1, 0, 0]
        stats = server.stats
        assert (stats.requests, stats.answered, stats.connections) == (10, 10, 1)


@pytest.mark.asyncio
async def test_exception_answers_carry_their_code() -> None:
    async with _rig() as (server, client):
        with pytest.raises(DeviceExceptionError, match="illegal data address") as refused:
            await client.read(HOLDING, 0x0000, 2, 1)
        assert refused.value.code == 2
        with pytest.raises(DeviceExceptionError) as gateway:
            await client.read(HOLDING, BLOCK, 2, 9)  # a unit the gateway does not reach
        assert gateway.value.code == 0x0B
        server.set_fault(1, FaultMode.EXCEPTION)
        with pytest.raises(DeviceExceptionError) as failed:
            await client.write(HOLDING, BLOCK, [1], 1)
        assert failed.value.code == 4
        assert client.connected


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("fault", "reported"),
    [(FaultMode.NO_ANSWER, ReplyFault.NO_ANSWER), (FaultMode.BAD_CRC, ReplyFault.GARBAGE)],
)
async def test_a_lost_answer_times_out_and_the_connection_carries_on(
    fault: FaultMode, reported: ReplyFault
) -> None:
    async with _rig(timeout_s=0.3) as (server, client):
        server.set_fault(1, fault)
        with pytest.raises(ReplyTimeoutError) as lost:
            await client.read(HOLDING, BLOCK, 4, 1)
        assert lost.value.fault is reported
        assert client.last_fault(1) is reported
        assert client.connected
        server.set_fault(1, FaultMode.NONE)
        # BAD_CRC left half an answer behind; it must not be taken for this one's start.
        assert await client.read(HOLDING, BLOCK + 4, 2, 1) == VALUES[4:6]
        assert server.stats.connections == 1


@pytest.mark.asyncio
async def test_garbage_from_the_device_drops_the_connection_then_reconnect_works() -> None:
    async with _rig() as (server, client):
        server.set_fault(1, FaultMode.GARBAGE)
        # A random MBAP header is all but certainly not protocol 0; if it were, the peer
        # closing the connection right after ends the request just as surely.
        with pytest.raises((ReplyTimeoutError, TransportError)):
            await client.read(HOLDING, BLOCK, 4, 1)
        with pytest.raises(TransportError):
            await client.read(HOLDING, BLOCK, 4, 1)
        assert not client.connected
        server.set_fault(1, FaultMode.NONE)
        await client.connect()
        assert await client.read(HOLDING, BLOCK, 2, 1) == VALUES[:2]
        assert server.stats.connections == 2


@pytest.mark.asyncio
async def test_a_late_answer_is_skipped_by_transaction_id() -> None:
    # The simulator runs one request at a time: the second request is answered only after
    # the late answer to the first, which arrives while the second is outstanding.
    async with _rig(timeout_s=SLOW_EXTRA_S * 0.6) as (server, client):
        server.set_fault(1, FaultMode.SLOW)
        with pytest.raises(ReplyTimeoutError) as slow:
            await client.read(HOLDING, BLOCK, 1, 1)
        assert slow.value.fault is ReplyFault.NO_ANSWER
        server.set_fault(1, FaultMode.NONE)
        assert await client.read(HOLDING, BLOCK + 5, 1, 1) == [VALUES[5]]
        impl = client._impl
        assert isinstance(impl, ModbusTcpClient)
        assert impl.late_replies == 1


@pytest.mark.asyncio
async def test_cancelling_a_request_leaves_the_client_usable() -> None:
    async with _rig(timeout_s=30) as (server, client):
        server.set_fault(1, FaultMode.NO_ANSWER)
        pending = asyncio.create_task(client.read(HOLDING, BLOCK, 1, 1))
        async with asyncio.timeout(5):
            while server.stats.requests < 1:  # noqa: ASYNC110 - a server counter, no event
                await asyncio.sleep(0.01)
        pending.cancel()
        with pytest.raises(asyncio.CancelledError):
            await pending
        server.set_fault(1, FaultMode.NONE)
        assert await client.read(HOLDING, BLOCK, 1, 1) == VALUES[:1]


@pytest.mark.asyncio
async def test_refused_connection_is_a_transport_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nobody listens here once the socket is closed
    client = ModbusClient(Endpoint("tcp", host="127.0.0.1", tcp_port=port), timeout_s=1)
    with pytest.raises(TransportError, match="cannot open TCP endpoint"):
        await client.connect()
    assert not client.connected
    with pytest.raises(TransportError):
        await client.read(HOLDING, 0, 1, 1)


@pytest.mark.asyncio
async def test_connecting_where_nothing_answers_gives_up_in_time() -> None:
    # A listener that never accepts, its backlog already full: the kernel drops our SYN,
    # so the handshake never completes, as with a host that is down.
    with contextlib.ExitStack() as stack:
        listener = stack.enter_context(socket.socket())
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        address = listener.getsockname()
        for _ in range(4):
            filler = stack.enter_context(socket.socket())
            filler.setblocking(False)
            filler.connect_ex(address)
        client = ModbusTcpClient(*address, timeout_s=0.3)
        async with asyncio.timeout(5):
            with pytest.raises(TransportError, match=r"cannot open TCP endpoint .* timed out"):
                await client.connect()
        assert not client.connected


# ----- against a scripted peer -----


@pytest.mark.asyncio
async def test_writes_that_cannot_be_framed_are_refused_before_sending() -> None:
    sent: list[bytes] = []

    def script(request: bytes) -> bytes:
        sent.append(request)
        return _answer(request, request[7:12])  # the echo of FC 05/06/15/16

    async with _scripted(script) as client:
        with pytest.raises(ProtocolError, match="16-bit"):
            await client.write(HOLDING, 0, [0x10000], 1)
        with pytest.raises(ProtocolError, match="nothing to write"):
            await client.write(HOLDING, 0, [], 1)
        with pytest.raises(ProtocolError, match="cannot be written"):
            await client.write(INPUT, 0, [1], 1)
        with pytest.raises(ProtocolError, match="cannot frame"):
            await client.write(HOLDING, 0, [1] * 200, 1)
        assert sent == []
        await client.write(COIL, 3, [1], 1)
        await client.write(HOLDING, 4, [5, 6], 1)
    assert [r[7:] for r in sent] == [
        bytes.fromhex("050003ff00"),
        bytes.fromhex("10000400020400050006"),
    ]


@pytest.mark.asyncio
async def test_a_stale_frame_before_the_answer_is_skipped() -> None:
    def script(request: bytes) -> bytes:
        stale = _answer(request, _registers([0xDEAD]), tid=(_tid(request) - 1) & 0xFFFF)
        return stale + _answer(request, _registers([1, 2]))

    async with _scripted(script) as client:
        assert await client.read(HOLDING, 0, 2, 1) == [1, 2]
        assert await client.read(HOLDING, 0, 2, 1) == [1, 2]
        assert client.late_replies == 2


@pytest.mark.asyncio
async def test_an_answer_in_single_bytes_is_put_together() -> None:
    def script(request: bytes) -> bytes:
        return _SPLIT.join(bytes([b]) for b in _answer(request, _registers([5, 6, 7])))

    async with _scripted(script) as client:
        assert await client.read(HOLDING, 0, 3, 1) == [5, 6, 7]


@pytest.mark.asyncio
async def test_transaction_ids_wrap_around() -> None:
    seen: list[int] = []

    def script(request: bytes) -> bytes:
        seen.append(_tid(request))
        return _answer(request, _registers([9]))

    async with _scripted(script) as client:
        client._tid = 0xFFFE
        for _ in range(3):
            assert await client.read(HOLDING, 0, 1, 1) == [9]
    assert seen == [0xFFFF, 0, 1]


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("script", "fault"),
    [
        (lambda req: _answer(req, _registers([1]), unit=2), ReplyFault.WRONG_UNIT),
        (lambda req: _answer(req, b"\x04\x02\x00\x01"), ReplyFault.WRONG_FUNCTION),
        (lambda req: _answer(req, b"\x03\x04\x00\x01"), ReplyFault.GARBAGE),  # count > data
        (lambda req: _answer(req, b"\x83\x02\x00"), ReplyFault.GARBAGE),  # long exception
    ],
    ids=["wrong-unit", "wrong-function", "short-data", "bad-exception"],
)
async def test_wrong_answers_are_classified_at_once(script: Script, fault: ReplyFault) -> None:
    async with _scripted(script, timeout_s=30) as client:
        async with asyncio.timeout(5):  # not the 30 s timeout: the answer settled it
            with pytest.raises(ReplyTimeoutError) as wrong:
                await client.read(HOLDING, 0, 1, 1)
        assert wrong.value.fault is fault
        assert client.connected


@pytest.mark.asyncio
async def test_unit_0_takes_an_answer_from_any_unit() -> None:
    async with _scripted(lambda req: _answer(req, _registers([3]), unit=255)) as client:
        assert await client.read(HOLDING, 0, 1, 0) == [3]


@pytest.mark.asyncio
async def test_a_well_formed_answer_of_the_wrong_size_is_a_protocol_error() -> None:
    async with _scripted(lambda req: _answer(req, _registers([1, 2]))) as client:
        with pytest.raises(ProtocolError, match="returned 2 registers, asked for 3"):
            await client.read(HOLDING, 0, 3, 1)


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "header",
    [b"\x00\x01\x00\x07\x00\x05", b"\x00\x01\x00\x00\x00\x00", b"\x00\x01\x00\x00\x01\x00"],
    ids=["protocol-7", "length-0", "length-256"],
)
async def test_a_stream_that_is_not_mbap_is_dropped(header: bytes) -> None:
    async with _scripted(lambda req: header + b"\x01\x03\x02\x00\x01", timeout_s=30) as client:
        async with asyncio.timeout(5):
            with pytest.raises(ReplyTimeoutError) as broken:
                await client.read(HOLDING, 0, 1, 1)
        assert broken.value.fault is ReplyFault.GARBAGE
        assert not client.connected
        assert client.discarded_bytes == len(header) + 5
        with pytest.raises(TransportError):
            await client.read(HOLDING, 0, 1, 1)


@pytest.mark.asyncio
async def test_the_peer_closing_mid_request_is_a_transport_error() -> None:
    async with _scripted(lambda req: None, timeout_s=30) as client:
        async with asyncio.timeout(5):
            with pytest.raises(TransportError, match="connection lost"):
                await client.read(HOLDING, 0, 1, 1)
        assert not client.connected


# ----- in the bus task, and what the daemon imports -----


@pytest.mark.asyncio
async def test_bus_task_counts_tcp_faults_and_reconnects(tmp_path: Path) -> None:
    bank = RegisterBank()
    bank.set(HOLDING, 0, list(range(50)))
    async with ModbusTcpServer({1: bank}) as server:
        config = tmp_path / "pole.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "pole": {"id": "tcp-client-test"},
                    "profiles_dir": str(REPO / "bench" / "profiles"),
                    "buses": {
                        "lan": {
                            "type": "modbus-tcp",
                            "host": server.host,
                            "port": server.port,
                            "timeout_s": 0.2,
                            "retries": 0,
                        }
                    },
                    "devices": {
                        "bank": {"profile": "bench-register-bank", "bus": "lan", "unit_id": 1}
                    },
                }
            )
        )
        loaded = load_config(config)
        bus = loaded.pole.buses["lan"]
        assert isinstance(bus, ModbusTcpBus)
        table = PointTable()
        heard: list[tuple[str, object, Quality, float]] = []
        table.listen(lambda _d, point, value, q, at: heard.append((point, value, q, at)))
        task = ModbusBusTask(
            "lan", bus, BusContext(loaded, table, AuditLog(tmp_path), lambda: True)
        )
        (device,) = task._devices.values()
        await task._connect()
        await task._poll(device)
        # A first poll is cautious: a probe of the first point alone, then, answered, the
        # whole block in the same poll.
        assert [(p, v, q) for p, v, q, _ in heard] == [("reg00", 0, Quality.GOOD)] + [
            (f"reg{i:02d}", i, Quality.GOOD) for i in range(50)
        ]
        assert len({at for *_, at in heard[1:]}) == 1  # one block, one acquisition time

        server.set_fault(1, FaultMode.NO_ANSWER)
        await task._poll(device)
        counters = device.health.counters
        assert (counters.ok, counters.timeout) == (2, 1)
        server.set_fault(1, FaultMode.GARBAGE)
        try:
            await task._poll(device)
        except TransportError:
            pass  # the 1 in 65536 random header that looks like MBAP: the peer's close
        else:
            assert counters.garbage == 1
        with pytest.raises(TransportError):
            await task._poll(device)  # the link is gone: the bus task's run() reconnects

        server.set_fault(1, FaultMode.NONE)
        await task._connect()
        await task._poll(device)
        assert device.health.counters.ok == 4  # cautious again: the probe, then the block
        await task._disconnect()


def test_a_tcp_only_daemon_does_not_import_pymodbus() -> None:
    code = (
        "import sys\n"
        "import smartpole.agent.daemon\n"
        "from smartpole.drivers.modbus.client import Endpoint, ModbusClient\n"
        "ModbusClient(Endpoint('tcp', host='127.0.0.1'), timeout_s=1)\n"
        "print(','.join(m for m in sys.modules if m.split('.')[0] == 'pymodbus'))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == ""
