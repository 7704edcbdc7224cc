"""Device power management: manual and automatic power cycles through a relay channel.

The relay, the devices' health and safety's holds are fakes; time and sleep are injected,
so no test waits.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import structlog
from pydantic import ValidationError

from smartpole.agent.config.alarms import AlarmRule
from smartpole.agent.config.power import PowerRule, power_rule_problems
from smartpole.agent.control.power import (
    ACTOR,
    RESTORE_RETRY_S,
    PowerManager,
    PowerRefusedError,
    held_off_points,
)
from smartpole.agent.core.audit import AuditLog
from smartpole.drivers.errors import DeviceTimeoutError

T0 = 1_700_000_000.0
CAMERA = PowerRule(relay="relays.relay2", auto_after_offline_s=300)
SCREEN = PowerRule(relay="relays.relay3", off_s=5)
OPERATOR = "local:uid=0,pid=42"


class Pole:
    """The relay module, the devices' health and safety, as the manager sees them."""

    def __init__(self) -> None:
        self.now = T0
        self.wall_step = 0.0  # how far the wall clock alone was stepped
        self.relays: dict[str, bool] = {f"relay{n}": True for n in range(1, 9)}
        self.writes: list[tuple[str, str, object, str]] = []
        self.failures: list[Exception | None] = []  # consumed one per write, None = works
        self.states: dict[str, tuple[str, float]] = {}
        self.held: set[str] = set()
        self.sleeps: list[float] = []
        self.gate: asyncio.Event | None = None  # set: a sleep waits for it
        self.sleeping = asyncio.Event()  # a sleep has started
        self.after_write: Callable[[str, bool], None] | None = None
        self.hang = False

    def time(self) -> float:  # the wall clock; with monotonic(), a clock that never steps
        return self.now + self.wall_step

    def monotonic(self) -> float:
        return self.now

    async def write(self, device: str, point: str, value: object, actor: str) -> object:
        self.writes.append((device, point, value, actor))
        if self.hang:
            await asyncio.Event().wait()
        failure = self.failures.pop(0) if self.failures else None
        if failure is not None:
            raise failure
        assert isinstance(value, bool)
        self.relays[point] = value
        if self.after_write is not None:
            self.after_write(point, value)
        return self.relays[point]

    def relay(self, point: str) -> bool:
        return self.relays[point]

    def device_state(self, name: str) -> tuple[str, float]:
        return self.states.get(name, ("online", T0 - 86400))

    def held_off(self) -> set[str]:
        return set(self.held)

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.sleeping.set()
        if self.gate is not None:
            await self.gate.wait()
        self.now += seconds

    def offline(self, device: str, since: float) -> None:
        self.states[device] = ("offline", since)

    def faulty(self, device: str, since: float) -> None:
        self.states[device] = ("faulty", since)

    def online(self, device: str, since: float) -> None:
        self.states[device] = ("online", since)

    def switched(self) -> list[tuple[str, object, str]]:
        return [(point, value, actor) for _, point, value, actor in self.writes]


@pytest.fixture
def pole() -> Pole:
    return Pole()


def manager(tmp_path: Path, pole: Pole, rules: dict[str, PowerRule] | None = None) -> PowerManager:
    return PowerManager(
        rules if rules is not None else {"camera": CAMERA, "screen": SCREEN},
        pole.write,
        pole.device_state,
        pole.held_off,
        AuditLog(tmp_path),
        pole,
        pole.sleep,
        store_path=tmp_path / "power.json",
    )


def status_of(power: PowerManager, device: str) -> dict[str, Any]:
    return next(item for item in power.status() if item["device"] == device)


def leftovers(folder: Path) -> list[Path]:
    return list(folder.glob("*.tmp"))


def events(logs: Sequence[Mapping[str, Any]], name: str) -> list[Mapping[str, Any]]:
    return [entry for entry in logs if entry["event"] == name]


# ----- the config model -----


def test_rule_defaults_and_strictness() -> None:
    rule = PowerRule.model_validate({"relay": "relays.relay2"})
    assert (rule.off_s, rule.auto_after_offline_s, rule.max_attempts) == (10, None, 3)
    assert (rule.backoff_s, rule.reset_after_online_s) == (600, 3600)
    assert (rule.relay_device, rule.relay_point) == ("relays", "relay2")
    assert [rule.backoff_after(n) for n in (1, 2, 3)] == [600, 1200, 2400]
    with pytest.raises(ValidationError, match="extra"):
        PowerRule.model_validate({"relay": "relays.relay2", "of_s": 5})
    with pytest.raises(ValidationError):
        PowerRule.model_validate({"relay": "relay2"})  # not device.point
    with pytest.raises(ValidationError):
        PowerRule.model_validate({"relay": "relays.relay2", "off_s": 0})


