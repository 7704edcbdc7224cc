"""The generic pty endpoint that simulators build on."""

from __future__ import annotations

import asyncio
import os

import pytest

from smartpole.drivers.sim.pty import PtyEndpoint


@pytest.mark.asyncio
async def test_bytes_cross_both_ways_and_the_port_can_be_reopened() -> None:
    fds_before = set(os.listdir("/proc/self/fd"))
    async with PtyEndpoint() as pty:
        for _ in range(2):  # a client closing the port must not break the simulator
            client = os.open(pty.path, os.O_RDWR | os.O_NOCTTY)
            try:
                os.write(client, b"\x01\x02\x03")
                received = b""
                while len(received) < 3:
                    received += await asyncio.wait_for(pty.read(), 5)
                assert received == b"\x01\x02\x03"
                pty.write(b"\xff" * 10_000)  # more than a pty buffers at once
                got = b""
                loop = asyncio.get_running_loop()
                while len(got) < 10_000:
                    got += await loop.run_in_executor(None, os.read, client, 65536)
                assert got == b"\xff" * 10_000
            finally:
                os.close(client)
    assert set(os.listdir("/proc/self/fd")) <= fds_before | {str(n) for n in range(3)}
