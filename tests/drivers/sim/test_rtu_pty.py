"""The pty simulator against the real client stack: pymodbus' serial client over pyserial.

Every wait here is on a Modbus answer or a client timeout; nothing sleeps to synchronise.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator

import pytest
from pymodbus.client import AsyncModbusSerialClient
from pymodbus.exceptions import ModbusIOException
from pymodbus.pdu import ExceptionResponse

from smartpole.drivers.line import wire_time_s
from smartpole.drivers.modbus.points import RegisterKind
from smartpole.drivers.sim.faults import FaultMode
from smartpole.drivers.sim.modbus_bank import RegisterBank
from smartpole.drivers.sim.rtu_pty import RtuPtyServer

BLOCK = 0x01F4
VALUES = [0x0100 + i for i in range(14)]


def _bank() -> RegisterBank:
    bank = RegisterBank()
    bank.set(RegisterKind.HOLDING, BLOCK, VALUES)
    bank.set(RegisterKind.HOLDING, 0x0300, [0, 0])
    return bank


@contextlib.asynccontextmanager
async def _client(path: str, response_timeout: float = 1) -> AsyncIterator[AsyncModbusSerialClient]:
    client = AsyncModbusSerialClient(port=path, baudrate=9600, timeout=response_timeout, retries=0)
    try:
        assert await client.connect()
        yield client
    finally:
        client.close()


@contextlib.asynccontextmanager
async def _rig(
    bank: RegisterBank | None = None, *, response_timeout: float = 1, **kwargs: float
) -> AsyncIterator[tuple[RtuPtyServer, AsyncModbusSerialClient]]:
    async with (
        RtuPtyServer({1: bank or _bank()}, **kwargs) as server,
        _client(server.path, response_timeout) as client,
    ):
        yield server, client


@pytest.mark.asyncio
async def test_read_holding_registers() -> None:
    async with _rig() as (server, client):
        rr = await client.read_holding_registers(BLOCK, count=14, device_id=1)
        assert not rr.isError()
        assert rr.registers == VALUES
        stats = server.stats
        assert (stats.requests, stats.answered, stats.by_address) == (1, 1, {1: 1})


@pytest.mark.asyncio
async def test_write_register_round_trip() -> None:
    bank = _bank()
    async with _rig(bank) as (_, client):
        wr = await client.write_register(0x0301, 0xBEEF, device_id=1)
        assert not wr.isError()
        assert (wr.address, wr.registers) == (0x0301, [0xBEEF])
        rr = await client.read_holding_registers(0x0300, count=2, device_id=1)
        assert rr.registers == [0, 0xBEEF]
    assert bank.get(RegisterKind.HOLDING, 0x0301, 1) == [0xBEEF]


@pytest.mark.asyncio
async def test_unmapped_read_is_exception_2() -> None:
    async with _rig() as (_, client):
        rr = await client.read_holding_registers(0x0000, count=2, device_id=1)
        assert rr.isError()
        assert isinstance(rr, ExceptionResponse)
        assert (rr.function_code, rr.exception_code) == (0x83, 2)


@pytest.mark.asyncio
async def test_exception_fault_is_server_device_failure() -> None:
    async with _rig() as (server, client):
        server.set_fault(1, FaultMode.EXCEPTION)
        rr = await client.read_holding_registers(BLOCK, count=1, device_id=1)
        assert rr.isError()
        assert rr.exception_code == 4


@pytest.mark.asyncio
@pytest.mark.parametrize("fault", [FaultMode.NO_ANSWER, FaultMode.BAD_CRC, FaultMode.GARBAGE])
async def test_lost_answer_times_out_then_recovers(fault: FaultMode) -> None:
    async with _rig() as (server, client):
        server.set_fault(1, fault)
        with pytest.raises(ModbusIOException, match="No response received"):
            await client.read_holding_registers(BLOCK, count=2, device_id=1)
        server.set_fault(1, FaultMode.NONE)
        rr = await client.read_holding_registers(BLOCK, count=2, device_id=1)
        assert rr.registers == VALUES[:2]
        stats = server.stats
        assert stats.requests == 2
        assert stats.answered == (1 if fault is FaultMode.NO_ANSWER else 2)


@pytest.mark.asyncio
async def test_unserved_unit_times_out() -> None:
    async with _rig() as (server, client):
        with pytest.raises(ModbusIOException) as info:
            await client.read_holding_registers(BLOCK, count=1, device_id=7)
        assert info.value.dev_id == 7
        assert server.stats.by_address == {7: 1}
        assert server.stats.answered == 0


@pytest.mark.asyncio
async def test_answer_waits_turnaround_plus_wire_time() -> None:
    loop = asyncio.get_running_loop()
    async with _rig(turnaround_s=0.2) as (_, client):
        start = loop.time()
        rr = await client.read_holding_registers(BLOCK, count=14, device_id=1)
        elapsed = loop.time() - start
    assert rr.registers == VALUES
    assert elapsed >= 0.2 + wire_time_s(3 + 28 + 2, 9600)


@pytest.mark.asyncio
async def test_slow_fault_answers_late() -> None:
    loop = asyncio.get_running_loop()
    async with _rig(response_timeout=5) as (server, client):
        server.set_fault(1, FaultMode.SLOW)
        start = loop.time()
        rr = await client.read_holding_registers(BLOCK, count=1, device_id=1)
        assert loop.time() - start >= 2.0
        assert rr.registers == VALUES[:1]


@pytest.mark.asyncio
async def test_noise_on_the_line_is_skipped() -> None:
    async with _rig() as (server, client):
        # A second writer on the bus: noise whose header promises a 209-byte frame, so only
        # the line falling silent lets the slave give up on it and find the real request.
        fd = os.open(server.path, os.O_RDWR | os.O_NOCTTY)
        try:
            os.write(fd, bytes([1, 16, 0, 0, 0, 1, 200]))
        finally:
            os.close(fd)
        rr = await client.read_holding_registers(BLOCK, count=3, device_id=1)
        assert rr.registers == VALUES[:3]
        assert server.stats.bad_frames == 1


@pytest.mark.asyncio
async def test_client_can_reopen_the_port() -> None:
    async with RtuPtyServer({1: _bank()}) as server:
        for _ in range(2):
            async with _client(server.path) as client:
                rr = await client.read_holding_registers(BLOCK, count=1, device_id=1)
                assert rr.registers == VALUES[:1]
        assert server.stats.answered == 2


@pytest.mark.asyncio
async def test_cancellation_closes_everything() -> None:
    fds_before = set(os.listdir("/proc/self/fd"))
    started = asyncio.Event()
    paths: list[str] = []

    async def serve() -> None:
        async with RtuPtyServer({1: _bank()}) as server:
            paths.append(server.path)
            started.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(serve())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert set(os.listdir("/proc/self/fd")) == fds_before
    assert paths


@pytest.mark.asyncio
async def test_a_slow_unit_does_not_hold_up_its_neighbour_but_its_late_answer_collides() -> None:
    loop = asyncio.get_running_loop()
    banks = {}
    for unit in (1, 2):
        banks[unit] = RegisterBank()
        banks[unit].set(RegisterKind.HOLDING, 0, list(range(125)))
    async with (
        RtuPtyServer(banks, faults={2: FaultMode.SLOW}) as server,
        _client(server.path, response_timeout=0.5) as client,
    ):
        with pytest.raises(ModbusIOException):
            await client.read_holding_registers(0, count=125, device_id=2)
        # Each slave has its own CPU: unit 1 answers while unit 2 still thinks.
        start = loop.time()
        rr = await client.read_holding_registers(0, count=125, device_id=1)
        assert rr.registers == list(range(125))
        assert loop.time() - start < 1.0
        # Unit 1 keeps the line busy (255-byte answers, 0.29 s each at 9600 baud) until
        # unit 2's late answer, as long, has gone out: they cannot both have been clean.
        async with asyncio.timeout(10):
            while server.stats.answered < server.stats.by_address[1] + 1:
                with contextlib.suppress(ModbusIOException):
                    await client.read_holding_registers(0, count=125, device_id=1)
        assert server.stats.collisions >= 1


@pytest.mark.asyncio
async def test_a_listener_takes_the_frame_after_another_units_request_for_its_answer() -> None:
    async with _rig(response_timeout=0.2, listen_window_s=0.5) as (server, client):
        with pytest.raises(ModbusIOException):  # nobody at unit 2; unit 1 now waits 0.5 s
            await client.read_holding_registers(BLOCK, count=1, device_id=2)
        with pytest.raises(ModbusIOException):  # 0.2 s later: taken for unit 2's answer
            await client.read_holding_registers(BLOCK, count=1, device_id=1)
        assert (server.stats.ignored, server.stats.by_address[1]) == (1, 1)
        # That frame ended its wait: the next request is heard as one.
        rr = await client.read_holding_registers(BLOCK, count=1, device_id=1)
        assert rr.registers == VALUES[:1]
        assert server.stats.ignored == 1
