"""A slow or babbling device costs only its own budget (issue 13, item 4).

Both findings, against real transports: a slow slave on an RS-485 bus (a pty, where the
simulator puts its late answers on the wire whenever they are ready, spoiling whatever
else is there) must not take its healthy neighbour offline or make its values stale; a
Modbus TCP device that babbles (loopback) must show ``faulty``, be reconnected with
backoff rather than in a tight loop, and be listed in ``diag status`` problems.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
import structlog

from helpers.bus_task import modbus_bus_task, running
from helpers.paths import REPO
from helpers.waiting import eventually
from smartpole.agent.buses.bus_set import BusSet
from smartpole.agent.buses.modbus import KIND
from smartpole.agent.buses.modbus.task import ModbusBusTask
from smartpole.agent.buses.polled import STALE_AFTER_PERIODS
from smartpole.agent.core.health import DeviceState
from smartpole.agent.core.points import PointTable, Quality
from smartpole.drivers.modbus.points import RegisterKind
from smartpole.drivers.sim.faults import FaultMode
from smartpole.drivers.sim.modbus_bank import RegisterBank
from smartpole.drivers.sim.modbus_tcp import ModbusTcpServer
from smartpole.drivers.sim.rtu_pty import RtuPtyServer

PROFILES = REPO / "bench" / "profiles"
PERIOD_S = 0.3
TIMEOUT_S = 0.2
RETRIES = 1


def _bank() -> RegisterBank:
    bank = RegisterBank()
    bank.set(RegisterKind.HOLDING, 0, list(range(50)))
    return bank


def _task(
    tmp_path: Path,
    bus: dict[str, Any],
    devices: dict[str, dict[str, Any]],
    profiles: Path = PROFILES,
) -> tuple[ModbusBusTask, PointTable]:
    bank = {name: {"profile": "bench-register-bank", **device} for name, device in devices.items()}
    return modbus_bus_task(tmp_path, bus, bank, profiles=profiles)


@pytest.mark.asyncio
async def test_a_slow_slave_costs_its_rtu_neighbour_nothing_but_its_budget(
    tmp_path: Path,
) -> None:
    async with RtuPtyServer(
        {1: _bank(), 2: _bank()}, baudrate=9600, faults={2: FaultMode.SLOW}
    ) as sim:
        task, table = _task(
            tmp_path,
            {
                "type": "modbus-rtu",
                "port": sim.path,
                "baudrate": 9600,
                "timeout_s": TIMEOUT_S,
                "retries": RETRIES,
                # Our simulator's devices do not listen to the line: no rest after a
                # timeout is needed (its cost: tests/agent/buses/test_libmodbus_bad_input.py).
                "listen_window_s": 0,
            },
            {
                "good": {"unit_id": 1, "poll_period_s": PERIOD_S},
                "weather": {"unit_id": 2, "poll_period_s": PERIOD_S, "offline_probe_s": 10},
            },
        )
        good, weather = task.devices
        left_online: list[str] = []
        worst_age = 0.0
        with structlog.testing.capture_logs() as logs:
            async with running(task):
                await eventually(lambda: good.state is DeviceState.ONLINE, 5, "good online")
                online_since = good.state_since
                started = time.monotonic()
                # Over a window of about 25 of its periods, sampled every few ms: the
                # neighbour never leaves online, and its values are never older than its
                # poll period plus what one poll of the slow device may cost.
                while good.polls < 22:
                    if good.state is not DeviceState.ONLINE or good.state_since != online_since:
                        left_online.append(f"{good.state} at poll {good.polls}")
                    samples = [s for s in table.snapshot() if s.device == "good"]
                    assert samples
                    assert all(s.quality is Quality.GOOD for s in samples), samples
                    worst_age = max(worst_age, max(s.age_s or 0.0 for s in samples))
                    assert time.monotonic() - started < 20, "the neighbour stopped polling"
                    await asyncio.sleep(0.005)  # sampling the table, not synchronising
    assert left_online == []
    # Never stale (checked above through the quality, which the table makes stale past
    # this age); a poll spoilt by a late answer on the wire costs one period at most.
    assert worst_age <= STALE_AFTER_PERIODS * PERIOD_S + TIMEOUT_S, worst_age
    # Between two polls: its poll period, one reply timeout of the slow device (plus its
    # retry, once, before it is known to fail), the line's silences and scheduling slack.
    bound = PERIOD_S + (1 + RETRIES) * TIMEOUT_S + 0.15
    intervals = good.to_json()["recent_poll_intervals_s"]
    assert isinstance(intervals, list)
    assert max(intervals) <= bound, intervals
    # The slow device itself: reported slow once, polled on its own budget (one request
    # per backed-off poll), never at the neighbour's rate.
    slow_events = [e for e in logs if e["event"] == "device_slow"]
    assert [e["device"] for e in slow_events] == ["weather"]
    assert weather.slow
    assert weather.counters.requests <= good.polls / 2, (weather.counters, good.polls)
    assert weather.counters.timeout >= 2


@pytest.mark.asyncio
@pytest.mark.parametrize("fault", [FaultMode.BABBLE, FaultMode.GARBAGE])
async def test_a_babbling_tcp_device_is_faulty_reconnected_with_backoff_and_listed(
    tmp_path: Path, fault: FaultMode
) -> None:
    async with ModbusTcpServer({1: _bank()}) as sim:
        task, table = _task(
            tmp_path,
            {
                "type": "modbus-tcp",
                "host": sim.host,
                "port": sim.port,
                "timeout_s": TIMEOUT_S,
                "retries": RETRIES,
            },
            {"charger": {"unit_id": 1, "poll_period_s": 0.2, "offline_after": 2}},
        )
        (charger,) = task.devices
        buses = BusSet([(task, KIND)])
        with structlog.testing.capture_logs() as logs:
            async with running(task):
                await eventually(lambda: charger.state is DeviceState.ONLINE, 5, "online")
                sim.set_fault(1, fault)
                await eventually(lambda: charger.state is DeviceState.FAULTY, 10, "faulty")
                connects = task.health.connects
                window_s = 4.0
                # Holding the device faulty for a while: it must stay faulty (never shown
                # online with bad points), and its link must not be reconnected in a loop.
                deadline = time.monotonic() + window_s
                while time.monotonic() < deadline:
                    assert charger.state is DeviceState.FAULTY
                    await asyncio.sleep(0.01)  # sampling its state, not synchronising
                reconnects = task.health.connects - connects
                problems = buses.problems()
                assert all(s.quality is not Quality.GOOD for s in table.snapshot())
                sim.set_fault(1, FaultMode.NONE)
                await eventually(lambda: charger.state is DeviceState.ONLINE, 40, "recovered")
    # Backoff from 1 s doubling: at most a handful of reconnects in the window (the
    # finding was about 38 a second).
    assert reconnects <= 4, reconnects
    assert task.health.link_losses >= 1
    assert any(
        p.startswith("device charger (unit 1 on bus) faulty:") and "garbage" in p for p in problems
    ), problems
    assert any(p.startswith("bus bus: link lost") for p in problems), problems
    events = [e["event"] for e in logs if e.get("device") == "charger"]
    assert events.count("device_faulty") == 1, events
    assert events[-1] == "device_online", events


TWO_BLOCKS = """
model: two-blocks
manufacturer: smartpole test
description: two registers too far apart for one read
manual: none
protocol: modbus
points:
  near: {kind: holding, address: 0x0000, type: u16}
  far: {kind: holding, address: 0x0100, type: u16}