def test_rule_problems_name_the_bad_relay() -> None:
    points = {
        "camera": {},
        "relays": {"relay2": (True, True), "state": (False, False)},
    }
    rules = {
        "camera": CAMERA,
        "ghost": PowerRule(relay="relays.relay2"),
        "screen": PowerRule(relay="relays.state"),
        "relays": PowerRule(relay="relays.relay2"),
    }
    problems = dict(power_rule_problems(rules, points))
    assert ("power", "camera") not in problems
    assert ("power", "camera", "relay") not in problems
    assert "no device 'ghost'" in problems[("power", "ghost")]
    assert "not a writable true/false point" in problems[("power", "screen", "relay")]
    assert "cannot power-cycle itself" in problems[("power", "relays", "relay")]


def test_held_off_points_include_cuts_of_restored_alarms() -> None:
    leakage = AlarmRule.model_validate(
        {
            "severity": "critical",
            "raise_above": 30,
            "clear_below": 10,
            "sources": ["cabinet.leakage"],
            "on_raise": {"cut": ["relays.relay2"]},
        }
    )
    rules = {"leakage": leakage}
    # After a restart the supervisor has cut nothing in this run, but the alarm is active.
    assert held_off_points([], ["leakage"], rules) == {"relays.relay2"}
    assert held_off_points(["relays.relay1"], ["leakage_sensor_lost"], rules) == {"relays.relay1"}


# ----- manual power cycles -----


@pytest.mark.asyncio
async def test_manual_cycle_switches_off_waits_and_switches_on(tmp_path: Path, pole: Pole) -> None:
    power = manager(tmp_path, pole)
    result: dict[str, Any] = await power.power_cycle("camera", OPERATOR)

    assert pole.switched() == [("relay2", False, OPERATOR), ("relay2", True, OPERATOR)]
    assert pole.writes[0][0] == "relays"
    assert pole.sleeps == [10.0]
    assert pole.relay("relay2") is True
    assert result["ok"] is True
    assert result["error"] is None
    assert result["device"] == "camera"
    assert [(s["step"], s["value"], s["read_back"]) for s in result["steps"]] == [
        ("power_off", False, False),
        ("power_on", True, True),
    ]
    audit = AuditLog(tmp_path).tail(10)
    assert [(r["action"], r["actor"], r["target"]) for r in audit] == [
        ("power_off", OPERATOR, "camera@relays.relay2"),
        ("power_on", OPERATOR, "camera@relays.relay2"),
    ]
    assert [(r["requested"], r["ok"], r["read_back"]) for r in audit] == [
        (False, True, False),
        (True, True, True),
    ]
    state = status_of(power, "camera")
    assert state["last_cycle_by"] == OPERATOR
    assert state["last_result"] == "ok"
    assert state["attempts"] == 0  # a command does not use up automatic attempts
    assert state["running"] is False


@pytest.mark.asyncio
async def test_refused_while_safety_holds_the_relay_off(tmp_path: Path, pole: Pole) -> None:
    pole.held.add("relays.relay2")
    power = manager(tmp_path, pole)
    with pytest.raises(PowerRefusedError, match="held off by safety"):
        await power.power_cycle("camera", OPERATOR)
    assert pole.writes == []
    (record,) = AuditLog(tmp_path).tail(10)
    assert (record["action"], record["actor"], record["ok"]) == ("power_cycle", OPERATOR, False)
    assert "held off by safety" in str(record["error"])


@pytest.mark.asyncio
async def test_refused_for_a_device_without_a_rule(tmp_path: Path, pole: Pole) -> None:
    power = manager(tmp_path, pole)
    with pytest.raises(PowerRefusedError, match="no power rule for device 'lamp1'"):
        await power.power_cycle("lamp1", OPERATOR)
    assert pole.writes == []


