"""The Modbus bus against a device we did not write: libmodbus, over loopback TCP and RTU on a pty.

Our simulators share our framing code, so a misreading of the protocol would pass both
sides. Here the device is ``tests/devices/libmodbus_device.c`` (see
``helpers.libmodbus_device``), playing an Eastron SDM120 the way the field meter behaves:
input registers only, float32 big-endian, exception 2 on the unmapped registers between its
parameters. The bus task under test is the daemon's own (``ModbusBusTask``), on real
transports.
"""

from __future__ import annotations

import contextlib
import os
import select
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers.bus_task import modbus_bus_task, running
from helpers.libmodbus_device import DeviceConfig, LibmodbusDevice, Transport, as_f32, f32_words
from helpers.paths import PROFILES
from helpers.waiting import eventually
from smartpole.agent.buses.modbus.task import ModbusBusTask
from smartpole.agent.core.health import DeviceState
from smartpole.agent.core.points import PointTable, Quality
from smartpole.drivers.modbus.crc import append_crc

TRANSPORTS = pytest.mark.parametrize("transport", ["tcp", "rtu"])
READ_INPUT_REGISTERS = 4
PERIOD_S = 0.1

# What the meter measures (the SDM120 profile's own test vectors), by point.
READINGS = {
    "voltage": 230.2,
    "current": 1.25,
    "active_power": 287.5,
    "apparent_power": 291.0,
    "reactive_power": -58.0,
    "power_factor": 0.988,
    "frequency": 50.0,
    "import_energy": 1234.5,
    "export_energy": 0.0,
    "total_energy": 1234.5,
}
ADDRESSES = {
    "voltage": 0x0000,
    "current": 0x0006,
    "active_power": 0x000C,
    "apparent_power": 0x0012,
    "reactive_power": 0x0018,
    "power_factor": 0x001E,
    "frequency": 0x0046,
    "import_energy": 0x0048,
    "export_energy": 0x004A,
    "total_energy": 0x0156,
}
# Only the parameters are mapped: the registers between them are holes (exception 2).
METER = DeviceConfig(
    unit=1, input={ADDRESSES[p]: f32_words(value) for p, value in READINGS.items()}
)


def _without_holes() -> dict[int, list[int]]:
    words = [0] * 0x0158
    for point, value in READINGS.items():
        words[ADDRESSES[point] : ADDRESSES[point] + 2] = f32_words(value)
    return {0: words}


# The same meter answering zeros between its parameters, as Eastron's own meters do: no
# refusals, so a test of something else is not also a test of learning holes.
NO_HOLES = DeviceConfig(unit=1, input=_without_holes())
# The shipped profile (max_gap 4) reads 0x00..0x1F in one go: five holes to learn, after
# which the plan is one read per parameter there, plus 0x46..0x4B and 0x156.
SETTLED_PLAN = [(a, 2) for a in range(0, 0x20, 6)] + [(0x46, 6), (0x156, 2)]


def _task(
    tmp_path: Path,
    bus: dict[str, Any],
    profiles: Path = PROFILES,
    state: Path | None = None,
    **device: Any,
) -> tuple[ModbusBusTask, PointTable]:
    settings = {"profile": "eastron-sdm120", "unit_id": 1, "poll_period_s": PERIOD_S}
    return modbus_bus_task(
        tmp_path, bus, {"meter": {**settings, **device}}, profiles=profiles, state_dir=state
    )


@contextlib.contextmanager
def _device(
    config: DeviceConfig, transport: Transport, tmp_path: Path
) -> Iterator[LibmodbusDevice]:
    with LibmodbusDevice(config, transport, tmp_path) as device:
        yield device


def _all_read_right(table: PointTable) -> bool:
    samples = {s.point: s for s in table.snapshot()}
    return all(
        samples[p].quality is Quality.GOOD and samples[p].value == pytest.approx(as_f32(v))
        for p, v in READINGS.items()
    )


def _plan(task: ModbusBusTask) -> list[tuple[int, int]]:
    blocks = task.read_plan()["meter"]
    assert isinstance(blocks, list)
    return [(b["address"], b["count"]) for b in blocks]