"""


@pytest.mark.asyncio
async def test_a_device_back_from_offline_is_on_probation_but_read_in_full(
    tmp_path: Path,
) -> None:
    bank = RegisterBank()
    bank.set(RegisterKind.HOLDING, 0, [1])
    bank.set(RegisterKind.HOLDING, 0x0100, [2])
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    (profiles / "two-blocks.yaml").write_text(TWO_BLOCKS)
    async with RtuPtyServer({1: bank}, faults={1: FaultMode.NO_ANSWER}) as sim:
        task, table = _task(
            tmp_path,
            {"type": "modbus-rtu", "port": sim.path, "timeout_s": 0.1, "retries": RETRIES},
            {
                "meter": {
                    "profile": "two-blocks",
                    "unit_id": 1,
                    "poll_period_s": 0.1,
                    "offline_after": 2,
                    "offline_probe_s": 0.4,
                }
            },
            profiles,
        )
        (meter,) = task.devices
        async with running(task):
            await eventually(lambda: meter.state is DeviceState.OFFLINE, 5, "offline")
            sim.set_fault(1, FaultMode.NONE)
            await eventually(lambda: meter.state is DeviceState.ONLINE, 5, "back")
            assert meter.slow  # on probation: no retries, backed-off failures
            # ...but every block is read while on probation, not the probe's first only.
            await eventually(
                lambda: (
                    meter.slow
                    and {s.point: s.quality for s in table.snapshot()}
                    == {"near": Quality.GOOD, "far": Quality.GOOD}
                ),
                5,
                "both blocks read on probation",
            )
            await eventually(lambda: not meter.slow, 10, "probation over")