@pytest.mark.asyncio
async def test_refused_while_a_cycle_is_running(tmp_path: Path, pole: Pole) -> None:
    shared = PowerRule(relay="relays.relay2")  # a second device on the same supply
    power = manager(tmp_path, pole, {"camera": CAMERA, "radio": shared})
    pole.gate = asyncio.Event()
    first = asyncio.create_task(power.power_cycle("camera", OPERATOR))
    await pole.sleeping.wait()
    assert status_of(power, "camera")["running"] is True

    with pytest.raises(PowerRefusedError, match="already running"):
        await power.power_cycle("camera", "mqtt:platform")
    with pytest.raises(PowerRefusedError, match="being switched for camera"):
        await power.power_cycle("radio", "mqtt:platform")

    pole.gate.set()
    result: dict[str, Any] = await first
    assert result["ok"] is True
    assert pole.switched() == [("relay2", False, OPERATOR), ("relay2", True, OPERATOR)]
    assert status_of(power, "camera")["running"] is False


@pytest.mark.asyncio
async def test_safety_taking_the_relay_during_the_off_time_keeps_it_off(
    tmp_path: Path, pole: Pole
) -> None:
    power = manager(tmp_path, pole)
    pole.gate = asyncio.Event()
    cycle = asyncio.create_task(power.power_cycle("camera", OPERATOR))
    await pole.sleeping.wait()
    pole.held.add("relays.relay2")  # leakage on the camera's circuit
    pole.gate.set()
    result: dict[str, Any] = await cycle

    assert pole.switched() == [("relay2", False, OPERATOR)]  # never switched back on
    assert pole.relay("relay2") is False
    assert result["ok"] is False
    assert "held off by safety" in result["error"]
    assert status_of(power, "camera")["power_off_pending"] is False  # safety's relay now
    await power.tick()
    assert len(pole.writes) == 1


@pytest.mark.asyncio
async def test_safety_raising_while_switching_on_gets_its_cut_back(
    tmp_path: Path, pole: Pole
) -> None:
    def safety_raises(point: str, value: bool) -> None:
        if point == "relay2" and value:
            pole.held.add("relays.relay2")

    pole.after_write = safety_raises
    power = manager(tmp_path, pole)
    result: dict[str, Any] = await power.power_cycle("camera", OPERATOR)
    assert pole.switched() == [
        ("relay2", False, OPERATOR),
        ("relay2", True, OPERATOR),
        ("relay2", False, ACTOR),
    ]
    assert pole.relay("relay2") is False
    assert result["ok"] is False
    assert "switched off again" in result["error"]


# ----- failures -----


@pytest.mark.asyncio
async def test_failed_off_write_is_reported_and_does_not_stick(tmp_path: Path, pole: Pole) -> None:
    power = manager(tmp_path, pole)
    pole.failures = [DeviceTimeoutError("relays: no answer")]
    result: dict[str, Any] = await power.power_cycle("camera", OPERATOR)

    assert result["ok"] is False
    assert "switching relays.relay2 off failed: relays: no answer" in result["error"]
    assert pole.sleeps == []  # no off time: the off was not confirmed
    # The off may have reached the relay (a lost reply): it is switched on to be sure.
    assert pole.switched() == [("relay2", False, OPERATOR), ("relay2", True, OPERATOR)]
    audit = AuditLog(tmp_path).tail(10)
    assert [(r["action"], r["ok"], r["error"]) for r in audit] == [
        ("power_off", False, "relays: no answer"),
        ("power_on", True, None),
    ]
    state = status_of(power, "camera")
    assert (state["running"], state["power_off_pending"]) == (False, False)
    assert "off failed" in state["last_result"]

    again: dict[str, Any] = await power.power_cycle("camera", OPERATOR)
    assert again["ok"] is True


@pytest.mark.asyncio
async def test_failed_on_write_is_retried_until_the_power_is_back(
    tmp_path: Path, pole: Pole
) -> None:
    power = manager(tmp_path, pole)
    pole.failures = [None, DeviceTimeoutError("relays: no answer")]
    result: dict[str, Any] = await power.power_cycle("camera", OPERATOR)

    assert result["ok"] is False
    assert "back on failed: relays: no answer" in result["error"]
    assert pole.relay("relay2") is False
    state = status_of(power, "camera")
    assert (state["running"], state["power_off_pending"]) == (False, True)

    await power.tick()  # too early for a retry
    assert len(pole.writes) == 2
    pole.now += RESTORE_RETRY_S
    await power.tick()
    assert pole.switched()[-1] == ("relay2", True, ACTOR)
    assert pole.relay("relay2") is True
    assert status_of(power, "camera")["power_off_pending"] is False
    assert AuditLog(tmp_path).tail(1)[0]["action"] == "power_restore"


