"""The pymodbus-backed client (RTU framing) against our simulator over loopback TCP.

What is tested here is ours, not pymodbus': that a cancellation is never lost on its way
through the library, which the daemon's shutdown depends on.
"""

from __future__ import annotations

import asyncio

import pytest

from smartpole.drivers.modbus.client import Endpoint
from smartpole.drivers.modbus.points import RegisterKind
from smartpole.drivers.modbus.pymodbus_client import PymodbusClient
from smartpole.drivers.sim.modbus_bank import RegisterBank
from smartpole.drivers.sim.modbus_tcp import ModbusTcpServer

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
