"""A device that never answers a read longer than its buffer (issue 15, point 2): no
exception 3, just silence, as some field devices do. Against the libmodbus device
(``--silent-above 40``), over loopback TCP and RTU on a pty.

The profile lets the planner send one 76-register read. The device, alive (it answers
its other reads), ignores it twice in a row: the second silence teaches a cap, kept in
the state directory, and the long read is never sent again, also after a restart; the
poll that met the first silence still reads the device's other blocks. A device that
dies teaches nothing: its silence is not a short buffer. A meter whose very first read
is the long one (the SDM120 of the field report, with a wide ``max_gap``) is learnt too:
its probe is its first point alone.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from structlog.testing import capture_logs

from helpers.bus_task import modbus_bus_task, running
from helpers.libmodbus_device import DeviceConfig, LibmodbusDevice, Request, Transport
from helpers.paths import PROFILES
from helpers.waiting import eventually
from smartpole.agent import diag
from smartpole.agent.buses.modbus.task import ModbusBusTask
from smartpole.agent.core.health import BusState, DeviceState
from smartpole.agent.core.points import PointTable, Quality

TRANSPORTS = pytest.mark.parametrize("transport", ["tcp", "rtu"])
SILENT_ABOVE = 40
PERIOD_S = 0.1
FLOATS = 38  # 76 input registers in a row
READ_HOLDING, READ_INPUT = 3, 4
DEVICE = DeviceConfig(
    unit=1,
    holding={0: [7]},
    input={0: [0x3F80, 0] * FLOATS, 200: [42]},  # 1.0f each, and one far register
    silent_above=SILENT_ABOVE,
    baudrate=115200,
)


def _profiles(folder: Path) -> Path:
    points: dict[str, object] = {
        "status": {"kind": "holding", "address": 0, "type": "u16"},
        **{f"v{n:02d}": {"kind": "input", "address": 2 * n, "type": "f32"} for n in range(FLOATS)},
        "far": {"kind": "input", "address": 200, "type": "u16"},
    }
    folder.mkdir(exist_ok=True)
    (folder / "quiet-meter.yaml").write_text(
        yaml.safe_dump(
            {
                "model": "quiet-meter",
                "manufacturer": "test",
                "manual": "none - a test device",
                "protocol": "modbus",
                # The profile allows what the device does not: 76 registers in one read.
                "limits": {"max_registers_per_read": 125, "max_gap": 4},
                "points": points,
            }
        )
    )
    return folder


def _task(
    tmp_path: Path, device: LibmodbusDevice, state: Path, **settings: object
) -> tuple[ModbusBusTask, PointTable]:
    meter = {"profile": "quiet-meter", "unit_id": 1, "poll_period_s": PERIOD_S, **settings}
    return modbus_bus_task(
        tmp_path,
        device.bus(timeout_s=0.2, retries=0),
        {"meter": meter},
        profiles=_profiles(tmp_path / "profiles"),
        bus_name="lan",
        state_dir=state,
    )


def _counts(task: ModbusBusTask) -> list[int]:
    blocks = task.read_plan()["meter"]
    assert isinstance(blocks, list)
    return [b["count"] for b in blocks]


def _all_good(table: PointTable) -> bool:
    samples = [s for s in table.snapshot() if s.device == "meter"]
    return len(samples) == FLOATS + 2 and all(s.quality is Quality.GOOD for s in samples)


def _long(requests: list[Request]) -> list[Request]:
    return [r for r in requests if r.count > SILENT_ABOVE]


@pytest.mark.asyncio
@TRANSPORTS
async def test_a_76_register_read_never_answered_is_split_learnt_and_never_sent_again(
    tmp_path: Path, transport: Transport
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    with LibmodbusDevice(DEVICE, transport, tmp_path) as device, capture_logs() as logs:
        task, table = _task(tmp_path, device, state)
        (meter,) = task.devices
        assert _counts(task) == [1, 76, 1]
        async with running(task):
            await eventually(lambda: _all_good(table), 10, "every point read")
            settled = len(device.requests())
            polls = meter.polls
            await eventually(lambda: meter.polls >= polls + 5, 5, "five more polls")
        first_life = device.requests()

        # Two silences in a row, the device answering its other reads: then learnt.
        silent = [r for r in first_life if r.result != "ok"]
        assert silent == [Request(1, READ_INPUT, 0, 76, "silent")] * 2, silent
        assert _long(first_life) == silent, "the long read is never sent again"
        # The poll that met the first silence went on: the far register was read next.
        after = first_life[first_life.index(silent[0]) + 1]
        assert after == Request(1, READ_INPUT, 200, 1, "ok")
        assert first_life[settled:], "polled after settling"
        assert all(r.result == "ok" and r.count <= 38 for r in first_life[settled:])
        assert meter.counters.timeout == 2
        assert meter.counters.exception == 0
        assert meter.state is DeviceState.ONLINE
        assert _counts(task) == [1, 38, 38, 1]
        learnt = task.read_plan()["(learnt)"]
        assert learnt == {
            "meter": {
                "max_per_read": {"input": 38},
                "max_per_read_reason": {"input": "timeout"},
                "holes": [],
                "unsupported": [],
            }
        }
        shown = diag.render_plan({"lan": task.read_plan()})
        assert "at most 38 per input read (timeout)" in shown, shown
        splits = [e for e in logs if e["event"] == "read_split"]
        assert len(splits) == 1, splits
        assert (splits[0]["reason"], splits[0]["max_per_read"]) == ("timeout", 38)
        saved = json.loads((state / "modbus_learnt.json").read_text())["buses"]["lan"]["meter"]
        assert (saved["caps"], saved["reasons"]) == ({"input": 38}, {"input": "timeout"})

        # A restart: the lesson is read back, the 76-register read is never sent.
        again, table = _task(tmp_path, device, state)
        (meter,) = again.devices
        assert _counts(again) == [1, 38, 38, 1]
        async with running(again):
            await eventually(lambda: _all_good(table), 10, "every point read after restart")
            await eventually(lambda: meter.polls >= 5, 5, "five polls after restart")
        second_life = device.requests()[len(first_life) :]
    assert second_life
    assert all(r.result == "ok" and r.count <= 38 for r in second_life), second_life
    assert meter.counters.timeout == 0
    assert again.read_plan()["(learnt)"] == learnt


@pytest.mark.asyncio
@TRANSPORTS
@pytest.mark.parametrize("failure", ["killed", "hung"])
async def test_a_device_that_dies_after_one_silence_learns_nothing(
    tmp_path: Path, transport: Transport, failure: str
) -> None:
    # The device ignores the long read once (a short buffer, or a lost frame), then dies
    # (killed: over TCP its listener goes too) or hangs (stopped: over TCP the connection
    # stays, and every request is met with silence). Silence on everything is no lesson.
    state = tmp_path / "state"
    state.mkdir()
    with LibmodbusDevice(DEVICE, transport, tmp_path) as device:
        task, _ = _task(tmp_path, device, state, offline_after=2, offline_probe_s=0.3)
        (meter,) = task.devices
        async with running(task):
            await eventually(lambda: _long(device.requests()), 10, "the long read sent")
            if failure == "killed":
                device.kill()
            else:
                device.hang()
            await eventually(lambda: meter.state is DeviceState.OFFLINE, 10, "offline")
            polls = meter.polls
            await eventually(
                lambda: meter.polls >= polls + 3 or task.health.state is BusState.PORT_UNAVAILABLE,
                10,
                "three probes more, or (killed over TCP) no listener",
            )
        assert len(_long(device.requests())) == 1
    assert _counts(task) == [1, 76, 1], "the plan stays as it was"
    assert "(learnt)" not in task.read_plan()
    assert not (state / "modbus_learnt.json").exists()


def _wide_sdm120(folder: Path) -> Path:
    """The shipped SDM120 profile, but letting the planner ask 0x00..0x4B (76 registers)
    in its first read, as the field report's profile did."""
    text = (PROFILES / "eastron-sdm120.yaml").read_text()
    text = re.sub(r"max_registers_per_read: \d+", "max_registers_per_read: 125", text)
    text = re.sub(r"max_gap: \d+", "max_gap: 64", text)
    folder.mkdir(exist_ok=True)
    (folder / "eastron-sdm120.yaml").write_text(text)
    return folder


@pytest.mark.asyncio
@TRANSPORTS
async def test_a_meter_whose_first_read_is_the_long_one_is_still_learnt(
    tmp_path: Path, transport: Transport
) -> None:
    # Its probe (the first point alone) is answered, so the meter is seen alive and its
    # silence on the 76-register read is a lesson, though every poll starts with it.
    meter_device = DeviceConfig(unit=1, input={0: [0] * 0x158}, silent_above=40, baudrate=115200)
    with LibmodbusDevice(meter_device, transport, tmp_path) as device:
        task, table = modbus_bus_task(
            tmp_path,
            device.bus(timeout_s=0.2, retries=0),
            {"meter": {"profile": "eastron-sdm120", "unit_id": 1, "poll_period_s": PERIOD_S}},
            profiles=_wide_sdm120(tmp_path / "profiles"),
        )
        assert _counts(task)[0] == 76
        async with running(task):
            await eventually(
                lambda: all(s.value is not None for s in table.snapshot()), 10, "every point read"
            )
        requests = device.requests()
    assert [r.count for r in requests if r.result != "ok"] == [76, 76]
    assert all(count <= 40 for count in _counts(task)), _counts(task)
