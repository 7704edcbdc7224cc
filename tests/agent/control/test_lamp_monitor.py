"""Lamp faults judged from the meter, and per-lamp energy and burning-hour accounting.

Time is the ``at`` of each reading and a fake clock; no test waits. A "poll" feeds what the
lamp controller reports every ``POLL_S``: supply voltage, active power, power factor, energy.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any

import pytest
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from smartpole.agent.config.lamp_monitor import LampMonitorSettings
from smartpole.agent.control.alarms import AlarmManager
from smartpole.agent.control.lamp_monitor import (
    CYCLING,
    DAY_BURNING,
    KINDS,
    LAMP_NOT_LIGHTING,
    LOW_POWER_FACTOR,
    POWER_OUT_OF_RANGE,
    LampMonitor,
    alarm_definitions,
)
from smartpole.agent.core.clock import SteadyClock
from smartpole.agent.core.points import PointTable, Quality

T0 = 1_700_000_000.0
POLL_S = 10.0
SETTINGS = LampMonitorSettings(
    rated_power_w=100.0,
    tolerance=0.2,
    idle_power_w=3.0,
    settle_s=60.0,
    max_switches=4,
    cycling_window_s=600.0,
    persist_s=300.0,
)
SOURCE = "lamp1.monitor"

Emitted = tuple[str, str, bool, str, float]


class Rig:
    """One monitor, a commanded level per lamp, a fake clock and everything it emitted."""

    def __init__(
        self,
        store: Path,
        level: int | None = 100,
        monitor_settings: LampMonitorSettings = SETTINGS,
        lamps: tuple[str, ...] = ("lamp1",),
    ) -> None:
        self.now = T0
        self.levels: dict[str, int | None] = dict.fromkeys(lamps, level)
        self.emitted: list[Emitted] = []
        self.store = store
        self.settings = monitor_settings
        self.monitor = self.start()

    def start(self) -> LampMonitor:
        return LampMonitor(
            list(self.levels),
            self.levels.__getitem__,
            self.settings,
            self.store,
            self.clock,
            emit=self.record,
        )

    def clock(self) -> float:
        return self.now

    def record(self, source: str, kind: str, value: bool, quality: str, at: float) -> None:
        self.emitted.append((source, kind, value, quality, at))

    def feed(self, point: str, value: object, quality: str = "good", lamp: str = "lamp1") -> None:
        self.monitor.on_reading(lamp, point, value, quality, self.now)

    def poll(
        self,
        power: float,
        pf: float = 0.97,
        *,
        energy: float | None = None,
        volts: float = 230.0,
        dt: float = POLL_S,
        quality: str = "good",
    ) -> None:
        self.now += dt
        self.feed("supply_voltage", volts, quality)
        self.feed("active_power", power, quality)
        self.feed("power_factor", pf, quality)
        if energy is not None:
            self.feed("energy", energy, quality)

    def hold(self, seconds: float, power: float, pf: float = 0.97) -> None:
        for _ in range(round(seconds / POLL_S)):
            self.poll(power, pf)

    def last(self, kind: str, source: str = SOURCE) -> tuple[bool, str] | None:
        """(value, quality) of the newest report of ``kind``."""
        for src, k, value, quality, _at in reversed(self.emitted):
            if src == source and k == kind:
                return value, quality
        return None

    def raised(self, kind: str) -> list[float]:
        """Times ``kind`` was reported present with good quality."""
        return [
            at for s, k, v, q, at in self.emitted if s == SOURCE and k == kind and v and q == "good"
        ]


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    return Rig(tmp_path / "lamp_accounts.json")


# ----- conditions ----------------------------------------------------------------------


def test_a_healthy_lamp_reports_every_condition_absent(rig: Rig) -> None:
    rig.hold(120, 80.5)
    rig.levels["lamp1"] = 80
    rig.hold(120, 80.5)
    for kind in (POWER_OUT_OF_RANGE, LAMP_NOT_LIGHTING, CYCLING, LOW_POWER_FACTOR):
        assert rig.last(kind) == (False, "good"), kind
    assert rig.last(DAY_BURNING) == (False, "uncertain")  # commanded on: cannot be told
    assert all(not value for _s, _k, value, _q, _at in rig.emitted)


def test_lamp_not_lighting_raised_and_cleared(rig: Rig) -> None:
    rig.hold(120, 100.0)
    assert rig.last(LAMP_NOT_LIGHTING) == (False, "good")
    rig.poll(0.4)  # the lamp went out: driver standby only
    assert rig.last(LAMP_NOT_LIGHTING) == (True, "good")
    assert rig.last(POWER_OUT_OF_RANGE) == (True, "good")
    rig.hold(300, 0.4)
    assert rig.last(LAMP_NOT_LIGHTING) == (True, "good")
    rig.poll(99.0)  # lamp replaced
    assert rig.last(LAMP_NOT_LIGHTING) == (False, "good")
    assert rig.last(POWER_OUT_OF_RANGE) == (False, "good")


def test_lamp_not_lighting_is_kept_through_the_day(rig: Rig) -> None:
    rig.hold(120, 0.0)
    assert rig.last(LAMP_NOT_LIGHTING) == (True, "good")
    rig.levels["lamp1"] = 0  # dawn: a dead lamp commanded off tells nothing about the lamp
    rig.hold(600, 0.0)
    assert rig.last(LAMP_NOT_LIGHTING) == (False, "uncertain")
    assert rig.last(DAY_BURNING) == (False, "good")


def test_power_out_of_range_high_and_low(rig: Rig) -> None:
    rig.levels["lamp1"] = 50  # expected 50 W, in range 40..60 W
    rig.hold(120, 55.0)
    assert rig.last(POWER_OUT_OF_RANGE) == (False, "good")
    rig.poll(61.0)
    assert rig.last(POWER_OUT_OF_RANGE) == (True, "good")
    rig.poll(59.0)
    assert rig.last(POWER_OUT_OF_RANGE) == (False, "good")
    rig.poll(39.0)
    assert rig.last(POWER_OUT_OF_RANGE) == (True, "good")
    assert rig.last(LAMP_NOT_LIGHTING) == (False, "good")  # dim, but lit
    rig.poll(41.0)
    assert rig.last(POWER_OUT_OF_RANGE) == (False, "good")


def test_a_lamp_commanded_off_must_draw_nothing(rig: Rig) -> None:
    rig.levels["lamp1"] = 0
    rig.hold(120, 0.5)
    assert rig.last(POWER_OUT_OF_RANGE) == (False, "good")
    rig.poll(5.0)
    assert rig.last(POWER_OUT_OF_RANGE) == (True, "good")


def test_per_lamp_rated_power(tmp_path: Path) -> None:
    wide = SETTINGS.model_copy(update={"lamp_rated_power_w": {"lamp2": 250.0}})
    rig = Rig(tmp_path / "a.json", monitor_settings=wide, lamps=("lamp1", "lamp2"))
    for _ in range(12):
        rig.now += POLL_S
        rig.feed("active_power", 100.0, lamp="lamp1")
        rig.feed("active_power", 245.0, lamp="lamp2")
    assert rig.last(POWER_OUT_OF_RANGE) == (False, "good")
    assert rig.last(POWER_OUT_OF_RANGE, "lamp2.monitor") == (False, "good")


def test_no_false_alarm_while_a_new_level_settles(rig: Rig) -> None:
    rig.levels["lamp1"] = 0
    rig.hold(300, 0.3)  # day, dark
    rig.levels["lamp1"] = 100  # dusk: the lamp starts up over the next ~40 s
    start = rig.now
    for power in (0.3, 0.3, 20.0, 60.0, 95.0, 100.0, 100.0, 100.0, 100.0):
        rig.poll(power)
    judged = [(k, v, q, at) for _s, k, v, q, at in rig.emitted if at > start and q == "good" and v]
    assert judged == []
    # Until settle_s has passed nothing is judged at all (an alarm keeps its state).
    for kind in (POWER_OUT_OF_RANGE, LAMP_NOT_LIGHTING, CYCLING):
        qualities = {q for _s, k, _v, q, at in rig.emitted if k == kind and start < at < start + 60}
        assert qualities == {"uncertain"}, kind
    assert rig.last(LAMP_NOT_LIGHTING) == (False, "good")
    # Switching off: the lamp takes a moment to go dark; no day-burning for that.
    rig.levels["lamp1"] = 0
    start = rig.now
    rig.poll(100.0)
    rig.poll(40.0)
    rig.hold(120, 0.3)
    assert [at for at in rig.raised(DAY_BURNING) if at > start] == []
    assert rig.last(DAY_BURNING) == (False, "good")


def test_nothing_is_judged_before_the_lighting_controller_pushed(rig: Rig) -> None:
    rig.levels["lamp1"] = None
    rig.hold(600, 0.0)
    assert {q for *_rest, q, _at in rig.emitted} == {"uncertain"}


def test_day_burning_raised_after_settle_and_cleared(rig: Rig) -> None:
    rig.hold(120, 100.0)
    rig.levels["lamp1"] = 0  # dawn, but the relay sticks
    switched_at = rig.now
    rig.hold(300, 100.0)
    raised = rig.raised(DAY_BURNING)
    assert raised
    assert min(raised) >= switched_at + SETTINGS.settle_s
    assert rig.last(LAMP_NOT_LIGHTING) == (False, "uncertain")
    rig.poll(0.8)  # relay freed
    assert rig.last(DAY_BURNING) == (False, "good")


def test_low_power_factor_only_while_burning_bright(rig: Rig) -> None:
    rig.hold(120, 100.0, pf=0.95)
    assert rig.last(LOW_POWER_FACTOR) == (False, "good")
    rig.poll(100.0, pf=0.62)
    assert rig.last(LOW_POWER_FACTOR) == (True, "good")
    rig.poll(100.0, pf=0.93)
    assert rig.last(LOW_POWER_FACTOR) == (False, "good")
    rig.levels["lamp1"] = 30  # drivers' PF falls when dimmed deep: not judged
    rig.hold(300, 30.0, pf=0.55)
    assert rig.last(LOW_POWER_FACTOR) == (False, "uncertain")
    rig.levels["lamp1"] = 0  # off: the PF of a dark lamp means nothing
    rig.hold(300, 0.5, pf=0.1)
    assert rig.last(LOW_POWER_FACTOR) == (False, "uncertain")
    assert rig.raised(LOW_POWER_FACTOR) == [T0 + 130]


def test_cycling_within_the_window(rig: Rig) -> None:
    rig.hold(120, 100.0)
    # A failing lamp: out for a minute, back for a minute, over and over.
    for _ in range(2):
        rig.hold(60, 0.5)
        rig.hold(60, 100.0)
    assert rig.last(CYCLING) == (False, "good")  # 4 changes: not more than max_switches
    rig.hold(60, 0.5)  # the 5th change
    assert rig.last(CYCLING) == (True, "good")
    # It stays on; once the changes drop out of the 600 s window the condition clears.
    rig.hold(60, 100.0)
    rig.hold(600, 100.0)
    assert rig.last(CYCLING) == (False, "good")


def test_switches_spread_beyond_the_window_are_not_cycling(rig: Rig) -> None:
    rig.hold(120, 100.0)
    for _ in range(6):
        rig.hold(200, 0.5)
        rig.hold(200, 100.0)
    assert rig.raised(CYCLING) == []


def test_commanded_changes_are_not_cycling(rig: Rig) -> None:
    rig.hold(120, 100.0)
    for _ in range(6):
        rig.levels["lamp1"] = 0
        rig.hold(70, 0.5)
        rig.levels["lamp1"] = 100
        rig.hold(70, 100.0)
    assert rig.raised(CYCLING) == []
    assert rig.raised(DAY_BURNING) == []


def test_supply_loss_is_not_blamed_on_the_lamp(rig: Rig) -> None:
    rig.hold(120, 100.0)
    rig.now += POLL_S
    rig.feed("supply_loss", True)
    rig.feed("active_power", 0.0)
    assert rig.last(LAMP_NOT_LIGHTING) == (False, "uncertain")
    assert rig.last(POWER_OUT_OF_RANGE) == (False, "uncertain")
    rig.now += POLL_S
    rig.feed("supply_loss", False)
    rig.feed("active_power", 0.0)
    assert rig.last(LAMP_NOT_LIGHTING) == (True, "good")


def test_low_supply_voltage_counts_as_lost_when_configured(tmp_path: Path) -> None:
    strict = SETTINGS.model_copy(update={"min_supply_voltage_v": 184.0})
    rig = Rig(tmp_path / "a.json", monitor_settings=strict)
    rig.hold(120, 100.0)
    rig.poll(0.0, volts=20.0)
    assert rig.last(LAMP_NOT_LIGHTING) == (False, "uncertain")
    rig.poll(0.0, volts=229.0)
    assert rig.last(LAMP_NOT_LIGHTING) == (True, "good")


@pytest.mark.parametrize("quality", ["bad", "stale", "uncertain"])
def test_readings_that_are_not_good_are_ignored(rig: Rig, quality: str) -> None:
    rig.hold(120, 100.0)
    before = len(rig.emitted)
    for _ in range(30):
        rig.poll(0.0, pf=0.1, quality=quality)
    assert len(rig.emitted) == before
    rig.levels["lamp1"] = 0
    for _ in range(30):
        rig.poll(100.0, quality=quality)
    assert len(rig.emitted) == before


@pytest.mark.parametrize("value", [math.nan, math.inf, -5.0, True, None, "80.5"])
def test_values_that_are_not_power_are_ignored(rig: Rig, value: object) -> None:
    rig.hold(120, 100.0)
    before = len(rig.emitted)
    rig.now += POLL_S
    rig.feed("active_power", value)
    rig.feed("power_factor", value)
    assert len(rig.emitted) == before


def test_other_devices_and_points_are_ignored(rig: Rig) -> None:
    rig.now += POLL_S
    rig.feed("active_power", 0.0, lamp="supply")
    rig.feed("lamp_current", 0.0)
    rig.feed("burning_hours", 10423)
    assert rig.emitted == []


def test_alarms_raise_and_clear_through_the_alarm_manager(tmp_path: Path) -> None:
    clock = {"now": T0}
    manager = AlarmManager(
        alarm_definitions(SETTINGS),
        tmp_path / "alarms.json",
        None,
        SteadyClock(lambda: clock["now"]),
    )
    events: list[tuple[str, str]] = []
    levels = {"lamp1": 100}

    def emit(source: str, kind: str, value: bool, quality: str, at: float) -> None:
        events.extend(
            (e.type.value, e.alarm_id) for e in manager.observe(source, kind, value, quality, at)
        )

    monitor = LampMonitor(
        ["lamp1"], levels.get, SETTINGS, tmp_path / "acc.json", lambda: clock["now"], emit=emit
    )

    def hold(seconds: float, power: float) -> None:
        for _ in range(round(seconds / POLL_S)):
            clock["now"] += POLL_S
            monitor.on_reading("lamp1", "active_power", power, "good", clock["now"])

    hold(120, 100.0)
    hold(30, 0.0)  # out for less than confirm_s: no alarm
    hold(60, 100.0)
    assert events == []
    hold(120, 0.0)
    assert sorted(events) == [
        ("raised", "lamp1.monitor/lamp_not_lighting"),
        ("raised", "lamp1.monitor/power_out_of_range"),
    ]
    levels["lamp1"] = 0  # day: the dead lamp stays reported
    hold(600, 0.0)
    # Dark and commanded off is in range again; a lamp failure cannot be told, so it stays.
    assert ("cleared", "lamp1.monitor/power_out_of_range") in events
    assert [a.alarm_id for a in manager.active()] == ["lamp1.monitor/lamp_not_lighting"]
    levels["lamp1"] = 100  # the lamp was replaced during the day
    events.clear()
    hold(200, 100.0)
    assert ("cleared", "lamp1.monitor/lamp_not_lighting") in events
    assert manager.active() == []


def test_alarm_definitions_follow_the_settings() -> None:
    custom = LampMonitorSettings(confirm_s=5.0, severities={"day_burning": "major"})
    definitions = {d.kind: d for d in alarm_definitions(custom)}
    assert set(definitions) == set(KINDS)
    assert definitions[DAY_BURNING].severity == "major"
    assert definitions[LAMP_NOT_LIGHTING].severity == "major"
    assert definitions[LOW_POWER_FACTOR].severity == "warning"
    assert all(d.raise_when is True and d.debounce_s == 5.0 for d in definitions.values())


def test_it_listens_to_the_point_table(tmp_path: Path) -> None:
    now = {"wall": T0}
    table = PointTable(monotonic=lambda: now["wall"], wall=lambda: now["wall"])
    for point in ("active_power", "power_factor", "energy"):
        table.register("lamp1", point, "", 10.0)
    seen: list[Emitted] = []
    monitor = LampMonitor(
        ["lamp1"],
        lambda _lamp: 100,
        SETTINGS,
        tmp_path / "acc.json",
        lambda: now["wall"],
        emit=lambda *args: seen.append(args),
    )
    table.listen(monitor.on_reading)
    for _ in range(10):
        now["wall"] += POLL_S
        table.update("lamp1", "active_power", 0.0, Quality.GOOD)
    assert (SOURCE, LAMP_NOT_LIGHTING, True, "good", now["wall"]) in seen
    count = len(seen)
    now["wall"] += POLL_S
    table.mark_bad("lamp1")  # the controller stopped answering: nothing to judge
    assert len(seen) == count


# ----- settings ------------------------------------------------------------------------


def test_settings_defaults_are_sensible() -> None:
    defaults = LampMonitorSettings()
    assert defaults.rated_power_w == 100.0
    assert 0 < defaults.tolerance < 0.5
    assert defaults.idle_power_w < defaults.rated_power_w * 0.1
    assert defaults.settle_s > 0
    assert defaults.persist_s >= 60


@pytest.mark.parametrize(
    "bad",
    [
        {"rated_power_w": "100"},  # strict: no strings for numbers
        {"rated_power_w": 0},
        {"tolerance": 1.5},
        {"idle_power_w": 90.0},  # a lamp at 100 % would count as dark
        {"severities": {"lamp_failure": "major"}},
        {"severities": {"cycling": "urgent"}},
        {"settle_s": -1},
        {"max_switches": 0},
        {"rated_power_w": math.nan},
        {"lighting": True},  # extra keys are errors
    ],
)
def test_settings_reject_what_cannot_work(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        LampMonitorSettings.model_validate(bad)


def test_settings_name_unknown_lamps() -> None:
    custom = LampMonitorSettings(lamp_rated_power_w={"lamp9": 60.0})
    assert custom.problems(["lamp1"]) == [
        "lamp_rated_power_w names 'lamp9', which is not a lamp of this pole"
    ]
    assert custom.problems(["lamp9"]) == []


# ----- accounting ----------------------------------------------------------------------


def test_energy_from_the_counter_with_a_reset(rig: Rig) -> None:
    counter = 1523.45
    for _ in range(360):  # one hour at 100 W, the counter ticking 0.01 kWh
        counter += 100 * POLL_S / 3_600_000
        rig.poll(100.0, energy=round(counter - 0.005, 2))
    assert rig.monitor.accounts()["lamp1"]["energy_kwh"] == pytest.approx(0.10, abs=0.011)
    assert rig.monitor.accounts()["lamp1"]["burning_hours"] == pytest.approx(1.0, abs=0.01)
    before = rig.monitor.accounts()["lamp1"]["energy_kwh"]
    with structlog.testing.capture_logs() as logs:
        rig.poll(100.0, energy=0.0)  # controller replaced / counter cleared
    assert [e["event"] for e in logs] == ["lamp_energy_counter_reset"]
    assert rig.monitor.accounts()["lamp1"]["energy_kwh"] == before
    counter = 0.0
    for _ in range(360):
        counter += 100 * POLL_S / 3_600_000
        rig.poll(100.0, energy=round(counter - 0.005, 2))
    assert rig.monitor.accounts()["lamp1"]["energy_kwh"] == pytest.approx(0.20, abs=0.02)


def test_a_counter_jump_the_lamp_cannot_have_drawn_is_ignored(rig: Rig) -> None:
    rig.poll(100.0, energy=10.00)
    rig.poll(100.0, energy=10.01)
    with structlog.testing.capture_logs() as logs:
        rig.poll(100.0, energy=2500.0)  # a garbled read, or a used controller fitted
    assert [e["event"] for e in logs] == ["lamp_energy_step_ignored"]
    rig.poll(100.0, energy=2500.01)  # counting goes on from the new base
    assert rig.monitor.accounts()["lamp1"]["energy_kwh"] == pytest.approx(0.02)


def test_energy_integrated_from_power_without_a_counter(rig: Rig) -> None:
    for _ in range(361):  # 360 intervals of 10 s: one hour at 100 W
        rig.poll(100.0)
    accounts = rig.monitor.accounts()["lamp1"]
    assert accounts["energy_kwh"] == pytest.approx(0.1)
    assert accounts["burning_hours"] == pytest.approx(1.0)
    rig.levels["lamp1"] = 0
    for _ in range(360):  # dark: standby power counts as energy, not as burning
        rig.poll(1.0)
    # Each reading holds until the next: the first dark interval is still the 100 W one.
    accounts = rig.monitor.accounts()["lamp1"]
    assert accounts["energy_kwh"] == pytest.approx((360 * 100 + 100 + 359 * 1) * POLL_S / 3.6e6)
    assert accounts["burning_hours"] == pytest.approx(1.0 + POLL_S / 3600)


def test_gaps_and_bad_readings_are_not_counted(rig: Rig) -> None:
    rig.poll(100.0)
    rig.poll(100.0, dt=3600.0)  # the controller was silent for an hour
    assert rig.monitor.accounts()["lamp1"] == {
        "energy_kwh": 0.0,
        "burning_hours": 0.0,
        "since": T0,
    }
    rig.poll(100.0, quality="bad")
    rig.poll(100.0)  # the chain starts again here
    rig.poll(100.0)
    assert rig.monitor.accounts()["lamp1"]["burning_hours"] == pytest.approx(POLL_S / 3600)
    rig.poll(100.0, dt=-600.0)  # the clock stepped back
    assert rig.monitor.accounts()["lamp1"]["burning_hours"] == pytest.approx(POLL_S / 3600)


def test_a_restart_continues_the_totals(tmp_path: Path) -> None:
    store = tmp_path / "lamp_accounts.json"
    first = Rig(store)
    counter = 100.0
    for _ in range(360):
        counter += 0.01 * (1 if _ % 36 == 0 else 0)
        first.poll(100.0, energy=round(counter, 2))
    first.monitor.close()
    totals = first.monitor.accounts()
    assert totals["lamp1"]["energy_kwh"] == pytest.approx(0.09)
    assert json.loads(store.read_text())["lamps"]["lamp1"]["counter_kwh"] == pytest.approx(100.1)

    second = Rig(store)  # e.g. after a power cut of 10 minutes, the lamp burning meanwhile
    second.now = first.now + 600
    assert second.monitor.accounts() == totals
    second.poll(100.0, energy=round(counter + 0.02, 2))  # the counter covers the downtime
    second.poll(100.0, energy=round(counter + 0.02, 2))
    accounts = second.monitor.accounts()["lamp1"]
    assert accounts["energy_kwh"] == pytest.approx(0.11)
    assert accounts["since"] == T0
    assert accounts["burning_hours"] == pytest.approx(
        totals["lamp1"]["burning_hours"] + POLL_S / 3600
    )


def test_writes_at_most_every_persist_s(rig: Rig) -> None:
    store = rig.store
    rig.poll(100.0)
    rig.poll(100.0)
    assert not store.exists()
    rig.hold(300, 100.0)
    assert store.exists()
    written = store.stat().st_mtime_ns, store.read_text()
    rig.hold(200, 100.0)
    assert store.read_text() == written[1]  # not again within persist_s
    rig.monitor.close()
    saved = json.loads(store.read_text())
    assert saved["version"] == 1
    assert saved["lamps"]["lamp1"]["burning_hours"] == pytest.approx(
        rig.monitor.accounts()["lamp1"]["burning_hours"]
    )
    assert sorted(p.name for p in store.parent.iterdir()) == [store.name]  # no temp file left


def test_a_failing_write_is_logged_once_and_retried(tmp_path: Path) -> None:
    rig = Rig(tmp_path / "missing-dir" / "acc.json")
    with structlog.testing.capture_logs() as logs:
        rig.hold(900, 100.0)
        assert rig.monitor.flush() is False
    assert [e["event"] for e in logs] == ["lamp_accounts_write_failed"]
    assert rig.monitor.write_failures >= 3
    (tmp_path / "missing-dir").mkdir()
    with structlog.testing.capture_logs() as logs:
        assert rig.monitor.flush() is True
    assert [e["event"] for e in logs] == ["lamp_accounts_write_recovered"]


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        '{"version": 99, "lamps": {}}',
        '["a list"]',
        '{"version": 1, "lamps": {"lamp1": {"since": 1, "energy_kwh": -4, "burning_hours": 0}}}',
    ],
)
def test_an_unusable_store_starts_from_zero(tmp_path: Path, content: str) -> None:
    store = tmp_path / "acc.json"
    store.write_text(content)
    with structlog.testing.capture_logs() as logs:
        rig = Rig(store)
    assert logs
    assert rig.monitor.accounts()["lamp1"] == {"energy_kwh": 0.0, "burning_hours": 0.0, "since": T0}


def test_accounts_of_lamps_no_longer_configured_are_kept(tmp_path: Path) -> None:
    store = tmp_path / "acc.json"
    both = Rig(store, lamps=("lamp1", "lamp2"))
    both.hold(60, 100.0)
    both.monitor.close()
    one = Rig(store, lamps=("lamp1",))
    assert set(one.monitor.accounts()) == {"lamp1"}
    one.hold(60, 100.0)
    one.monitor.close()
    assert set(json.loads(store.read_text())["lamps"]) == {"lamp1", "lamp2"}


# ----- properties ----------------------------------------------------------------------

POINTS = [
    *["active_power", "energy"] * 3,
    *["power_factor", "supply_voltage", "supply_loss", "lamp_on"],
]
values = st.one_of(
    st.floats(min_value=0, max_value=400),
    st.floats(min_value=-10, max_value=0),
    st.integers(min_value=0, max_value=3000),
    st.sampled_from([math.nan, math.inf, True, False, None]),
)
steps = st.lists(
    st.tuples(
        st.one_of(st.floats(min_value=0, max_value=200), st.floats(min_value=-60, max_value=0)),
        st.sampled_from(POINTS),
        values,
        st.sampled_from(["good", "good", "good", "bad", "stale", "uncertain"]),
        st.sampled_from([None, 0, 30, 100]),
        # energy: the counter steps 0-3 × 0.01 kWh, is reset to 0, or reads ``value``
        st.sampled_from(["step", "step", "reset", "value"]),
        st.integers(min_value=0, max_value=30),  # restart the monitor at this step? (0: yes)
    ),
    max_size=80,
)


def _valid(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) and value >= 0 else None


@settings(max_examples=200, deadline=None)
@given(ops=steps)
def test_totals_never_decrease_nor_exceed_the_inputs(ops: list[Any]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        store = Path(folder) / "acc.json"
        rig = Rig(store)
        counter = 0.0
        power_at: float | None = None
        power_w = 0.0
        counter_seen: float | None = None
        hours_bound = energy_bound_power = energy_bound_counter = 0.0
        previous = rig.monitor.accounts()["lamp1"]
        for dt, point, value, quality, level, counting, restart in ops:
            rig.now += dt
            rig.levels["lamp1"] = level
            if point == "energy" and counting == "step":
                counter += 0.01 * (int(abs(dt)) % 4)
                value = round(counter, 2)
            elif point == "energy" and counting == "reset":
                counter = value = 0.0
            if restart == 0:
                rig.monitor.close()
                rig.monitor = rig.start()
                assert rig.monitor.accounts()["lamp1"] == previous
            emitted = len(rig.emitted)
            rig.feed(point, value, quality)
            number = _valid(value) if quality == "good" else None
            if len(rig.emitted) > emitted:  # only a good power or PF reading says anything
                assert number is not None
                assert point in ("active_power", "power_factor")
            if point == "active_power":
                if number is not None and power_at is not None:
                    elapsed = max(0.0, rig.now - power_at)
                    hours_bound += elapsed / 3600
                    energy_bound_power += power_w * elapsed / 3_600_000
                if number is not None:
                    power_at, power_w = rig.now, number
            if point == "energy" and number is not None:
                if counter_seen is not None:
                    energy_bound_counter += max(0.0, number - counter_seen)
                counter_seen = number
            now = rig.monitor.accounts()["lamp1"]
            assert now["energy_kwh"] >= previous["energy_kwh"]
            assert now["burning_hours"] >= previous["burning_hours"]
            assert now["since"] == T0
            assert now["burning_hours"] <= hours_bound + 1e-6
            assert now["energy_kwh"] <= energy_bound_power + energy_bound_counter + 1e-6
            previous = now
        rig.monitor.close()
        assert Rig(store).monitor.accounts()["lamp1"] == previous