@pytest.mark.asyncio
async def test_cancelled_during_the_off_time_switches_back_on(tmp_path: Path, pole: Pole) -> None:
    power = manager(tmp_path, pole)
    pole.gate = asyncio.Event()
    cycle = asyncio.create_task(power.power_cycle("camera", OPERATOR))
    await pole.sleeping.wait()
    cycle.cancel()  # the daemon is stopping
    with pytest.raises(asyncio.CancelledError):
        await cycle
    assert pole.switched() == [("relay2", False, OPERATOR), ("relay2", True, OPERATOR)]
    state = status_of(power, "camera")
    assert (state["running"], state["power_off_pending"]) == (False, False)
    assert "interrupted" in state["last_result"]


@pytest.mark.asyncio
async def test_a_failing_wait_still_switches_back_on(tmp_path: Path, pole: Pole) -> None:
    async def broken_sleep(_seconds: float) -> None:
        raise RuntimeError("bug")

    power = PowerManager(
        {"camera": CAMERA}, pole.write, pole.device_state, pole.held_off,
        AuditLog(tmp_path), pole, broken_sleep, store_path=tmp_path / "power.json",
    )  # fmt: skip
    with pytest.raises(RuntimeError, match="bug"):
        await power.power_cycle("camera", OPERATOR)
    assert pole.switched() == [("relay2", False, OPERATOR), ("relay2", True, OPERATOR)]
    assert status_of(power, "camera")["running"] is False


# ----- automatic cycles -----


@pytest.mark.asyncio
async def test_automatic_cycle_after_the_offline_threshold(tmp_path: Path, pole: Pole) -> None:
    power = manager(tmp_path, pole)
    pole.offline("camera", T0)
    pole.offline("screen", T0 - 86400)  # manual only: never cycled by the agent

    pole.now = T0 + 299
    await power.tick()
    assert pole.writes == []

    pole.now = T0 + 300
    await power.tick()
    assert pole.switched() == [("relay2", False, ACTOR), ("relay2", True, ACTOR)]
    state = status_of(power, "camera")
    assert state["attempts"] == 1
    assert state["last_cycle_by"] == ACTOR
    assert state["next_allowed_at"] == T0 + 300 + 10 + 600
    assert [r["actor"] for r in AuditLog(tmp_path).tail(10)] == [ACTOR, ACTOR]


@pytest.mark.asyncio
async def test_a_device_answering_only_garbage_is_cycled_like_an_offline_one(
    tmp_path: Path, pole: Pole
) -> None:
    power = manager(tmp_path, pole)
    pole.faulty("camera", T0)
    pole.now = T0 + 299
    await power.tick()
    assert pole.writes == []
    pole.now = T0 + 300
    await power.tick()
    assert pole.switched() == [("relay2", False, ACTOR), ("relay2", True, ACTOR)]


@pytest.mark.asyncio
async def test_a_wall_clock_step_neither_starts_a_cycle_nor_ends_a_backoff(
    tmp_path: Path, pole: Pole
) -> None:
    power = manager(tmp_path, pole)
    pole.offline("camera", T0)  # offline for 100 s of the 300 s it takes ...
    pole.now = T0 + 100
    await power.tick()
    pole.wall_step = 2 * 86400.0  # ... when the wall clock jumps two days ahead
    await power.tick()
    assert pole.writes == []
    pole.now = T0 + 300  # 300 s of real time: now it is due
    await power.tick()
    assert len(pole.writes) == 2
    pole.wall_step = 4 * 86400.0  # another jump must not end the 600 s backoff
    pole.now += 60
    await power.tick()
    assert len(pole.writes) == 2
    pole.wall_step = 0.0  # nor one back stretch it: due 600 s after the cycle ended
    pole.now = T0 + 300 + 10 + 600
    await power.tick()
    assert len(pole.writes) == 4


