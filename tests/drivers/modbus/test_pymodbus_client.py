"""The pymodbus-backed client (RTU framing) against our simulator, over loopback TCP and a pty.

What is tested here is ours, not pymodbus': that a cancellation is never lost on its way
through the library, which the daemon's shutdown depends on, and that on a shared RS-485
pair a late answer is counted and no request is sent over it.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from smartpole.drivers.line import frame_gap_s
from smartpole.drivers.modbus.client import Endpoint
from smartpole.drivers.modbus.faults import ReplyTimeoutError
from smartpole.drivers.modbus.points import RegisterKind
from smartpole.drivers.modbus.pymodbus_client import PymodbusClient
from smartpole.drivers.sim.faults import FaultMode
from smartpole.drivers.sim.modbus_bank import RegisterBank
from smartpole.drivers.sim.modbus_tcp import ModbusTcpServer
from smartpole.drivers.sim.rtu_pty import RtuPtyServer

VALUES = [11, 22, 33]


class _CancelWhenTheReplyArrives(PymodbusClient):
    """Cancels ``victim`` from inside pymodbus' receive path: the reply and the
    cancellation reach the waiting task in the same loop turn, every time."""

    victim: asyncio.Task[list[int]] | None = None

    def _trace(self, sending: bool, data: bytes) -> bytes:
        if not sending and self.victim is not None:
            self.victim.cancel()
        return super()._trace(sending, data)


@pytest.mark.asyncio
async def test_a_cancel_that_arrives_with_the_reply_is_not_lost() -> None:
    # pymodbus awaits each reply with asyncio.wait_for, which on Python 3.11 returns the
    # reply and drops such a cancellation (CPython gh-86296). A bus task that lost it polled
    # on, and the daemon's shutdown waited for it until systemd's kill.
    bank = RegisterBank()
    bank.set(RegisterKind.HOLDING, 0, VALUES)
    async with ModbusTcpServer({1: bank}, framing="rtu") as server:
        endpoint = Endpoint("rtu-over-tcp", host=server.host, tcp_port=server.port)
        client = _CancelWhenTheReplyArrives(endpoint, timeout_s=2.0)
        await client.connect()
        try:
            assert await client.read(RegisterKind.HOLDING, 0, 3, 1) == VALUES  # the rig works
            client.victim = asyncio.create_task(client.read(RegisterKind.HOLDING, 0, 3, 1))
            with pytest.raises(asyncio.CancelledError):
                await client.victim
            assert client.victim.cancelled()
        finally:
            client.close()


class _AskAsSoonAsStrayBytesArrive(PymodbusClient):
    """Sends the next request the moment bytes arrive unasked, from inside the receive
    path: without listening before talking it would go out over the frame in progress."""

    unit = 1
    asked: asyncio.Task[list[int]] | None = None
    stray_at = 0.0
    sent_at = 0.0

    def _trace(self, sending: bool, data: bytes) -> bytes:
        now = time.monotonic()
        if sending:
            self.sent_at = now
        elif not self._outstanding and self.asked is None:
            self.stray_at = now
            self.asked = asyncio.get_running_loop().create_task(
                self.read(RegisterKind.HOLDING, 0, 3, self.unit)
            )
        return super()._trace(sending, data)


@pytest.mark.asyncio
async def test_a_late_answer_is_counted_and_talked_over_by_no_request() -> None:
    slow, good = RegisterBank(), RegisterBank()
    slow.set(RegisterKind.HOLDING, 0, [7, 8, 9])
    good.set(RegisterKind.HOLDING, 0, VALUES)
    baud = 1200  # a long inter-frame silence (32 ms), so listening before talking shows
    async with RtuPtyServer({1: good, 2: slow}, baudrate=baud, faults={2: FaultMode.SLOW}) as sim:
        client = _AskAsSoonAsStrayBytesArrive(
            Endpoint("rtu", port=sim.path, baudrate=baud), timeout_s=0.5
        )
        await client.connect()
        try:
            with pytest.raises(ReplyTimeoutError):
                await client.read(RegisterKind.HOLDING, 0, 3, 2)
            # The late answer arrives, and the request it set off reaches the simulator.
            await sim.wait_until(lambda: client.asked is not None, 5)
            assert client.asked is not None
            # The neighbour's answer, not the late one (unit 2's values) taken for it.
            assert await client.asked == VALUES
        finally:
            client.close()
    assert client.stray_bytes == 11  # unit, function, byte count, 3 registers, CRC
    assert client.sent_at - client.stray_at >= frame_gap_s(baud) * 0.99


@pytest.mark.asyncio
async def test_a_late_answer_is_never_taken_for_the_next_request_of_the_same_unit() -> None:
    bank = RegisterBank()
    bank.set(RegisterKind.HOLDING, 0, [7, 8, 9, *VALUES])
    # The device answers SLOW_EXTRA_S (2 s) late: after the 1.5 s timeout, within one more.
    timeout_s = 1.5
    async with RtuPtyServer({1: bank}, baudrate=9600, faults={1: FaultMode.SLOW}) as sim:
        client = PymodbusClient(Endpoint("rtu", port=sim.path, baudrate=9600), timeout_s=timeout_s)
        await client.connect()
        try:
            with pytest.raises(ReplyTimeoutError):
                await client.read(RegisterKind.HOLDING, 0, 3, 1)
            # Same unit, function and count: an RTU answer carries nothing else to tell
            # registers 0-2 from 3-5. The late answer must not come back as this one's.
            with pytest.raises(ReplyTimeoutError):
                await client.read(RegisterKind.HOLDING, 3, 3, 1)
        finally:
            client.close()
    assert client.late_answers == 1
    assert client.stray_bytes == 11  # the late answer, dropped: unit, function, count, 3 regs, CRC
