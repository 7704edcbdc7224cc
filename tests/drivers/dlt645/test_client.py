"""The real DL/T 645 client (pyserial, non-blocking reader) against the simulator on a pty.

Every wait is on a meter's answer, a client timeout or the simulator reporting that it has
answered everything it received; nothing sleeps to synchronise.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from helpers.paths import PROFILES
from smartpole.agent.buses.registry import load_profile
from smartpole.drivers.dlt645.client import Dlt645Client
from smartpole.drivers.dlt645.frame import (
    Frame,
    FrameReader,
    read_address_reply,
    read_data_reply,
    read_data_request,
)
from smartpole.drivers.dlt645.profile import Dlt645Profile
from smartpole.drivers.errors import (
    DeviceExceptionError,
    DeviceTimeoutError,
    ProtocolError,
    TransportError,
)
from smartpole.drivers.sim.dlt645 import Dlt645PtyServer, SimulatedMeter
from smartpole.drivers.sim.faults import FaultMode
from smartpole.drivers.sim.pty import PtyEndpoint


def _profile() -> Dlt645Profile:
    profile = load_profile(PROFILES / "dlt645-meter.yaml")
    assert isinstance(profile, Dlt645Profile)
    return profile


PROFILE = _profile()
ADDRESS = "202411110002"
VOLTAGE = PROFILE.points["voltage"]
# Distinct values, negative where the point is signed, so a mixed-up DI, byte order or sign
# shows up as a wrong number.
SCENARIO = {
    "voltage": 231.4,
    "current": -3.217,
    "active_power": -0.7441,
    "power_factor": -0.873,
    "frequency": 49.97,
    "combined_active_energy": -1234.56,
    "forward_active_energy": 98765.43,
}
# A pty has no parity bit: Linux drops PARENB, and refuses a later tcsetattr whose only
# change is PARENB, so reopening a pty with the meters' usual 8E1 fails. The rigs use 8N1.
PARITY = "N"
FAULT_TIMEOUT_S = 0.5
# Fault rigs run the line at 9600 baud so a healthy answer (~0.08 s of emulated wire time
# instead of ~0.23 s at 2400) sits far inside the short client timeout on a loaded machine.
FAST = 9600
# Generous upper bound for the loop and the pty on a loaded CI machine.
SLACK_S = 0.4


def _meter(seed: int = 7) -> SimulatedMeter:
    return SimulatedMeter(PROFILE, seed=seed)


@contextlib.asynccontextmanager
async def _rig(
    meters: dict[str, SimulatedMeter] | None = None, *, timeout_s: float = 2.0, **kwargs: Any
) -> AsyncIterator[tuple[Dlt645PtyServer, Dlt645Client]]:
    async with (
        Dlt645PtyServer(meters or {ADDRESS: _meter()}, **kwargs) as server,
        Dlt645Client(server.path, parity=PARITY, timeout_s=timeout_s) as client,
    ):
        yield server, client


@pytest.mark.asyncio
async def test_reads_every_point_of_the_profile() -> None:
    meter = _meter()
    for name, value in SCENARIO.items():
        meter.set_value(name, value)
    async with _rig({ADDRESS: meter}) as (server, client):
        got = {
            name: await client.read(ADDRESS, spec.di, spec) for name, spec in PROFILE.points.items()
        }
        stats = server.stats
    assert got == SCENARIO
    assert (stats.requests, stats.answered, stats.by_address) == (7, 7, {ADDRESS: 7})
    assert (client.crc_errors, client.garbage_bytes) == (0, 0)


@pytest.mark.asyncio
async def test_read_address() -> None:
    async with _rig() as (_, client):
        assert await client.read_address() == ADDRESS


@pytest.mark.asyncio
async def test_each_meter_answers_for_itself() -> None:
    first, second = _meter(1), _meter(2)
    first.set_value("voltage", 219.9)
    second.set_value("voltage", 236.2)
    async with _rig({"000000000001": first, "000000000002": second}) as (server, client):
        assert await client.read("000000000001", VOLTAGE.di, VOLTAGE) == 219.9
        assert await client.read("000000000002", VOLTAGE.di, VOLTAGE) == 236.2
        # A wildcard in the high bytes reaches the one meter whose low byte matches.
        assert await client.read("AAAAAAAAAA02", VOLTAGE.di, VOLTAGE) == 236.2
        assert server.stats.by_address == {"000000000001": 1, "000000000002": 2}


@pytest.mark.asyncio
async def test_unknown_di_is_error_no_requested_data() -> None:
    async with _rig() as (_, client):
        with pytest.raises(DeviceExceptionError, match="no requested data") as caught:
            await client.read_raw(ADDRESS, 0x0201FF00)
        assert caught.value.code == 0x02


@pytest.mark.asyncio
async def test_meter_that_is_not_on_the_bus_times_out() -> None:
    async with _rig(timeout_s=FAULT_TIMEOUT_S, baudrate=FAST) as (server, client):
        started = time.monotonic()
        with pytest.raises(DeviceTimeoutError, match="000000000099") as caught:
            await client.read("000000000099", VOLTAGE.di, VOLTAGE)
        assert FAULT_TIMEOUT_S <= time.monotonic() - started < FAULT_TIMEOUT_S + SLACK_S
        assert "corrupt" not in str(caught.value)
        assert server.stats.answered == 0


# --- faults --------------------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("mode", "corrupt"),
    [
        (FaultMode.NO_ANSWER, False),
        (FaultMode.SLOW, False),
        (FaultMode.BAD_CRC, True),
        (FaultMode.GARBAGE, True),
    ],
)
async def test_fault_times_out_within_the_client_timeout_and_recovers(
    mode: FaultMode, corrupt: bool
) -> None:
    meter = _meter()
    meter.set_value("voltage", 228.8)
    async with _rig({ADDRESS: meter}, timeout_s=FAULT_TIMEOUT_S, baudrate=FAST) as (server, client):
        server.set_fault(ADDRESS, mode)
        started = time.monotonic()
        with pytest.raises(DeviceTimeoutError) as caught:
            await client.read(ADDRESS, VOLTAGE.di, VOLTAGE)
        elapsed = time.monotonic() - started
        assert FAULT_TIMEOUT_S <= elapsed < FAULT_TIMEOUT_S + SLACK_S
        assert ("a corrupt reply was seen" in str(caught.value)) is corrupt
        if mode is FaultMode.BAD_CRC:
            assert client.crc_errors == 1
        if corrupt:
            assert client.garbage_bytes > 0
        else:
            assert (client.crc_errors, client.garbage_bytes) == (0, 0)

        server.set_fault(ADDRESS, FaultMode.NONE)
        await server.drained()  # a SLOW answer is still on its way until then
        assert await client.read(ADDRESS, VOLTAGE.di, VOLTAGE) == 228.8
        assert await client.read_address() == ADDRESS


@pytest.mark.asyncio
async def test_exception_fault_surfaces_the_error_code_and_recovers() -> None:
    async with _rig(timeout_s=FAULT_TIMEOUT_S, baudrate=FAST) as (server, client):
        server.set_fault(ADDRESS, FaultMode.EXCEPTION)
        started = time.monotonic()
        with pytest.raises(DeviceExceptionError, match="other error") as caught:
            await client.read(ADDRESS, VOLTAGE.di, VOLTAGE)
        assert caught.value.code == 0x01
        assert time.monotonic() - started < FAULT_TIMEOUT_S
        with pytest.raises(DeviceExceptionError):
            await client.read_address()
        server.set_fault(ADDRESS, FaultMode.NONE)
        assert await client.read(ADDRESS, VOLTAGE.di, VOLTAGE) == 220.0


@pytest.mark.asyncio
async def test_faults_are_per_meter() -> None:
    meters = {"000000000001": _meter(1), "000000000002": _meter(2)}
    async with _rig(meters, timeout_s=FAULT_TIMEOUT_S, baudrate=FAST) as (server, client):
        server.set_fault("000000000001", FaultMode.NO_ANSWER)
        with pytest.raises(DeviceTimeoutError):
            await client.read("000000000001", VOLTAGE.di, VOLTAGE)
        assert await client.read("000000000002", VOLTAGE.di, VOLTAGE) == 220.0


@pytest.mark.asyncio
async def test_faults_given_at_start() -> None:
    async with _rig(
        timeout_s=FAULT_TIMEOUT_S, baudrate=FAST, faults={ADDRESS: FaultMode.NO_ANSWER}
    ) as (
        server,
        client,
    ):
        with pytest.raises(DeviceTimeoutError):
            await client.read_address()
        assert server.stats.by_address == {ADDRESS: 1}


# --- the client against a hand-driven line --------------------------------------------------


async def _next_request(endpoint: PtyEndpoint) -> Frame:
    reader = FrameReader()
    while True:
        frames = reader.feed(await endpoint.read())
        if frames:
            (frame,) = frames
            return frame


@pytest.mark.asyncio
async def test_client_ignores_echo_other_meters_and_stale_answers() -> None:
    """An adapter that echoes our request, another meter, a late answer to an earlier DI:
    none of them is the answer; the frame after them is."""
    async with (
        PtyEndpoint() as line,
        Dlt645Client(line.path, parity=PARITY, timeout_s=2.0) as client,
    ):
        reading = asyncio.create_task(client.read(ADDRESS, VOLTAGE.di, VOLTAGE))
        request = await _next_request(line)
        assert (request.address, request.control, request.data) == (
            ADDRESS,
            0x11,
            bytes.fromhex("00 01 01 02"),
        )
        line.write(
            read_data_request(ADDRESS, VOLTAGE.di)  # our own request, echoed
            + read_data_reply("000000000001", VOLTAGE.di, bytes.fromhex("11 21"))
            + read_data_reply(ADDRESS, 0x02020100, bytes.fromhex("00 10 00"))
            + read_data_reply(ADDRESS, VOLTAGE.di, bytes.fromhex("37 22"))
        )
        assert await reading == 223.7
        assert (client.crc_errors, client.garbage_bytes) == (0, 0)


@pytest.mark.asyncio
async def test_reply_with_the_wrong_value_length_is_a_protocol_error() -> None:
    async with (
        PtyEndpoint() as line,
        Dlt645Client(line.path, parity=PARITY, timeout_s=2.0) as client,
    ):
        reading = asyncio.create_task(client.read(ADDRESS, VOLTAGE.di, VOLTAGE))
        await _next_request(line)
        line.write(read_data_reply(ADDRESS, VOLTAGE.di, bytes.fromhex("37 22 00")))
        with pytest.raises(ProtocolError, match="3 value bytes"):
            await reading


@pytest.mark.asyncio
async def test_a_reply_behind_a_false_frame_start_is_still_found() -> None:
    """Noise "68 .. 68" before the reply claims a long frame; when the line goes quiet the
    client drops it and finds the reply inside, well before its timeout."""
    async with (
        PtyEndpoint() as line,
        Dlt645Client(line.path, parity=PARITY, timeout_s=2.0) as client,
    ):
        reading = asyncio.create_task(client.read_address())
        await _next_request(line)
        started = time.monotonic()
        noise = bytes.fromhex("68 00 00 00 00 00 00")
        line.write(noise + read_address_reply("000000099900", preamble=False))
        assert await reading == "000000099900"
        assert time.monotonic() - started < 1.0
        assert client.garbage_bytes == 7


@pytest.mark.asyncio
async def test_cancelled_read_is_re_raised_and_the_client_stays_usable() -> None:
    async with (
        PtyEndpoint() as line,
        Dlt645Client(line.path, parity=PARITY, timeout_s=30.0) as client,
    ):
        reading = asyncio.create_task(client.read(ADDRESS, VOLTAGE.di, VOLTAGE))
        await _next_request(line)
        reading.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reading
        reading = asyncio.create_task(client.read(ADDRESS, VOLTAGE.di, VOLTAGE))
        await _next_request(line)
        line.write(read_data_reply(ADDRESS, VOLTAGE.di, bytes.fromhex("01 22")))
        assert await reading == 220.1


@pytest.mark.asyncio
async def test_the_loop_keeps_running_while_a_read_waits() -> None:
    ticks = 0

    async def heartbeat() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)  # the workload being measured, not synchronisation
            ticks += 1

    async with _rig(timeout_s=FAULT_TIMEOUT_S, baudrate=FAST) as (server, client):
        server.set_fault(ADDRESS, FaultMode.NO_ANSWER)
        beating = asyncio.create_task(heartbeat())
        try:
            with pytest.raises(DeviceTimeoutError):
                await client.read(ADDRESS, VOLTAGE.di, VOLTAGE)
        finally:
            beating.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beating
    assert ticks >= 10


# --- the port itself -----------------------------------------------------------------------


@pytest.mark.asyncio
async def test_missing_port_is_a_transport_error() -> None:
    client = Dlt645Client("/dev/ttyDOES-NOT-EXIST")
    with pytest.raises(TransportError, match="ttyDOES-NOT-EXIST"):
        await client.open()
    assert not client.is_open


@pytest.mark.asyncio
async def test_port_is_closed_on_exit_and_can_be_reopened() -> None:
    async with Dlt645PtyServer({ADDRESS: _meter()}) as server:
        async with Dlt645Client(server.path, parity=PARITY) as client:
            assert client.is_open
        assert not client.is_open
        with pytest.raises(TransportError, match="not open"):
            await client.read_address()
        # Opening again works: the descriptor and its exclusive lock were released.
        async with Dlt645Client(server.path, parity=PARITY) as again:
            assert await again.read_address() == ADDRESS


@pytest.mark.asyncio
async def test_a_port_that_goes_away_is_a_transport_error() -> None:
    async with (
        Dlt645PtyServer({ADDRESS: _meter()}) as server,
        Dlt645Client(server.path, parity=PARITY) as client,
    ):
        await server.aclose()  # the pty disappears, like an unplugged USB adapter
        with pytest.raises(TransportError):
            await client.read_address()


# --- the simulated meter -------------------------------------------------------------------


def test_meter_walks_inside_its_bounds_and_energy_only_grows() -> None:
    meter = _meter(3)
    previous = dict(meter.values)
    moved = set()
    for _ in range(300):
        meter.step()
        for name, sim in PROFILE.simulation.items():
            value = meter.values[name]
            assert sim.min <= value <= sim.max, name
            if sim.monotonic:
                assert value >= previous[name], name
            if value != previous[name]:
                moved.add(name)
        previous = dict(meter.values)
    assert moved == {n for n, s in PROFILE.simulation.items() if s.step > 0}


def test_meter_is_reproducible_from_its_seed() -> None:
    a, b, c = _meter(5), _meter(5), _meter(6)
    for _ in range(20):
        for meter in (a, b, c):
            meter.step()
    assert a.values == b.values
    assert a.values != c.values


def test_meter_raw_bytes_follow_the_point_format() -> None:
    meter = _meter()
    meter.set_value("current", -1.25)
    assert meter.raw(PROFILE.points["current"].di) == bytes.fromhex("50 12 80")
    assert meter.raw(0x0201FF00) is None
    meter.set_value("voltage", 220.04)
    assert meter.values["voltage"] == 220.0  # rounded to the layout, as a meter would


@pytest.mark.asyncio
async def test_a_late_answer_is_never_taken_for_the_next_read_of_the_same_point() -> None:
    meter = _meter()
    meter.set_value("voltage", 228.8)
    # The meter answers SLOW_EXTRA_S (2 s) late: after the 1.5 s timeout, within one more.
    async with _rig({ADDRESS: meter}, timeout_s=1.5, baudrate=FAST) as (server, client):
        server.set_fault(ADDRESS, FaultMode.SLOW)
        with pytest.raises(DeviceTimeoutError):
            await client.read(ADDRESS, VOLTAGE.di, VOLTAGE)
        server.set_fault(ADDRESS, FaultMode.NONE)
        meter.set_value("voltage", 231.4)
        # Same address and DI: only timing tells the late answer (228.8) from this one's.
        assert await client.read(ADDRESS, VOLTAGE.di, VOLTAGE) == 231.4
    assert client.late_frames == 1
