"""The real Pelco-D client against simulated cameras over a pseudo-terminal."""

from __future__ import annotations

import asyncio
import os
import termios
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest
import pytest_asyncio

from smartpole.drivers.errors import DeviceTimeoutError, TransportError
from smartpole.drivers.pelco_d import protocol
from smartpole.drivers.pelco_d.client import PelcoDClient
from smartpole.drivers.pelco_d.profile import PelcoDProfile
from smartpole.drivers.pelco_d.protocol import angular_distance
from smartpole.drivers.sim.faults import FaultMode
from smartpole.drivers.sim.pelco_d import PelcoDPtyServer, SimulatedCamera

BAUD = 9600
TOLERANCE = 10  # hundredths of a degree

FAST = PelcoDProfile(
    model="test-dome",
    manufacturer="test",
    protocol="pelco-d",
    max_preset=128,
    reserved_presets=[33, 34, 95],
    supports_position_query=True,
    pan_speed_deg_s=400,
    preset_speed_deg_s=1000,
    settle_s=0.1,
)
NO_QUERIES = FAST.model_copy(update={"model": "cheap-dome", "supports_position_query": False})


def close_to(a: tuple[int, int] | None, b: tuple[int, int], tolerance: int = TOLERANCE) -> bool:
    assert a is not None
    return all(angular_distance(x, y) <= tolerance for x, y in zip(a, b, strict=True))


@dataclass
class Rig:
    server: PelcoDPtyServer
    client: PelcoDClient

    def camera(self, address: int = 1) -> SimulatedCamera:
        return self.server.cameras[address]

    def true_position(self, address: int = 1) -> tuple[int, int]:
        return self.camera(address).position(self.server.now())


@pytest.fixture
def no_leaked_fds() -> Iterator[None]:
    before = set(os.listdir("/proc/self/fd"))
    yield
    assert set(os.listdir("/proc/self/fd")) <= before


@pytest_asyncio.fixture
async def rig(no_leaked_fds: None) -> AsyncIterator[Rig]:
    cameras = {
        1: SimulatedCamera(FAST, pan=1000, tilt=500),
        2: SimulatedCamera(NO_QUERIES),
        7: SimulatedCamera(FAST, pan=20000, tilt=35000),
    }
    async with (
        PelcoDPtyServer(cameras, baudrate=BAUD) as server,
        PelcoDClient(
            server.path,
            baudrate=BAUD,
            timeout_s=0.2,
            profiles={1: FAST, 2: NO_QUERIES, 7: FAST},
        ) as client,
    ):
        yield Rig(server, client)


# ----- the simulated head on its own (explicit time, no pty) ------------------------------


def test_simulated_head_moves_at_profile_speed_the_short_way() -> None:
    cam = SimulatedCamera(FAST, pan=35000, tilt=0)
    cam.apply(protocol.set_pan(1, 1000), now=10.0)  # 20° ahead through 0, at 1000 °/s
    assert cam.position(10.0) == (35000, 0)
    assert cam.position(10.01) == (0, 0)  # 10° in 10 ms
    assert cam.moving(10.015)
    assert cam.position(10.02) == (1000, 0)
    assert cam.position(99.0) == (1000, 0)
    assert not cam.moving(10.03)


def test_simulated_head_manual_move_stop_and_presets() -> None:
    cam = SimulatedCamera(FAST)
    cam.apply(protocol.pan_tilt(1, -1.0, -1.0), now=0.0)  # left and down at 400 °/s
    assert cam.position(0.1) == (36000 - 4000, 4000)
    cam.apply(protocol.stop(1), now=0.1)
    assert cam.position(5.0) == (32000, 4000)
    cam.apply(protocol.set_preset(1, 3), now=5.0)
    cam.apply(protocol.set_preset(1, 95), now=5.0)  # reserved: not a view
    assert cam.presets == {3: (32000, 4000)}
    cam.apply(protocol.set_pan(1, 0), now=5.0)
    cam.apply(protocol.go_to_preset(1, 3), now=6.0)
    assert cam.position(6.0) == (0, 4000)
    assert cam.position(6.1) == (32000, 4000)
    cam.apply(protocol.clear_preset(1, 3), now=7.0)
    cam.apply(protocol.go_to_preset(1, 3), now=7.0)  # undefined preset: ignored
    assert not cam.moving(7.0)
    reply = cam.apply(protocol.query_tilt(1), now=7.0)
    assert reply == protocol.position_reply(1, "tilt", 4000)