@pytest.mark.asyncio
async def test_backoff_doubles_then_the_agent_gives_up_once(tmp_path: Path, pole: Pole) -> None:
    power = manager(tmp_path, pole)
    pole.offline("camera", T0)
    cycle_times = []
    with structlog.testing.capture_logs() as logs:
        # attempt 1 at +300 ends at +310; +600 -> attempt 2 at +910, ends +920;
        # +1200 -> attempt 3 at +2120, ends +2130; +2400 -> gives up at +4530.
        for at in (300, 909, 910, 2119, 2120, 4529, 4530, 5000, 90000):
            pole.now = T0 + at
            before = len(pole.writes)
            await power.tick()
            if len(pole.writes) > before:
                cycle_times.append(at)
    assert cycle_times == [300, 910, 2120]
    assert len(pole.writes) == 6
    gave_up = events(logs, "power_cycle_gave_up")
    assert len(gave_up) == 1
    assert gave_up[0]["attempts"] == 3
    state = status_of(power, "camera")
    assert (state["attempts"], state["gave_up"]) == (3, True)

    # The operator can still cycle it by hand.
    result: dict[str, Any] = await power.power_cycle("camera", OPERATOR)
    assert result["ok"] is True


@pytest.mark.asyncio
async def test_recovery_is_logged_once_and_attempts_reset_after_a_long_online_period(
    tmp_path: Path, pole: Pole
) -> None:
    power = manager(tmp_path, pole)
    pole.offline("camera", T0)
    pole.now = T0 + 300
    await power.tick()
    assert status_of(power, "camera")["attempts"] == 1

    with structlog.testing.capture_logs() as logs:
        pole.online("camera", T0 + 400)
        for at in (400, 500, 400 + 3599):
            pole.now = T0 + at
            await power.tick()
        assert status_of(power, "camera")["attempts"] == 1
        pole.now = T0 + 400 + 3600
        await power.tick()
    assert len(events(logs, "power_cycle_recovered")) == 1
    assert len(events(logs, "power_cycle_attempts_reset")) == 1
    state = status_of(power, "camera")
    assert (state["attempts"], state["gave_up"], state["next_allowed_at"]) == (0, False, None)

    # Hung again: cycled at once after the threshold, no leftover backoff.
    pole.offline("camera", pole.now)
    pole.now += 300
    await power.tick()
    assert status_of(power, "camera")["attempts"] == 1
    assert len(pole.writes) == 4


@pytest.mark.asyncio
async def test_a_short_online_period_keeps_the_attempt_count(tmp_path: Path, pole: Pole) -> None:
    power = manager(tmp_path, pole)
    pole.offline("camera", T0)
    pole.now = T0 + 300
    await power.tick()
    pole.online("camera", T0 + 400)
    pole.now = T0 + 1000
    await power.tick()
    pole.offline("camera", T0 + 1100)  # hung again ten minutes later
    pole.now = T0 + 1400
    await power.tick()
    assert status_of(power, "camera")["attempts"] == 2


@pytest.mark.asyncio
async def test_no_automatic_cycle_while_safety_holds_the_relay(tmp_path: Path, pole: Pole) -> None:
    power = manager(tmp_path, pole)
    pole.offline("camera", T0)  # offline *because* safety cut its supply
    pole.held.add("relays.relay2")
    with structlog.testing.capture_logs() as logs:
        for at in (300, 1000, 5000):
            pole.now = T0 + at
            await power.tick()
    assert pole.writes == []
    assert status_of(power, "camera")["attempts"] == 0
    assert status_of(power, "camera")["held_off_by_safety"] is True
    assert len(events(logs, "power_cycle_held_off")) == 1


@pytest.mark.asyncio
async def test_no_automatic_cycle_while_the_relay_module_is_offline(
    tmp_path: Path, pole: Pole
) -> None:
    power = manager(tmp_path, pole)
    pole.offline("camera", T0)
    pole.offline("relays", T0)
    pole.now = T0 + 1000
    await power.tick()
    assert pole.writes == []
    assert status_of(power, "camera")["attempts"] == 0
    pole.online("relays", T0 + 1000)
    await power.tick()
    assert status_of(power, "camera")["attempts"] == 1


@pytest.mark.asyncio
async def test_run_checks_every_few_seconds(tmp_path: Path, pole: Pole) -> None:
    class StopError(Exception):
        pass

    periods: list[float] = []

    async def sleep(seconds: float) -> None:
        periods.append(seconds)
        pole.now += seconds
        if len(periods) == 4:
            raise StopError

    pole.offline("camera", T0 - 300)
    power = PowerManager(
        {"camera": CAMERA}, pole.write, pole.device_state, pole.held_off,
        AuditLog(tmp_path), pole, sleep, store_path=tmp_path / "power.json",
    )  # fmt: skip
    with pytest.raises(StopError):
        await power.run()
    assert periods == [10.0, 5.0, 5.0, 5.0]  # one off time, then the check period
    assert len(pole.writes) == 2


