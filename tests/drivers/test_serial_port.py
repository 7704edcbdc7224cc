"""The shared serial ports over a real pseudo-terminal: bytes, locks, failures, descriptors.

A pty is a real tty to pyserial and the kernel (termios, ``flock``, hang-up on the far end
closing), so what passes here is what the meters' and cameras' clients rely on. Every wait
is on bytes arriving or a callback running, bounded by a timeout; nothing sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time
import tty
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from smartpole.drivers.errors import TransportError
from smartpole.drivers.serial_port import AsyncSerialPort, SerialPort
from smartpole.drivers.sim.pty import PtyEndpoint

WAIT_S = 5.0  # generous bound on a loaded machine; a healthy run takes milliseconds
BIG = 256 * 1024  # far more than a pty buffers, so a write must wait for room


def _open_fds() -> dict[str, str]:
    """This process's descriptors and what they point at."""
    fds = {}
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the listing's own descriptor is gone by now
            fds[name] = os.readlink(f"/proc/self/fd/{name}")
    return fds


class Received:
    """``on_data`` for a port under test: collects bytes; a test awaits a count of them."""

    def __init__(self) -> None:
        self.data = bytearray()
        self._more = asyncio.Event()

    def __call__(self, data: bytes) -> None:
        self.data += data
        self._more.set()

    async def at_least(self, count: int) -> bytes:
        async with asyncio.timeout(WAIT_S):
            while len(self.data) < count:
                self._more.clear()
                await self._more.wait()
        return bytes(self.data)


async def _read_from(line: PtyEndpoint, count: int) -> bytes:
    got = b""
    async with asyncio.timeout(WAIT_S):
        while len(got) < count:
            got += await line.read()
    return got


@contextlib.contextmanager
def _silent_peer() -> Iterator[tuple[int, str]]:
    """A pty whose far end never reads: the port's writes fill the kernel's buffer."""
    master, slave = os.openpty()
    try:
        tty.setraw(slave)
        os.set_blocking(master, False)
        yield master, os.ttyname(slave)
    finally:
        os.close(master)
        os.close(slave)


@contextlib.asynccontextmanager
async def _port_on(path: str, received: Received | None = None) -> AsyncIterator[AsyncSerialPort]:
    async with AsyncSerialPort(path, baudrate=9600, on_data=received or Received()) as port:
        yield port


# ----- bytes --------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_bytes_cross_both_ways() -> None:
    received = Received()
    async with PtyEndpoint() as line, _port_on(line.path, received) as port:
        await port.write(b"\x68\x01\x02\x16")
        assert await _read_from(line, 4) == b"\x68\x01\x02\x16"

        line.write(b"\x00\xff\x0d\x0a\x11")  # raw: no CR/LF translation, no flow control
        assert await received.at_least(5) == b"\x00\xff\x0d\x0a\x11"

        line.write(bytes(range(256)) * 40)  # arrives in several pieces, in order
        assert (
            await received.at_least(5 + 10240) == b"\x00\xff\x0d\x0a\x11" + bytes(range(256)) * 40
        )


