"""The simulator skeleton on its own: a toy protocol over a pty and over TCP.

The toy's devices answer a line ``<address byte><text>\\n`` with the text upper-cased, so
every part of the skeleton (endpoints, conversations, faults, counters, progress waits,
closing) is exercised without any real protocol in the way. Every wait is on bytes
arriving or on the simulator's own progress, bounded by a timeout; nothing sleeps.
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from collections.abc import Iterator

import pytest
import structlog

from smartpole.drivers.lifecycle import BackgroundTaskError
from smartpole.drivers.serial_port import AsyncSerialPort
from smartpole.drivers.sim.bus import BusServer, ReplyTiming, SimStats
from smartpole.drivers.sim.faults import SLOW_EXTRA_S, FaultMode
from smartpole.drivers.sim.pty import PtyEndpoint
from smartpole.drivers.sim.server import Line, TcpAddress

WAIT_S = 5.0  # generous bound on a loaded machine; a healthy run takes milliseconds
_CHECKSUM = slice(-2, -1)  # the toy's "checksum": the byte before the newline


class Shouting(BusServer[int]):
    """Devices at ``addresses`` that shout back what they are told."""

    def __init__(
        self, addresses: set[int], *, seed: int = 0, tcp: TcpAddress | None = None
    ) -> None:
        super().__init__("shouting", timing=ReplyTiming(None, 0.0), seed=seed, tcp=tcp)
        self.addresses = addresses
        self.crash_on: bytes | None = None

    def _start_fields(self) -> dict[str, object]:
        return {"devices": sorted(self.addresses)}

    async def _converse(self, line: Line) -> None:
        buffer = bytearray()
        while chunk := await line.read():
            buffer += chunk
            while b"\n" in buffer:
                frame, _, rest = bytes(buffer).partition(b"\n")
                buffer[:] = rest
                await self._answer(line, frame)
                self._progress()

    async def _answer(self, line: Line, frame: bytes) -> None:
        if frame == self.crash_on:
            raise ValueError("the toy's decoder has a bug")
        self._stats.requests += 1
        address = frame[0]
        if address not in self.addresses:
            return
        self._stats.by_address[address] += 1
        fault = self.fault_of(address)
        if fault is FaultMode.NO_ANSWER:
            self._stats.ignored += 1
            return
        reply = self.spoil(frame[1:].upper() + b"\n", fault, checksum=_CHECKSUM)
        if line.write(reply):
            await line.drain()
            self._stats.answered += 1


def _frame(address: int, text: bytes) -> bytes:
    return bytes([address]) + text + b"\n"


class Client:
    """The product's serial port on the simulator's pty, collecting what comes back."""

    def __init__(self, path: str) -> None:
        self.data = bytearray()
        self._more = asyncio.Event()
        self.port = AsyncSerialPort(path, baudrate=9600, on_data=self._on_data)

    def _on_data(self, data: bytes) -> None:
        self.data += data
        self._more.set()

    async def lines(self, count: int) -> list[bytes]:
        async with asyncio.timeout(WAIT_S):
            while self.data.count(b"\n") < count:
                self._more.clear()
                await self._more.wait()
        return bytes(self.data).split(b"\n")[:count]


@pytest.fixture
def no_leaked_fds() -> Iterator[None]:
    before = set(os.listdir("/proc/self/fd"))
    yield
    assert set(os.listdir("/proc/self/fd")) <= before


# ----- over a pty ------------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.usefixtures("no_leaked_fds")
async def test_a_pty_simulator_serves_counts_and_logs() -> None:
    server = Shouting({1, 2})
    with structlog.testing.capture_logs() as logs:
        async with server:
            path = server.where
            assert path == server.path
            with pytest.raises(RuntimeError, match="not running on TCP"):
                _ = server.port
            client = Client(server.path)
            async with client.port:
                await client.port.write(_frame(1, b"hi") + _frame(9, b"nobody") + _frame(2, b"yo"))
                assert await client.lines(2) == [b"HI", b"YO"]
                await server.wait_until(lambda: server.stats.requests == 3)
    assert server.stats == SimStats(requests=3, answered=2, by_address=Counter({1: 1, 2: 1}))
    started, stopped = (e for e in logs if e["event"] in ("sim_started", "sim_stopped"))
    assert started == {
        "event": "sim_started",
        "log_level": "info",
        "sim": "shouting",
        "at": path,
        "devices": [1, 2],
    }
    assert stopped["stats"] == server.stats


@pytest.mark.asyncio
async def test_faults_apply_per_device_from_the_next_request_on() -> None:
    async with Shouting({1, 2}, seed=3) as server:
        client = Client(server.path)
        async with client.port:
            server.set_fault(1, FaultMode.NO_ANSWER)
            server.set_fault(2, FaultMode.BAD_CRC)
            await client.port.write(_frame(1, b"lost") + _frame(2, b"abc"))
            assert await client.lines(1) == [b"AB\xbc"]  # the "checksum" C inverted
            await server.wait_until(lambda: server.stats.requests == 2)
            assert server.stats.ignored == 1
            server.set_fault(1, FaultMode.NONE)
            await client.port.write(_frame(1, b"back"))
            assert (await client.lines(2))[1] == b"BACK"
    assert server.fault_of(2) is FaultMode.BAD_CRC


@pytest.mark.asyncio
async def test_garbage_is_reproducible_from_the_seed() -> None:
    def garbage(seed: int) -> bytes:
        return Shouting(set(), seed=seed).spoil(b"12345", FaultMode.GARBAGE, checksum=_CHECKSUM)

    assert garbage(1) == garbage(1) != garbage(2)
    assert len(garbage(1)) == 5
    for fault in (FaultMode.NONE, FaultMode.SLOW, FaultMode.EXCEPTION):
        assert Shouting(set()).spoil(b"12345", fault, checksum=_CHECKSUM) == b"12345"


@pytest.mark.asyncio
async def test_a_crashed_conversation_fails_waiters_and_the_close() -> None:
    server = Shouting({1})
    await server.__aenter__()
    server.crash_on = _frame(1, b"boom")[:-1]
    client = Client(server.path)
    async with client.port:
        waiting = asyncio.create_task(server.wait_until(lambda: False, timeout_s=None))
        await client.port.write(_frame(1, b"boom"))
        with pytest.raises(BackgroundTaskError, match="shouting"):
            await waiting
    with pytest.raises(BackgroundTaskError) as caught:
        await server.aclose()
    assert isinstance(caught.value.__cause__, ValueError)
    await server.aclose()


@pytest.mark.asyncio
async def test_waits_time_out_and_end_with_the_simulator() -> None:
    server = Shouting({1})
    with pytest.raises(RuntimeError, match="not running"):
        await server.wait_until(lambda: False)
    await server.wait_until(lambda: True)  # what already holds needs no running simulator
    registered = asyncio.Event()

    def never() -> bool:
        registered.set()  # checked once just before the wait registers, with no await between
        return False

    async with server:
        with pytest.raises(TimeoutError):
            await server.wait_until(lambda: False, timeout_s=0.01)
        waiting = asyncio.create_task(server.wait_until(never, timeout_s=None))
        await registered.wait()
    with pytest.raises(RuntimeError, match="stopped"):
        await waiting


# ----- over TCP --------------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.usefixtures("no_leaked_fds")
async def test_a_tcp_simulator_serves_every_connection() -> None:
    async with Shouting({1}, tcp=TcpAddress()) as server:
        assert server.where == f"tcp://127.0.0.1:{server.port}"
        with pytest.raises(RuntimeError, match="not running on a pty"):
            _ = server.path
        first = await asyncio.open_connection(server.host, server.port)
        second = await asyncio.open_connection(server.host, server.port)
        for n, (reader, writer) in enumerate((first, second)):
            writer.write(_frame(1, b"conn%d" % n))
            assert await asyncio.wait_for(reader.readline(), WAIT_S) == b"CONN%d\n" % n
        await server.wait_until(lambda: server.stats.open_connections == 2)
        first[1].close()
        await first[1].wait_closed()
        await server.wait_until(lambda: server.stats.open_connections == 1)
    # Closing the simulator closes the connection it still had.
    reader, writer = second
    assert await asyncio.wait_for(reader.read(), WAIT_S) == b""
    writer.close()
    await writer.wait_closed()
    stats = server.stats
    assert (stats.connections, stats.open_connections, stats.answered) == (2, 0, 2)


# ----- the pieces ------------------------------------------------------------------------


def test_reply_timing_charges_the_wire_on_serial_lines_only() -> None:
    serial = ReplyTiming(9600, 0.01)
    assert serial.delay_s(8, 9, FaultMode.NONE) > 0.01
    assert serial.delay_s(8, 9, FaultMode.SLOW) == pytest.approx(
        serial.delay_s(8, 9, FaultMode.NONE) + SLOW_EXTRA_S
    )
    assert ReplyTiming(None, 0.01).delay_s(8, 9, FaultMode.NONE) == 0.01
    for baudrate, turnaround_s in ((0, 0.0), (9600, -0.1)):
        with pytest.raises(ValueError, match="bad timing"):
            ReplyTiming(baudrate, turnaround_s)
    with pytest.raises(ValueError, match="port"):
        TcpAddress(port=70000)


def test_stats_copies_do_not_follow_the_live_counters() -> None:
    live: SimStats[int] = SimStats()
    live.by_address[1] += 1
    copy = live.copy()
    live.by_address[1] += 1
    live.by_kind["read"] += 1
    assert (copy.by_address, copy.by_kind) == ({1: 1}, {})


@pytest.mark.asyncio
@pytest.mark.usefixtures("no_leaked_fds")
async def test_a_bounded_pty_drops_what_a_silent_client_leaves_unread() -> None:
    async with PtyEndpoint(max_pending=128) as pty:
        client = os.open(pty.path, os.O_RDWR | os.O_NOCTTY)
        try:
            # 256 KiB is far more than a pty buffers; the client reads none of it.
            accepted = [pty.write(b"x" * 64) for _ in range(4096)]
        finally:
            os.close(client)
    assert accepted[0]  # the kernel's buffer takes the first writes at once
    assert not accepted[-1]  # then at most 128 bytes wait, and the rest is dropped
    assert not pty.write(b"closed")
    with pytest.raises(ValueError, match="positive"):
        PtyEndpoint(max_pending=0)