# ----- persistence -----


@pytest.mark.asyncio
async def test_attempts_and_backoff_survive_a_restart(tmp_path: Path, pole: Pole) -> None:
    first = manager(tmp_path, pole)
    pole.offline("camera", T0)
    for at in (300, 910):
        pole.now = T0 + at
        await first.tick()
    before = status_of(first, "camera")
    assert before["attempts"] == 2
    saved = json.loads((tmp_path / "power.json").read_text())
    assert saved["devices"]["camera"]["attempts"] == 2
    assert leftovers(tmp_path) == []

    second = manager(tmp_path, pole)  # the agent restarted
    after = status_of(second, "camera")
    for key in ("attempts", "next_allowed_at", "last_cycle_at", "last_cycle_by", "gave_up"):
        assert after[key] == before[key]
    pole.now = before["next_allowed_at"] - 1
    await second.tick()
    assert len(pole.writes) == 4  # the backoff still holds
    pole.now = before["next_allowed_at"]
    await second.tick()
    assert status_of(second, "camera")["attempts"] == 3

    pole.now += 2400
    await second.tick()
    assert status_of(second, "camera")["gave_up"] is True
    with structlog.testing.capture_logs() as logs:
        third = manager(tmp_path, pole)
        pole.now += 600
        await third.tick()
    assert status_of(third, "camera")["gave_up"] is True
    assert events(logs, "power_cycle_gave_up") == []  # logged once, not once per start
    assert len(pole.writes) == 6


@pytest.mark.asyncio
async def test_power_left_off_by_a_crash_is_switched_back_on(tmp_path: Path, pole: Pole) -> None:
    pole.relays["relay2"] = False
    (tmp_path / "power.json").write_text(
        json.dumps({"version": 1, "devices": {"camera": {"attempts": 1, "off_pending": True}}})
    )
    power = manager(tmp_path, pole)
    assert status_of(power, "camera")["power_off_pending"] is True
    await power.tick()
    assert pole.switched() == [("relay2", True, ACTOR)]
    assert status_of(power, "camera")["power_off_pending"] is False
    assert status_of(power, "camera")["attempts"] == 1


@pytest.mark.asyncio
async def test_power_left_off_is_not_switched_on_while_safety_holds_it(
    tmp_path: Path, pole: Pole
) -> None:
    (tmp_path / "power.json").write_text(
        json.dumps({"version": 1, "devices": {"camera": {"off_pending": True}}})
    )
    pole.held.add("relays.relay2")
    power = manager(tmp_path, pole)
    await power.tick()
    assert pole.writes == []
    assert status_of(power, "camera")["power_off_pending"] is False


def test_an_unreadable_store_starts_fresh(tmp_path: Path, pole: Pole) -> None:
    (tmp_path / "power.json").write_text("{not json")
    with structlog.testing.capture_logs() as logs:
        power = manager(tmp_path, pole)
    assert status_of(power, "camera")["attempts"] == 0
    assert len(events(logs, "power_store_unreadable")) == 1

    (tmp_path / "power.json").write_text(
        json.dumps({"version": 1, "devices": {"camera": {"attempts": "many"}, "gone": {}}})
    )
    with structlog.testing.capture_logs() as logs:
        power = manager(tmp_path, pole)
    assert status_of(power, "camera")["attempts"] == 0
    assert len(events(logs, "power_store_entry_skipped")) == 1


@pytest.mark.asyncio
async def test_a_hung_relay_does_not_hold_up_a_stop(
    tmp_path: Path, pole: Pole, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("smartpole.agent.control.power.SHUTDOWN_WRITE_TIMEOUT_S", 0.01)
    power = manager(tmp_path, pole)
    pole.gate = asyncio.Event()
    cycle = asyncio.create_task(power.power_cycle("camera", OPERATOR))
    await pole.sleeping.wait()
    pole.hang = True  # the bus task is already gone: a write never completes
    cycle.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cycle
    state = status_of(power, "camera")
    assert (state["running"], state["power_off_pending"]) == (False, True)  # next start: on
    assert AuditLog(tmp_path).tail(1)[0]["error"] == "no answer within 0.01 s"
