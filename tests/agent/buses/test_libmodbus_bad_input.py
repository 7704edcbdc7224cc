"""Bad input from a device we did not write costs the bus at most its probe budget (#15).

A device that answers the wrong unit, exceptions to everything, or only some requests,
played by the libmodbus device (``helpers.libmodbus_device``) over RTU on a pty: its state
and its counters say which of these it is, and its requests stay within what its backoff
allows (``PolledBus._backoff``): one request per poll, the polls of a failing device
doubling from its period up to ``offline_probe_s``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import structlog

from helpers.bus_task import modbus_bus_task, running
from helpers.libmodbus_device import DeviceConfig, LibmodbusDevice, as_f32, f32_words
from helpers.paths import PROFILES
from helpers.rs485 import Rs485Line
from helpers.waiting import eventually
from smartpole.agent import diag
from smartpole.agent.buses.modbus.task import ModbusBusTask
from smartpole.agent.core.health import DeviceState
from smartpole.agent.core.points import PointTable, Quality

PERIOD_S = 0.1
PROBE_S = 0.4
TIMEOUT_S = 0.15
NEIGHBOUR_PERIOD_S = 0.2
LISTEN_WINDOW_S = 0.6  # the RTU bus's default listen_window_s
# The SDM120 profile's points and where the meter keeps them (float32 each).
READINGS = {
    0x0000: 230.2,
    0x0006: 1.25,
    0x000C: 287.5,
    0x0012: 291.0,
    0x0018: -58.0,
    0x001E: 0.988,
    0x0046: 50.0,
    0x0048: 1234.5,
    0x004A: 0.0,
    0x0156: 1234.5,
}
POINTS = len(READINGS)


def _registers() -> dict[int, list[int]]:
    words = [0] * 0x0158
    for address, value in READINGS.items():
        words[address : address + 2] = f32_words(value)
    return {0: words}


METER = DeviceConfig(unit=1, input=_registers())


def _task(
    tmp_path: Path, bus: dict[str, Any], **devices: dict[str, Any]
) -> tuple[ModbusBusTask, PointTable]:
    settings = {
        "profile": "eastron-sdm120",
        "poll_period_s": PERIOD_S,
        "offline_after": 2,
        "offline_probe_s": PROBE_S,
    }
    entries = {name: {**settings, **device} for name, device in devices.items()}
    return modbus_bus_task(tmp_path, bus, entries, profiles=PROFILES)


def polls_allowed(elapsed_s: float) -> int:
    """The most polls a device failing from its first poll on can get in ``elapsed_s``:
    after its n-th failure in a row the next poll is one period later, doubling from the
    second failure, never more than ``offline_probe_s`` apart. Real polls come later than
    this schedule (a reply timeout is longer than the period), never sooner."""
    polls, at, failures = 0, 0.0, 0
    while at <= elapsed_s:
        polls += 1
        failures += 1
        at += PERIOD_S if failures < 2 else min(PERIOD_S * 2 ** (failures - 1), PROBE_S)
    return polls


def _bus(device: LibmodbusDevice, **settings: Any) -> dict[str, Any]:
    return device.bus(timeout_s=TIMEOUT_S, **settings)


@pytest.mark.asyncio
async def test_a_device_answering_for_another_unit_is_faulty_within_its_probe_budget(
    tmp_path: Path,
) -> None:
    quirky = DeviceConfig(unit=1, input=METER.input, reply_unit=7)
    with LibmodbusDevice(quirky, "rtu", tmp_path) as device:
        task, _ = _task(tmp_path, _bus(device, retries=2), meter={"unit_id": 1})
        (meter,) = task.devices
        started = time.monotonic()
        async with running(task):
            await eventually(lambda: meter.state is DeviceState.FAULTY, 5, "faulty")
            # past the backoff's ramp (0.1, 0.2, 0.4 s), then two probes at its cap
            await eventually(lambda: meter.counters.requests >= 6, 5, "probed at its cap")
            elapsed = time.monotonic() - started
        requests = device.requests()
    # Never a sound answer, so never a retry nor a full poll: one request per poll, at
    # the backoff's pace (retries: 2 would triple them).
    assert len(requests) <= polls_allowed(elapsed), (len(requests), elapsed)
    assert meter.counters.wrong_unit == meter.counters.requests == meter.polls
    assert meter.counters.timeout == meter.counters.exception == meter.counters.ok == 0
    assert all(r.result == "ok" for r in requests)  # it did answer, as unit 7


@pytest.mark.asyncio
async def test_a_device_refusing_every_point_is_refusing_and_its_points_say_refused(
    tmp_path: Path,
) -> None:
    holes = DeviceConfig(unit=1)  # nothing mapped: exception 2 to every read
    with LibmodbusDevice(holes, "rtu", tmp_path) as device:
        task, table = _task(tmp_path, _bus(device, retries=1), meter={"unit_id": 1})
        (meter,) = task.devices
        with structlog.testing.capture_logs() as logs:
            async with running(task):
                await eventually(lambda: meter.state is DeviceState.REFUSING, 10, "refusing")
                learning = meter.counters.requests
                refusing_at = time.monotonic()
                await eventually(
                    lambda: meter.counters.requests >= learning + 4, 5, "probed at its cap"
                )
                elapsed = time.monotonic() - refusing_at
                probes = meter.counters.requests - learning
                samples = table.snapshot()
                status_text = diag.render_devices({"devices": [meter.to_json()]})
                points_text = diag.render_points([s.to_json() for s in samples])
                # The device serves again (it was booting): one probe finds out.
                device.kill()
                device.config = METER
                device.start()
                await eventually(
                    lambda: (
                        meter.state is DeviceState.ONLINE
                        and all(s.quality is Quality.GOOD for s in table.snapshot())
                    ),
                    10,
                    "online again, every point read",
                )
                values = {s.point: s.value for s in table.snapshot()}
    # Learning what it refuses costs at most two requests per point (a split per hole, a
    # refusal per point), then one request per probe at the backoff's pace.
    assert learning <= 2 * POINTS, learning
    assert probes <= polls_allowed(elapsed), (probes, elapsed)
    # Alive and answering: not offline, and every counter says it refused.
    assert meter.counters.timeout == meter.counters.wrong_unit == 0
    assert "refusing" in status_text
    assert all(s.quality is Quality.BAD and s.reason == "refused" for s in samples), samples
    assert points_text.count("bad (refused)") == POINTS
    events = [e["event"] for e in logs if e["event"].startswith("device_")]
    assert events.count("device_refusing") == 1, events
    # back, and logged so (``was: refusing``, or ``offline`` if a probe was lost to the
    # restart of the device)
    assert events[-1] == "device_online", events
    assert sorted(v for v in values.values() if isinstance(v, float)) == pytest.approx(
        sorted(as_f32(v) for v in READINGS.values())
    )


@pytest.mark.asyncio
@pytest.mark.parametrize("code", [1, 4, 6])
async def test_a_device_answering_every_read_with_an_exception_is_refusing_not_offline(
    tmp_path: Path, code: int
) -> None:
    refusing = DeviceConfig(unit=1, input=METER.input, exception=code)
    with LibmodbusDevice(refusing, "rtu", tmp_path) as device:
        task, table = _task(tmp_path, _bus(device, retries=2), meter={"unit_id": 1})
        (meter,) = task.devices
        started = time.monotonic()
        with structlog.testing.capture_logs() as logs:
            async with running(task):
                await eventually(lambda: meter.state is DeviceState.REFUSING, 5, "refusing")
                await eventually(lambda: meter.counters.requests >= 6, 5, "probed at its cap")
                elapsed = time.monotonic() - started
                samples = table.snapshot()
        requests = device.requests()
    assert len(requests) <= polls_allowed(elapsed), (len(requests), elapsed)
    assert all(r.result == f"exception-{code}" for r in requests), requests
    assert meter.counters.exception == meter.counters.requests
    assert meter.counters.timeout == 0
    assert f"exception {code}" in str(meter.last_error)
    assert meter.unsupported_points == []  # the device refuses, not these points
    # Never read: unknown, with the device's reason (not "no answer").
    assert all(s.quality is Quality.UNKNOWN and s.reason == "device refusing" for s in samples), (
        samples
    )
    assert [e["event"] for e in logs if e["event"] == "device_refusing"] == ["device_refusing"]
    assert not [e for e in logs if e["event"] == "device_offline"]


@pytest.mark.parametrize(("listen_window_s", "neighbour_heard"), [(None, True), (0.0, False)])
@pytest.mark.asyncio
async def test_a_device_answering_only_some_requests_is_slow_and_its_neighbour_keeps_its_rate(
    tmp_path: Path, listen_window_s: float | None, neighbour_heard: bool
) -> None:
    """Two libmodbus devices on one pair. libmodbus listens to the line: after a request
    nobody answered it takes the next frame (here, the request to the neighbour) for that
    answer and ignores it for up to 0.5 s. With the bus's default ``listen_window_s`` the
    line rests that long after a dropped request, and the neighbour keeps answering; with
    no window (0) the neighbour is not heard and goes offline with the flaky device."""
    flaky = DeviceConfig(unit=1, input=METER.input, drop_every=2)
    steady = DeviceConfig(unit=2, input=METER.input)
    window = {} if listen_window_s is None else {"listen_window_s": listen_window_s}
    with (
        LibmodbusDevice(flaky, "rtu", tmp_path) as dropping,
        LibmodbusDevice(steady, "rtu", tmp_path) as listening,
        Rs485Line([dropping.line_fd, listening.line_fd]) as line,
    ):
        task, _ = _task(
            tmp_path,
            {"type": "modbus-rtu", "port": line.path, "timeout_s": TIMEOUT_S, "retries": 0,
             **window},
            flaky={"unit_id": 1, "offline_after": 3},
            neighbour={"unit_id": 2, "offline_after": 3, "poll_period_s": NEIGHBOUR_PERIOD_S},
        )  # fmt: skip
        flaky_health, neighbour = task.devices
        async with running(task):
            if not neighbour_heard:
                await eventually(
                    lambda: neighbour.counters.timeout >= 2, 10, "the neighbour not heard"
                )
                return
            await eventually(lambda: flaky_health.slow, 10, "the flaky one on probation")
            # The neighbour's last 20 intervals, all while the flaky one is on probation
            # (before, a live device may cost two silences in a poll: one to learn from).
            polls = neighbour.polls
            await eventually(lambda: neighbour.polls >= polls + 21, 30, "21 more polls")
            assert flaky_health.slow
        dropped = [r.result for r in dropping.requests()].count("dropped")
    assert flaky_health.state is DeviceState.ONLINE  # answering: never offline
    assert flaky_health.counters.timeout >= 2
    # Every request it dropped is a timeout, but the last may still have been waiting for
    # its reply timeout when the bus task was stopped.
    assert dropped - 1 <= flaky_health.counters.timeout <= dropped
    assert neighbour.state is DeviceState.ONLINE
    assert not neighbour.slow
    assert neighbour.counters.timeout == 0
    # Between two of its polls: its period, or the rest after a dropped request (the
    # listening window, from the dropped request's sending), and scheduling slack.
    intervals = neighbour.to_json()["recent_poll_intervals_s"]
    assert isinstance(intervals, list)
    assert max(intervals) <= max(NEIGHBOUR_PERIOD_S, LISTEN_WINDOW_S) + 0.15, intervals


@pytest.mark.asyncio
async def test_late_answers_are_counted_on_the_bus_and_shown_in_status(tmp_path: Path) -> None:
    late = DeviceConfig(unit=1, input=METER.input, delay_ms=250)  # past the 0.15 s timeout
    with LibmodbusDevice(late, "rtu", tmp_path) as device:
        task, _ = _task(tmp_path, _bus(device, retries=0), meter={"unit_id": 1})
        (meter,) = task.devices
        async with running(task):
            await eventually(lambda: task.health.late_answers >= 2, 10, "late answers counted")
        status = task.health.to_json()
    assert meter.counters.timeout >= 2
    assert status["late_answers"] == task.health.late_answers
    stray = status["stray_bytes"]
    assert isinstance(stray, int)
    assert stray >= 9 * 2  # two answers of 2 registers at least
    text = diag.render_status(
        {"pole": "p", "summary": "", "pid": 1, "uptime_s": 1.0, "config": "c",
         "buses": [status], "devices": [meter.to_json()]}
    )  # fmt: skip
    lines = text.splitlines()
    header = lines[lines.index("BUSES") + 1]
    end = header.index("LATE") + len("LATE")  # a right-aligned column
    assert lines[lines.index("BUSES") + 3][:end].split()[-1] == str(status["late_answers"])