@pytest.mark.asyncio
@TRANSPORTS
async def test_every_value_is_read_right_and_the_holes_are_learnt_once(
    tmp_path: Path, transport: Transport
) -> None:
    with _device(METER, transport, tmp_path) as device:
        task, table = _task(tmp_path, device.bus(timeout_s=0.3))
        (meter,) = task.devices
        async with running(task):
            await eventually(lambda: _all_read_right(table), 10, "every value read right")
            assert _plan(task) == SETTLED_PLAN
            settled = len(device.requests())
            polls = meter.polls
            await eventually(lambda: meter.polls >= polls + 5, 5, "five more polls")
    requests = device.requests()
    refused = [r for r in requests if r.result != "ok"]
    # Five holes, each refused once (exception 2) and never asked again.
    assert [r.result for r in refused] == ["exception-2"] * 5, refused
    assert all(r.result == "ok" for r in requests[settled:])
    assert {(r.address, r.count) for r in requests[settled:]} == set(SETTLED_PLAN)
    assert all(r.function == READ_INPUT_REGISTERS and r.unit == 1 for r in requests)
    assert meter.counters.exception == 5
    assert meter.counters.timeout == meter.counters.wrong_unit == 0
    assert meter.state is DeviceState.ONLINE


@pytest.mark.asyncio
@TRANSPORTS
async def test_an_answer_from_the_wrong_unit_is_counted_and_never_taken_for_a_reading(
    tmp_path: Path, transport: Transport
) -> None:
    quirky = DeviceConfig(unit=1, input=NO_HOLES.input, reply_unit=7)
    with _device(quirky, transport, tmp_path) as device:
        task, table = _task(tmp_path, device.bus(timeout_s=0.15, retries=0), offline_after=2)
        (meter,) = task.devices
        async with running(task):
            await eventually(lambda: meter.counters.wrong_unit >= 3, 10, "wrong units counted")
            samples = table.snapshot()
    assert len(device.requests()) >= 3  # it did answer: it was asked, and said unit 7
    # never read: no value, and unknown (not bad: a device answering for another unit)
    assert all(s.value is None and s.quality is Quality.UNKNOWN for s in samples), samples
    assert meter.counters.ok == 0
    assert meter.state is DeviceState.FAULTY  # it answers, wrongly: not a silent device


@pytest.mark.asyncio
@TRANSPORTS
async def test_a_slow_device_is_read_right_within_its_timeout(
    tmp_path: Path, transport: Transport
) -> None:
    slow = DeviceConfig(unit=1, input=NO_HOLES.input, delay_ms=120)
    with _device(slow, transport, tmp_path) as device:
        task, table = _task(tmp_path, device.bus(timeout_s=0.4))
        (meter,) = task.devices
        async with running(task):
            await eventually(lambda: _all_read_right(table), 10, "every value read right")
    assert meter.counters.timeout == 0
    assert meter.counters.mean_latency_ms is not None
    assert meter.counters.mean_latency_ms >= 120
    assert meter.state is DeviceState.ONLINE


@pytest.mark.asyncio
@TRANSPORTS
@pytest.mark.parametrize("failure", ["killed", "hung"])
async def test_a_dead_or_hung_device_goes_offline_and_comes_back(
    tmp_path: Path, transport: Transport, failure: str
) -> None:
    with _device(NO_HOLES, transport, tmp_path) as device:
        task, table = _task(
            tmp_path,
            device.bus(timeout_s=0.15, retries=0),
            offline_after=2,
            offline_probe_s=0.3,
        )
        (meter,) = task.devices
        async with running(task) as run:
            await eventually(lambda: _all_read_right(table), 10, "every value read right")
            if failure == "killed":
                device.kill()
            else:
                device.hang()
            await eventually(
                lambda: all(s.quality is not Quality.GOOD for s in table.snapshot()),
                10,
                "no value shown good",
            )
            # A killed TCP device takes its listener with it: the bus is port_unavailable,
            # and a device behind an unavailable port is offline too.
            await eventually(lambda: meter.state is DeviceState.OFFLINE, 10, "offline")
            if failure == "killed":
                device.start()
            else:
                device.hang(False)
            await eventually(
                lambda: meter.state is DeviceState.ONLINE and _all_read_right(table),
                15,
                "back online, read right",
            )
            assert not run.done()
    assert meter.counters.wrong_unit == meter.counters.garbage == 0