@pytest.mark.asyncio
async def test_a_write_larger_than_the_kernel_buffer_waits_without_blocking_the_loop() -> None:
    payload = bytes(range(251)) * (BIG // 251)
    async with PtyEndpoint() as line, _port_on(line.path) as port:
        writing = asyncio.create_task(port.write(payload))
        # The far end reads on the same loop: the write can only finish if it yields.
        assert await _read_from(line, len(payload)) == payload
        await asyncio.wait_for(writing, WAIT_S)


@pytest.mark.asyncio
async def test_discard_input_takes_what_is_waiting_and_later_bytes_still_arrive() -> None:
    received = Received()
    async with PtyEndpoint() as line, _port_on(line.path, received) as port:
        assert port.discard_input() == b""  # an empty port is not a hung-up one
        port.check()
        line.write(b"stale")  # written at once: the pty is empty
        # No await since: the loop has not run the port's reader, so only discard saw it.
        assert port.discard_input() == b"stale"
        line.write(b"fresh")
        assert await received.at_least(5) == b"fresh"


@pytest.mark.asyncio
async def test_a_cancelled_write_is_re_raised_and_the_port_stays_usable() -> None:
    with _silent_peer() as (master, path):
        async with _port_on(path) as port:
            writing = asyncio.create_task(port.write(b"\xaa" * BIG))
            await asyncio.sleep(0)  # one step: the write fills the buffer, then waits
            assert not writing.done()
            writing.cancel()
            with pytest.raises(asyncio.CancelledError):
                await writing

            # The rest of the cancelled write is dropped, never sent ahead of what follows.
            heard = bytearray()
            readable = asyncio.Event()
            asyncio.get_running_loop().add_reader(master, readable.set)
            try:
                async with asyncio.timeout(WAIT_S):
                    sending = asyncio.create_task(port.write(b"next"))
                    while not heard.endswith(b"next"):
                        readable.clear()
                        await readable.wait()
                        with contextlib.suppress(BlockingIOError):
                            heard += os.read(master, 65536)
                    await sending
            finally:
                asyncio.get_running_loop().remove_reader(master)
            assert 0 < len(heard) - 4 < BIG
            assert heard[:-4] == b"\xaa" * (len(heard) - 4)


# ----- refusals and failures ----------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_second_opener_is_refused_until_the_first_closes() -> None:
    async with PtyEndpoint() as line:
        async with _port_on(line.path):
            second = AsyncSerialPort(line.path, baudrate=9600, on_data=Received())
            with pytest.raises(TransportError, match=r"cannot open serial port .*lock"):
                second.open()
            assert not second.is_open
        async with second:  # the lock went with the first port's descriptor
            assert second.is_open


@pytest.mark.asyncio
async def test_a_missing_port_is_a_transport_error(tmp_path: Path) -> None:
    before = _open_fds()
    port = AsyncSerialPort(str(tmp_path / "ttyUSB9"), baudrate=2400, on_data=Received())
    with pytest.raises(
        TransportError, match=re.escape(f"cannot open serial port {tmp_path}/ttyUSB9")
    ):
        port.open()
    assert not port.is_open
    with pytest.raises(TransportError, match="not open"):
        await port.write(b"\x00")
    assert _open_fds() == before


@pytest.mark.asyncio
async def test_the_peer_hanging_up_is_a_transport_error() -> None:
    failures: list[TransportError] = []
    failed = asyncio.Event()

    def on_failure(failure: TransportError) -> None:
        failures.append(failure)
        failed.set()

    line = PtyEndpoint()
    async with line:
        port = AsyncSerialPort(line.path, baudrate=9600, on_data=Received(), on_failure=on_failure)
        port.open()
        try:
            line.close()  # the far end goes away, like an unplugged USB adapter
            await asyncio.wait_for(failed.wait(), WAIT_S)
            assert len(failures) == 1
            assert str(failures[0]).startswith(f"serial port {port.path} failed:")
            with pytest.raises(TransportError, match="failed"):
                port.check()
            with pytest.raises(TransportError, match="failed"):
                await port.write(b"\x00")
            assert port.discard_input() == b""
            assert len(failures) == 1, "reported once"
        finally:
            port.close()
    with pytest.raises(TransportError, match="not open"):
        port.check()


@pytest.mark.asyncio
async def test_a_write_waiting_for_room_fails_when_the_port_is_closed() -> None:
    with _silent_peer() as (_, path):
        port = AsyncSerialPort(path, baudrate=9600, on_data=Received())
        port.open()
        writing = asyncio.create_task(port.write(b"\x55" * BIG))
        await asyncio.sleep(0)  # one step: the write fills the buffer, then waits
        assert not writing.done()
        port.close()
        with pytest.raises(TransportError, match="was closed"):
            await asyncio.wait_for(writing, WAIT_S)


@pytest.mark.asyncio
async def test_close_releases_the_descriptor_and_can_be_repeated() -> None:
    async with PtyEndpoint() as line:
        before = _open_fds()
        port = AsyncSerialPort(line.path, baudrate=9600, on_data=Received())
        for _ in range(2):  # reopening works: nothing of the first open lingers
            port.open()
            opened = _open_fds()
            ours = [fd for fd, target in opened.items() if fd not in before]
            assert line.path in (opened[fd] for fd in ours)
            with pytest.raises(RuntimeError, match="already open"):
                port.open()
            port.close()
            port.close()
            assert _open_fds() == before
            assert not port.is_open


def test_settings_outside_the_tables_are_refused_at_once() -> None:
    with pytest.raises(ValueError, match="parity must be one of N, E, O, M, S"):
        AsyncSerialPort("/dev/ttyUSB0", baudrate=9600, parity="X", on_data=Received())
    with pytest.raises(ValueError, match="stopbits must be 1 or 2"):
        AsyncSerialPort("/dev/ttyUSB0", baudrate=9600, stopbits=3, on_data=Received())


# ----- the synchronous port -----------------------------------------------------------------


@contextlib.contextmanager
def _sync_port_on_a_pty() -> Iterator[tuple[int, SerialPort]]:
    """A synchronous port on a pty, and the pty's far end for the test to play the device."""
    master, slave = os.openpty()
    try:
        tty.setraw(slave)
        with SerialPort(os.ttyname(slave), baudrate=9600) as port:
            yield master, port
    finally:
        os.close(master)
        os.close(slave)


def test_sync_port_bytes_cross_and_a_read_ends_when_asked_or_when_quiet() -> None:
    with _sync_port_on_a_pty() as (device, port):
        before = port.last_traffic
        port.write(b"\x01\x03\x00\x00\x00\x01")
        assert port.last_traffic >= before
        heard = b""
        while len(heard) < 6:
            heard += os.read(device, 64)
        assert heard == b"\x01\x03\x00\x00\x00\x01"

        os.write(device, b"\x01\x03\x02\x00\x38" + b"more")
        deadline = time.monotonic() + WAIT_S
        got = port.read(deadline, quiet_s=WAIT_S, limit=64, done=lambda raw: len(raw) >= 9)
        assert got == b"\x01\x03\x02\x00\x38more"

        os.write(device, b"babble")  # a line that never goes quiet: the limit ends the read
        assert port.read(time.monotonic() + WAIT_S, quiet_s=WAIT_S, limit=6) == b"babble"
        assert port.read(time.monotonic() + 0.05, quiet_s=0.05, limit=64) == b"", "silence"


def test_sync_port_failures_are_transport_errors_with_the_os_error_as_cause(
    tmp_path: Path,
) -> None:
    missing = SerialPort(str(tmp_path / "ttyUSB9"), baudrate=9600)
    with pytest.raises(TransportError, match="cannot open serial port") as info:
        missing.open()
    assert info.value.__cause__ is not None

    with _sync_port_on_a_pty() as (_, port):
        second = SerialPort(port.path, baudrate=9600)
        with pytest.raises(TransportError, match="lock"):
            second.open()
        port.set_baudrate(19200)
        assert port.baudrate == 19200
    with pytest.raises(ValueError, match="parity must be one of"):
        SerialPort("/dev/ttyUSB0", baudrate=9600, parity="X")


def test_sync_port_reports_the_far_end_going_away() -> None:
    master, slave = os.openpty()
    try:
        tty.setraw(slave)
        with SerialPort(os.ttyname(slave), baudrate=9600) as port:
            os.close(master)
            master = -1
            with pytest.raises(TransportError, match=r"read failed|was closed"):
                port.read(time.monotonic() + WAIT_S, quiet_s=0.05, limit=64)
    finally:
        if master >= 0:
            os.close(master)
        os.close(slave)
