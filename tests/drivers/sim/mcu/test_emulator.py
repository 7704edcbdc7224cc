"""The MCU emulator as a rig sees it: a pty with wire timing, ticks, faults, resets, inputs."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio

from smartpole.drivers.line import wire_time_s
from smartpole.drivers.mcu.client import McuClient
from smartpole.drivers.mcu.codes import EventKind, LevelSource
from smartpole.drivers.mcu.config import McuConfig
from smartpole.drivers.mcu.dictionary import DICTIONARY
from smartpole.drivers.mcu.frame import encode_frame
from smartpole.drivers.mcu.link import McuLink
from smartpole.drivers.mcu.msgproto import IDENTIFY
from smartpole.drivers.sim.mcu.emulator import McuEmulator
from smartpole.drivers.sim.mcu.wire import Faults

IDENTIFY_FRAME = encode_frame(0, IDENTIFY.encode(offset=0, count=48))
IDENTIFY_ANSWER_FRAME = encode_frame(
    0, DICTIONARY.encode("identify_response", offset=0, data=bytes(48))
)


@pytest.fixture(autouse=True)
def no_leaked_fds() -> Iterator[None]:
    before = set(os.listdir("/proc/self/fd"))
    yield
    assert set(os.listdir("/proc/self/fd")) <= before


@pytest_asyncio.fixture
async def emulator() -> AsyncIterator[McuEmulator]:
    async with McuEmulator(seed=5) as emu:
        yield emu


async def identify_round_trip(link: McuLink, answers: asyncio.Queue[bytes]) -> float:
    loop = asyncio.get_running_loop()
    started = loop.time()
    await link.send(IDENTIFY.encode(offset=0, count=48))
    while True:
        payload = await answers.get()
        if payload[0] == 1:  # identify_response (the boot push may come first)
            return loop.time() - started


@pytest.mark.asyncio
async def test_path_only_while_running_and_boot_ids_follow_the_seed() -> None:
    emu = McuEmulator(seed=42)
    with pytest.raises(RuntimeError):
        _ = emu.path
    async with emu:
        assert emu.path.startswith("/dev/")
        first = [emu.boot_id, emu.reset(), emu.reset()]
    async with McuEmulator(seed=42) as again:
        assert [again.boot_id, again.reset(), again.reset()] == first
    async with McuEmulator(seed=43) as other:
        assert other.boot_id != first[0]
    assert McuEmulator(boot_id=7).boot_id == 7


@pytest.mark.asyncio
async def test_answers_take_the_wire_time_of_both_directions() -> None:
    baud = 9600  # slow enough for the wire time to dominate the pty's
    wire = wire_time_s(len(IDENTIFY_FRAME) + len(IDENTIFY_ANSWER_FRAME), baud)
    answers: asyncio.Queue[bytes] = asyncio.Queue()
    async with (
        McuEmulator(baudrate=baud, seed=1) as emu,
        McuLink(emu.path, baudrate=baud, on_payload=answers.put_nowait) as link,
    ):
        elapsed = await identify_round_trip(link, answers)
        assert wire <= elapsed <= wire + 0.05
        emu.set_faults(delay_s=0.05)
        delayed = await identify_round_trip(link, answers)
        assert wire + 0.05 <= delayed <= wire + 0.05 + 0.05


@pytest.mark.asyncio
async def test_the_mcu_ticks_every_10_ms(emulator: McuEmulator) -> None:
    loop = asyncio.get_running_loop()
    await emulator.wait_until(lambda: emulator.twin.last_event >= 1)  # boot
    assert emulator.twin.active_config.impact_mg == 0  # boot default: impact off
    emulator.set_door(True)
    started = loop.time()
    await emulator.wait_until(lambda: emulator.twin.last_event == 2, timeout_s=1)
    assert loop.time() - started <= 0.02  # noticed by the next tick
    before = emulator.now_ms
    await emulator.wait_until(lambda: emulator.now_ms >= before + 50, timeout_s=1)


@pytest.mark.asyncio
async def test_drop_corrupt_garbage_and_silent_faults(emulator: McuEmulator) -> None:
    async with McuLink(emulator.path) as link:
        emulator.set_faults(drop=1.0, direction="to_mcu")
        await link.send(IDENTIFY.encode(offset=0, count=4))
        await emulator.wait_until(lambda: link.stats.rto_expiries >= 1, timeout_s=1)
        assert emulator.line_stats[0].dropped >= 1
        assert emulator.twin.expected == 0  # the MCU never heard it
        emulator.faults = Faults(corrupt=1.0, direction="to_host")
        await emulator.wait_until(lambda: emulator.twin.expected == 1, timeout_s=2)
        await emulator.wait_until(lambda: link.stats.discards >= 1, timeout_s=1)
        assert emulator.line_stats[1].corrupted >= 1
        emulator.faults = Faults(garbage=1.0, direction="to_host")
        await emulator.wait_until(lambda: emulator.line_stats[1].garbage_bytes > 0, timeout_s=3)
        emulator.faults = Faults()
        await asyncio.wait_for(link.drain(), 5)  # the window is free again
        emulator.faults = Faults(silent=True)
        heard = emulator.mcu_stats.rx_frames
        await link.send(IDENTIFY.encode(offset=0, count=4))
        await emulator.wait_until(lambda: link.stats.rto_expiries >= 3, timeout_s=2)
        assert emulator.mcu_stats.rx_frames == heard
        emulator.faults = Faults()
        await asyncio.wait_for(link.drain(), 5)


@pytest.mark.asyncio
async def test_fault_decisions_are_reproducible_from_the_seed() -> None:
    async def dropped_pattern(seed: int) -> list[int]:
        pattern = []
        async with McuEmulator(seed=seed, faults=Faults(drop=0.5, direction="to_mcu")) as emu:
            fd = os.open(emu.path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
            try:
                for n in range(20):
                    os.write(fd, encode_frame(n % 16, DICTIONARY.encode("get_config", tag=1)))
                    await emu.wait_until(lambda: emu.line_stats[0].frames == n + 1)  # noqa: B023
                    pattern.append(emu.line_stats[0].dropped)
            finally:
                os.close(fd)
        return pattern

    first = await dropped_pattern(9)
    assert first == await dropped_pattern(9)
    assert 0 < first[-1] < 20


@pytest.mark.asyncio
async def test_reset_mid_frame_cuts_the_frame_on_the_wire() -> None:
    baud = 9600
    answers: asyncio.Queue[bytes] = asyncio.Queue()
    async with (
        McuEmulator(baudrate=baud, seed=2) as emu,
        McuLink(emu.path, baudrate=baud, on_payload=answers.put_nowait) as link,
    ):
        old = emu.boot_id
        await link.send(IDENTIFY.encode(offset=0, count=48))
        await emu.wait_until(lambda: emu.twin.expected == 1, timeout_s=1)  # answering now
        new = emu.reset(mid_frame=True)
        assert new == emu.boot_id != old
        assert emu.line_stats[1].cut_frames == 1
        assert emu.resets == 1
        assert not emu.outputs.configured
        stats = link.stats
        await emu.wait_until(
            lambda: link.stats.discards + link.stats.idle_drops > stats.discards + stats.idle_drops,
            timeout_s=1,
        )


@pytest.mark.asyncio
async def test_inputs_in_physical_units_and_a_json_snapshot(emulator: McuEmulator) -> None:
    emulator.set_tilt(3.25, -1.0)
    emulator.set_leakage(31.5)
    emulator.set_temperature(21.5)
    emulator.set_supply(24.0)
    emulator.set_water(True)
    emulator.set_photocell(dark=False)
    inputs = emulator.twin.inputs
    assert (inputs.tilt_x, inputs.tilt_y, inputs.leakage_ua) == (325, -100, 31_500)
    assert (inputs.temp_cdeg, inputs.supply_mv, inputs.water, inputs.photocell) == (
        2150,
        24_000,
        1,
        0,
    )
    await emulator.wait_until(lambda: emulator.outputs.tripped, timeout_s=1)  # boot trip 30 mA
    snapshot = json.loads(json.dumps(emulator.snapshot()))
    assert snapshot["outputs"]["tripped"] is True
    assert snapshot["inputs"]["leakage_ua"] == 31_500
    assert snapshot["boot_id"] == emulator.boot_id
    assert snapshot["faults"]["drop"] == 0.0
    with pytest.raises(ValueError, match="no input"):
        emulator.set_inputs(smoke=1)
    with pytest.raises(ValueError, match="probability"):
        emulator.set_faults(drop=1.5)


@pytest.mark.asyncio
async def test_a_client_sees_the_emulators_impact_and_fallback(emulator: McuEmulator) -> None:
    config = McuConfig(heartbeat_ms=200, fallback_level=60, impact_mg=1500)
    events: list[EventKind | int] = []
    async with McuClient(emulator.path, config, on_event=lambda e: events.append(e.kind)) as mcu:
        await mcu.heartbeat(0, 0)
        emulator.impact(2.0)
        await emulator.wait_until(lambda: EventKind.IMPACT in events, timeout_s=1)
        await emulator.wait_until(lambda: emulator.outputs.fallback, timeout_s=1)
        assert emulator.outputs.level == 60
        assert emulator.outputs.source is LevelSource.FALLBACK_LEVEL