def test_a_libmodbus_rtu_device_is_deaf_after_a_frame_for_another_unit_until_the_line_rests(
    tmp_path: Path,
) -> None:
    """What the device gives the bus tests: libmodbus (like a real RS-485 listener) takes
    the frame after a request to another unit for that unit's answer and drops it; parsed
    as an answer, our request leaves its last bytes behind, and the device stays out of step
    until the line has been quiet for its byte timeout (0.5 s).

    The scan and the serial line discipline are tested against this behaviour; if a
    libmodbus upgrade or a change to the device loses it, they would pass for the wrong
    reason.
    """
    read_voltage = append_crc(bytes([1, READ_INPUT_REGISTERS, 0, 0, 0, 2]))
    for_unit_2 = append_crc(bytes([2, READ_INPUT_REGISTERS, 0, 0, 0, 2]))
    answer = bytes([1, READ_INPUT_REGISTERS, 4]) + struct.pack(">2H", *f32_words(230.2))
    with _device(METER, "rtu", tmp_path) as device:
        line = os.open(device.path, os.O_RDWR | os.O_NOCTTY)
        try:

            def ask(frame: bytes, wait_s: float) -> bytes:
                os.write(line, frame)
                ready, _, _ = select.select([line], [], [], wait_s)
                return os.read(line, 256) if ready else b""

            assert ask(read_voltage, 2.0)[:7] == answer
            assert ask(for_unit_2, 0.1) == b""
            assert ask(read_voltage, 0.3) == b""  # taken for unit 2's answer
            # A quiet line for twice libmodbus' byte timeout (the wait is the condition
            # under test, and it must stay silent all along): then it listens again.
            assert select.select([line], [], [], 1.0)[0] == []
            assert ask(read_voltage, 2.0)[:7] == answer
        finally:
            os.close(line)
    assert [r.unit for r in device.requests()] == [1, 1]


# A profile whose max_gap lets the planner ask 76 registers at once (0x00..0x4B); the meter
# takes at most 40 per request, as the field SDM120 did.
WIDE_GAP = (PROFILES / "eastron-sdm120.yaml").read_text().replace("max_gap: 4", "max_gap: 64")


@pytest.mark.asyncio
@TRANSPORTS
async def test_a_read_refused_with_exception_3_is_split_learnt_and_never_sent_again(
    tmp_path: Path, transport: Transport
) -> None:
    """The field report: a 76-register read refused with exception 3 by a meter allowing
    40 left the meter offline for good. Now it is learnt once, saved, and after a restart
    of the bus task (a daemon restart) never asked again."""
    assert "max_gap: 4" in (PROFILES / "eastron-sdm120.yaml").read_text()
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    (profiles / "eastron-sdm120.yaml").write_text(WIDE_GAP)
    state = tmp_path / "state"
    state.mkdir()
    limited = DeviceConfig(unit=1, input=NO_HOLES.input, max_count=40)
    with _device(limited, transport, tmp_path) as device:
        task, table = _task(tmp_path, device.bus(timeout_s=0.3), profiles=profiles, state=state)
        (meter,) = task.devices
        assert (0, 76) in _plan(task)
        async with running(task):
            await eventually(lambda: _all_read_right(table), 10, "every value read right")
            assert all(count <= 40 for _, count in _plan(task)), _plan(task)
            settled = len(device.requests())
            polls = meter.polls
            await eventually(lambda: meter.polls >= polls + 5, 5, "five more polls")
        first_life = device.requests()
        assert first_life[settled:], "polled after settling"
        assert all(r.result == "ok" and r.count <= 40 for r in first_life[settled:])
        refused = [r for r in first_life if r.result != "ok"]
        assert refused
        assert all(r.result == "exception-3" for r in refused), refused
        assert meter.counters.exception == len(refused)
        assert meter.state is DeviceState.ONLINE

        # A restart: a new bus task with the same state directory starts from what was learnt.
        task, table = _task(tmp_path, device.bus(timeout_s=0.3), profiles=profiles, state=state)
        (meter,) = task.devices
        assert all(count <= 40 for _, count in _plan(task)), _plan(task)
        async with running(task):
            await eventually(lambda: _all_read_right(table), 10, "every value read again")
        second_life = device.requests()[len(first_life) :]
    assert second_life
    assert all(r.result == "ok" and r.count <= 40 for r in second_life), second_life
    assert meter.counters.exception == 0
