"""The MCU's bus task is the one owner of reconnecting: a refused or reset MCU is connected
again by the supervisor's backoff, never by the client underneath."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from helpers.paths import PROFILES
from helpers.waiting import eventually
from smartpole.agent.buses.kind import BusContext
from smartpole.agent.buses.mcu.config import PoleMcuBus
from smartpole.agent.buses.mcu.event_marks import EventMarks
from smartpole.agent.buses.mcu.events import EventRecorder
from smartpole.agent.buses.mcu.task import McuBusTask
from smartpole.agent.buses.registry import load_config
from smartpole.agent.core.audit import AuditLog
from smartpole.agent.core.outbox import Outbox
from smartpole.agent.core.points import PointTable
from smartpole.drivers.mcu.dictionary import DICTIONARY_BYTES
from smartpole.drivers.sim.mcu.emulator import McuEmulator

VERSION_2 = DICTIONARY_BYTES.replace(b'"version":1', b'"version":2')


@asynccontextmanager
async def running(tmp_path: Path, port: str) -> AsyncIterator[McuBusTask]:
    config = tmp_path / "pole.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "pole": {"id": "p"},
                "profiles_dir": str(PROFILES),
                "buses": {
                    "cabinet": {
                        "type": "pole-mcu",
                        "port": port,
                        "timeout_s": 0.5,
                        "heartbeat_s": 0.2,
                        "fallback_after_s": 2,
                        "relays": {"camera": {"channel": 2}},
                    }
                },
                "devices": {"mcu": {"profile": "pole-mcu", "bus": "cabinet"}},
            }
        )
    )
    loaded = load_config(config)
    bus = loaded.pole.buses["cabinet"]
    assert isinstance(bus, PoleMcuBus)
    task = McuBusTask(
        "cabinet", bus, BusContext(loaded, PointTable(), AuditLog(tmp_path), lambda: True)
    )
    runner = asyncio.create_task(task.run())
    try:
        yield task
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)


def _client(task: McuBusTask) -> dict[str, Any]:
    stats = task.diagnostics()["client"]
    return stats if isinstance(stats, dict) else {}


@pytest.mark.asyncio
async def test_a_refused_connect_is_retried_with_the_supervisors_backoff(tmp_path: Path) -> None:
    async with (
        McuEmulator(seed=3, dictionary=VERSION_2) as emu,
        running(tmp_path, emu.path) as task,
    ):
        started = time.monotonic()
        await eventually(lambda: _client(task).get("version_refusals", 0) >= 4, 10, "refusals")
        # Waits of 0.1, 0.2 and 0.4 s between the first four attempts, all by the task.
        assert time.monotonic() - started >= 0.7
        (device,) = task.devices
        assert device.consecutive_failures >= 4
        assert task.health.state.value == "connected"  # the port is fine; the MCU refuses
        emu.reset(dictionary=DICTIONARY_BYTES)  # the MCU was flashed with version 1
        await eventually(lambda: task.diagnostics()["connected"], 35, "the connect")
        await eventually(lambda: emu.outputs.configured, 5, "the MCU configured")


@pytest.mark.asyncio
async def test_an_mcu_reset_is_reconfigured_by_the_task_not_the_client(tmp_path: Path) -> None:
    async with McuEmulator(seed=5) as emu, running(tmp_path, emu.path) as task:
        await eventually(lambda: task.diagnostics()["connected"], 10, "the first connect")
        assert _client(task)["connects"] == 1
        first_boot = emu.boot_id
        emu.reset(mid_frame=True)
        await eventually(
            lambda: _client(task).get("connects") == 2 and task.diagnostics()["connected"],
            10,
            "the task's connect after the reset",
        )
        stats = _client(task)
        assert (stats["resets_detected"], stats["reconnects"]) == (1, 1)
        assert emu.boot_id != first_boot
        await eventually(lambda: emu.outputs.configured, 5, "the MCU configured again")


@pytest.mark.asyncio
async def test_a_restarted_task_resumes_the_event_ring_and_queues_each_event_once(
    tmp_path: Path,
) -> None:
    """Two lives of the task (as two daemon lives) against one MCU that keeps its ring: the
    second resumes after the events the first queued, so the boot event is queued once."""
    state = tmp_path / "state"
    state.mkdir()

    def queued(outbox: Outbox) -> list[tuple[int, int, str]]:
        return [
            (r.payload["boot_id"], r.payload["id"], r.payload["kind"])
            for r in outbox.pending("events", 100)
        ]

    async with McuEmulator(seed=9) as emu:
        for life in range(2):
            with Outbox(state, report_interval_s=None) as outbox:
                marks = EventMarks(state)
                async with running(tmp_path, emu.path) as task:
                    task.add_event_listener(EventRecorder(outbox, marks, "cabinet", "mcu"))
                    task.resume_events(marks.resume("cabinet"))
                    await eventually(lambda: task.diagnostics()["connected"], 10, "the connect")
                    if life == 0:
                        await eventually(lambda: queued(outbox), 5, "the boot event")
                        resumed = task.diagnostics()["events_resumed"]
                        assert resumed == {"boot_id": emu.boot_id, "after": 0, "also_held": 0}
                    else:
                        emu.set_door(True)  # a new event: the second life still gets those
                        await eventually(lambda: len(queued(outbox)) == 2, 5, "the door event")
                        resumed = task.diagnostics()["events_resumed"]
                        assert resumed == {"boot_id": emu.boot_id, "after": 1, "also_held": 0}
                    final = queued(outbox)
    assert final == [(emu.boot_id, 1, "boot"), (emu.boot_id, 2, "door_open")]