# ----- client and simulator over the pty --------------------------------------------------


@pytest.mark.asyncio
async def test_go_to_preset_reads_back_the_preset_position(rig: Rig) -> None:
    client = rig.client
    assert await client.query_position(1) == (1000, 500)
    assert close_to(await client.move_to(1, 9000, 1500), (9000, 1500))
    await client.set_preset(1, 5)
    away = await client.move_to(1, 27000, 34000)  # the long way round for both axes
    assert close_to(away, (27000, 34000))
    assert rig.camera().presets[5] == (9000, 1500)

    ended = await client.go_to_preset(1, 5)

    assert close_to(ended, (9000, 1500))
    assert ended == rig.true_position()
    assert not rig.camera().moving(rig.server.now())
    stats = rig.server.stats
    assert stats.by_kind["go_to_preset"] == 1
    assert stats.by_kind["set_preset"] == 1
    assert stats.by_kind["query_pan"] == stats.by_kind["query_tilt"] >= 3
    assert client.stats.replies == stats.answered
    assert client.stats.bad_checksums == client.stats.timeouts == 0


@pytest.mark.asyncio
async def test_manual_move_then_stop_holds_still(rig: Rig) -> None:
    client = rig.client
    start = await client.query_position(1)
    await client.send(protocol.pan_tilt(1, 0.5, 0))
    moved = start
    for _ in range(50):  # observe the head moving; each query waits on the wire
        moved = await client.query_position(1)
        if moved != start:
            break
    assert moved is not None
    assert start is not None
    assert moved[0] != start[0]
    assert moved[1] == start[1]
    await client.stop(1)
    held = await client.query_position(1)  # answered after the stop was executed
    assert not rig.camera().moving(rig.server.now())
    assert await client.query_position(1) == held == rig.true_position()
    assert rig.server.stats.by_kind["stop"] == 1


@pytest.mark.asyncio
async def test_no_answer_returns_none_then_recovers(rig: Rig) -> None:
    client = rig.client
    rig.server.set_fault(1, FaultMode.NO_ANSWER)
    assert await client.query_position(1) is None
    with pytest.raises(DeviceTimeoutError, match="camera 1"):
        await client.query_position(1, required=True)
    # A dead camera does not execute commands either; the read-back gives up at its deadline.
    assert await client.go_to_preset(1, 1) is None
    assert client.stats.timeouts >= 3
    assert rig.server.stats.ignored >= 3

    rig.server.set_fault(1, FaultMode.NONE)
    assert await client.query_position(1, required=True) == (1000, 500)


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "fault", [FaultMode.BAD_CRC, FaultMode.GARBAGE, FaultMode.SLOW, FaultMode.EXCEPTION]
)
async def test_spoiled_answers_are_not_believed(rig: Rig, fault: FaultMode) -> None:
    client = rig.client
    rig.server.set_fault(7, fault)
    assert await client.query_position(7) is None
    if fault is FaultMode.BAD_CRC:
        assert client.stats.bad_checksums >= 1
    if fault in (FaultMode.BAD_CRC, FaultMode.GARBAGE):
        assert client.stats.garbage_bytes >= 1
    # The command still runs under spoiled-answer faults; EXCEPTION is silence in Pelco-D.
    seen = rig.server.stats.requests
    await client.send(protocol.set_pan(7, 22000))
    await asyncio.wait_for(rig.server.wait_received(seen + 1), 5)  # before lifting the fault
    rig.server.set_fault(7, FaultMode.NONE)
    executed = fault is not FaultMode.EXCEPTION
    ended = await client.wait_until_still(7)
    assert close_to(ended, (22000 if executed else 20000, 35000))
    assert rig.server.stats.by_kind["set_pan"] == (1 if executed else 0)
    assert client.stats.replies >= 2


@pytest.mark.asyncio
async def test_cameras_share_the_bus_by_address(rig: Rig) -> None:
    client = rig.client
    assert await client.query_position(1) == (1000, 500)
    assert await client.query_position(7) == (20000, 35000)
    assert await client.query_position(9) is None  # nobody there
    assert rig.server.stats.by_address[1] == 2


