"""A device that refuses what its profile allows (issue 15, point 2), over loopback TCP
and RTU on a pty, with the simulator's register-count limit (exception 3 above 40
registers, like the libmodbus meter of the field report).

The profile lets the planner send one 76-register read; the device must be read whole all
the same: the read refused, split, learnt and never sent again, also after a restart (the
lesson is kept in the state directory); and the poll that met the refusal still reads the
device's other blocks.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
import yaml

from helpers.bus_task import modbus_bus_task, running
from helpers.waiting import eventually
from smartpole.agent.buses.bus_set import BusSet
from smartpole.agent.buses.kind import BusContext, SimContext
from smartpole.agent.buses.modbus import KIND
from smartpole.agent.buses.modbus.task import ModbusBusTask
from smartpole.agent.buses.registry import load_config, registry
from smartpole.agent.core.audit import AuditLog
from smartpole.agent.core.errors import UsageError
from smartpole.agent.core.health import DeviceState
from smartpole.agent.core.points import PointTable, Quality
from smartpole.agent.core.quarantine import Damage
from smartpole.agent.sim.serve import parse_max_reads
from smartpole.drivers.modbus.plan import ReadBlock
from smartpole.drivers.modbus.points import RegisterKind
from smartpole.drivers.sim.modbus_bank import RegisterBank
from smartpole.drivers.sim.modbus_tcp import ModbusTcpServer
from smartpole.drivers.sim.rtu_pty import RtuPtyServer

DEVICE_LIMIT = 40
PERIOD_S = 0.1
FLOATS = 38  # 76 input registers in a row


def _profile(folder: Path) -> None:
    points: dict[str, object] = {
        "status": {"kind": "holding", "address": 0, "type": "u16"},
        **{f"v{n:02d}": {"kind": "input", "address": 2 * n, "type": "f32"} for n in range(FLOATS)},
        "far": {"kind": "input", "address": 200, "type": "u16"},
    }
    (folder / "short-buffer-meter.yaml").write_text(
        yaml.safe_dump(
            {
                "model": "short-buffer-meter",
                "manufacturer": "test",
                "manual": "none - a test device",
                "protocol": "modbus",
                # The profile allows what the device does not: 76 registers in one read.
                "limits": {"max_registers_per_read": 125, "max_gap": 4},
                "points": points,
            }
        )
    )


def _bank() -> RegisterBank:
    bank = RegisterBank()
    bank.set(RegisterKind.HOLDING, 0, [7])
    bank.set(RegisterKind.INPUT, 0, [0x3F80, 0] * FLOATS)  # 1.0f each
    bank.set(RegisterKind.INPUT, 200, [42])
    bank.max_read = DEVICE_LIMIT
    return bank


def _task(tmp_path: Path, port: int | str, state: Path) -> tuple[ModbusBusTask, PointTable]:
    """The task of one bus ``lan``: Modbus TCP to a loopback ``port``, or RTU on a pty path."""
    bus: dict[str, object] = (
        {"type": "modbus-rtu", "port": port, "baudrate": 115200}
        if isinstance(port, str)
        else {"type": "modbus-tcp", "host": "127.0.0.1", "port": port}
    )
    profiles = tmp_path / "profiles"
    profiles.mkdir(exist_ok=True)
    _profile(profiles)
    meter = {"profile": "short-buffer-meter", "unit_id": 1, "poll_period_s": PERIOD_S}
    return modbus_bus_task(
        tmp_path,
        {**bus, "timeout_s": 0.5},
        {"meter": meter},
        profiles=profiles,
        bus_name="lan",
        state_dir=state,
    )


class Requests:
    """Every read the task sends, with the number of polls finished before it."""

    def __init__(self, task: ModbusBusTask) -> None:
        self.sent: list[tuple[int, ReadBlock]] = []
        read = task._read

        async def observed(device: object, block: ReadBlock) -> list[int]:
            self.sent.append((task.devices[0].polls, block))
            return await read(device, block)  # type: ignore[arg-type]

        task._read = observed  # type: ignore[method-assign]


def _all_good(table: PointTable) -> bool:
    samples = [s for s in table.snapshot() if s.device == "meter"]
    return len(samples) == FLOATS + 2 and all(s.quality is Quality.GOOD for s in samples)


@pytest.mark.asyncio
@pytest.mark.parametrize("transport", ["tcp", "rtu"])
async def test_a_76_register_read_refused_is_split_learnt_and_never_sent_again(
    tmp_path: Path, transport: str
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    server = (
        ModbusTcpServer({1: _bank()})
        if transport == "tcp"
        else RtuPtyServer({1: _bank()}, baudrate=115200)
    )
    async with server as sim:
        port: int | str = sim.port if isinstance(sim, ModbusTcpServer) else sim.path
        task, table = _task(tmp_path, port, state)
        requests = Requests(task)
        meter = task.devices[0]
        async with running(task):
            await eventually(lambda: _all_good(table), 5, "every point read")
            settled = meter.polls
            await eventually(lambda: meter.polls >= settled + 5, 5, "five more polls")
        long_reads = [(poll, b) for poll, b in requests.sent if b.count > DEVICE_LIMIT]
        assert [(b.address, b.count) for _, b in long_reads] == [(0, 76)], "sent once only"
        assert meter.counters.exception == 1
        # The poll that met the refusal went on: the single far point was read in it.
        ((refused_in, _),) = long_reads
        assert (refused_in, ReadBlock(RegisterKind.INPUT, 200, 1, ("far",))) in requests.sent
        plan = task.read_plan()
        assert [(b["kind"], b["count"]) for b in plan["meter"]] == [  # type: ignore[union-attr]
            ("holding", 1),
            ("input", 38),
            ("input", 38),
            ("input", 1),
        ]
        assert plan["(learnt)"] == {
            "meter": {
                "max_per_read": {"input": 38},
                "max_per_read_reason": {"input": "exception 3"},
                "holes": [],
                "unsupported": [],
            }
        }
        saved = json.loads((state / "modbus_learnt.json").read_text())
        assert saved["buses"]["lan"]["meter"]["caps"] == {"input": 38}

        # A restart: the lesson is read back, the 76-register read is never sent.
        again, table = _task(tmp_path, port, state)
        requests = Requests(again)
        meter = again.devices[0]
        before = again.read_plan()["meter"]
        assert [b["count"] for b in before] == [1, 38, 38, 1]  # type: ignore[union-attr]
        async with running(again):
            await eventually(lambda: _all_good(table), 5, "every point read after restart")
            await eventually(lambda: meter.polls >= 5, 5, "five polls after restart")
        assert max(b.count for _, b in requests.sent) == 38
        assert meter.counters.exception == 0


@pytest.mark.asyncio
async def test_a_damaged_learnt_file_is_set_aside_and_learnt_again(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    damaged: list[Damage] = []
    async with ModbusTcpServer({1: _bank()}) as sim:
        _task(tmp_path, sim.port, state)  # writes the profile and the config
        (state / "modbus_learnt.json").write_text('{"version": 1, "buses": {')  # torn
        loaded = load_config(tmp_path / "pole.yaml")
        context = BusContext(
            loaded, PointTable(), AuditLog(tmp_path), lambda: True,
            state_dir=state, report_damage=damaged.append,
        )  # fmt: skip
        task = ModbusBusTask("lan", loaded.pole.buses["lan"], context)
        assert [d.store for d in damaged] == ["modbus_learnt"]
        assert list(state.glob("modbus_learnt.json.*")), "the damaged file is kept aside"
        meter = task.devices[0]
        async with running(task):
            await eventually(lambda: meter.counters.exception == 1, 5, "learnt again")
            await eventually(lambda: (state / "modbus_learnt.json").exists(), 5, "saved")
        saved = json.loads((state / "modbus_learnt.json").read_text())
        assert saved["buses"]["lan"]["meter"]["caps"] == {"input": 38}


@pytest.mark.asyncio
async def test_a_device_refusing_everything_costs_a_bounded_number_of_requests(
    tmp_path: Path,
) -> None:
    # Nothing mapped: every read is refused with exception 2. Each refusal teaches one
    # lesson (a hole, or a point it lacks), so the refusals end; they never repeat.
    state = tmp_path / "state"
    state.mkdir()
    async with ModbusTcpServer({1: RegisterBank()}) as sim:
        task, _ = _task(tmp_path, sim.port, state)
        requests = Requests(task)
        meter = task.devices[0]
        points = FLOATS + 2
        async with running(task):
            await eventually(
                lambda: len(meter.unsupported_points) == points, 10, "every point refused"
            )
            settled, learnt = meter.polls, len(requests.sent)
            await eventually(lambda: meter.polls >= settled + 5, 5, "five more polls")
        assert learnt <= 2 * points
        # Then it is refusing (alive, nothing to read), and each poll is one probe: a
        # refused point asked again, alone, at the backoff's pace.
        probes = [block for _, block in requests.sent[learnt:]]
        assert len(probes) == meter.polls - settled
        assert all(len(block.points) == 1 for block in probes), probes
        assert meter.state is DeviceState.REFUSING
        assert task.read_plan()["meter"] == []


@pytest.mark.asyncio
async def test_smartpole_sim_max_read_serves_a_device_with_a_short_buffer(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    _task(tmp_path, 502, state)  # the profile and a config to simulate
    loaded = load_config(tmp_path / "pole.yaml")
    with pytest.raises(UsageError, match="no device 'nobody'"):
        parse_max_reads(loaded, ["nobody=40"])
    with pytest.raises(UsageError, match="1 to 2000"):
        parse_max_reads(loaded, ["meter=0"])
    limits = parse_max_reads(loaded, ["meter=40"])
    async with contextlib.AsyncExitStack() as stack:
        context = SimContext(loaded, stack, 0.0, 0, "walk", limits)
        served = await registry().simulate("lan", context)
        task, table = _task(tmp_path, int(served.endpoint.rsplit(":", 1)[1]), state)
        meter = task.devices[0]
        async with running(task):
            await eventually(lambda: _all_good(table), 5, "every point read")
        assert meter.counters.exception == 1
        assert task.read_plan()["(learnt)"] == {
            "meter": {
                "max_per_read": {"input": 38},
                "max_per_read_reason": {"input": "exception 3"},
                "holes": [],
                "unsupported": [],
            }
        }


@pytest.mark.asyncio
async def test_a_lesson_that_cannot_be_saved_is_counted_and_kept_in_memory(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "modbus_learnt.json.tmp").mkdir()  # the atomic write's temporary file fails
    async with ModbusTcpServer({1: _bank()}) as sim:
        task, table = _task(tmp_path, sim.port, state)
        async with running(task):
            await eventually(lambda: _all_good(table), 5, "every point read")
        assert task.health.to_json()["state_write_failures"] == 1
        assert task.devices[0].counters.exception == 1  # still learnt, in memory
        problems = BusSet([(task, KIND)]).problems()
        assert any("could not be saved (1 failed writes)" in p for p in problems), problems