@pytest.mark.asyncio
async def test_camera_without_position_queries(rig: Rig) -> None:
    client = rig.client
    await client.move_to(2, 9000, 0, verify=False)
    await client.set_preset(2, 4)
    assert await client.go_to_preset(2, 4) is None  # nothing to read back
    assert await client.query_position(2) is None


@pytest.mark.asyncio
async def test_reserved_and_out_of_range_presets_are_refused_before_sending(rig: Rig) -> None:
    client = rig.client
    sent = client.stats.frames_sent
    with pytest.raises(ValueError, match="preset 95 is reserved on test-dome"):
        await client.go_to_preset(1, 95)
    with pytest.raises(ValueError, match=r"outside 1\.\.128"):
        await client.set_preset(1, 200)
    with pytest.raises(ValueError, match=r"preset number must be 1\.\.255"):
        await client.clear_preset(1, 0)
    with pytest.raises(ValueError, match=r"address must be 1\.\.255"):
        await client.go_to_preset(0, 1)
    assert client.stats.frames_sent == sent


@pytest.mark.asyncio
async def test_cancelled_read_back_leaves_the_client_usable(rig: Rig) -> None:
    client = rig.client
    rig.server.set_fault(1, FaultMode.SLOW)  # the read-back would wait for a long time
    seen = rig.server.stats.requests
    task = asyncio.create_task(client.go_to_preset(1, 1))
    # The preset call and the first position query have reached the camera.
    await asyncio.wait_for(rig.server.wait_received(seen + 2), 5)
    assert not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    rig.server.set_fault(1, FaultMode.NONE)
    assert await client.query_position(7) == (20000, 35000)


@pytest.mark.asyncio
@pytest.mark.usefixtures("no_leaked_fds")
async def test_port_errors_become_transport_errors() -> None:
    with pytest.raises(TransportError, match="cannot open serial port"):
        async with PelcoDClient("/dev/does-not-exist"):
            pass
    server = PelcoDPtyServer({1: SimulatedCamera(FAST)})
    async with server, PelcoDClient(server.path, timeout_s=0.2) as client:
        assert await client.query_position(1) == (0, 0)  # 2400 baud, the default
        await server.aclose()  # the line goes away under the client
        with pytest.raises(TransportError, match="failed"):
            await client.query_position(1)
        with pytest.raises(TransportError):
            await client.send(protocol.stop(1))
    with pytest.raises(TransportError, match="not open"):
        await client.send(protocol.stop(1))


@pytest.mark.asyncio
@pytest.mark.usefixtures("no_leaked_fds")
async def test_port_is_locked_against_a_second_master() -> None:
    """Like the Modbus RTU and DL/T 645 ports: a second client on the same line is refused
    instead of garbling both sides' frames, and the lock goes with the close."""
    async with PelcoDPtyServer({1: SimulatedCamera(FAST)}, baudrate=BAUD) as server:
        async with PelcoDClient(server.path, baudrate=BAUD, timeout_s=0.2) as client:
            with pytest.raises(TransportError, match="cannot open serial port"):
                async with PelcoDClient(server.path, baudrate=BAUD):
                    pass
            assert await client.query_position(1) == (0, 0)  # the holder is undisturbed
        async with PelcoDClient(server.path, baudrate=BAUD, timeout_s=0.2) as again:
            assert await again.query_position(1) == (0, 0)


@pytest.mark.asyncio
@pytest.mark.usefixtures("no_leaked_fds")
@pytest.mark.parametrize("stopbits", [1, 2])
async def test_stopbits_reach_the_line(stopbits: int) -> None:
    async with PelcoDPtyServer({1: SimulatedCamera(FAST)}, baudrate=BAUD) as server:
        async with PelcoDClient(server.path, baudrate=BAUD, stopbits=stopbits, timeout_s=0.2):
            fd = os.open(server.path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
            try:
                cflag = termios.tcgetattr(fd)[2]
            finally:
                os.close(fd)
            assert bool(cflag & termios.CSTOPB) == (stopbits == 2)
        with pytest.raises(ValueError, match="stopbits"):
            PelcoDClient(server.path, stopbits=3)
