"""Alarm lifecycle: debounce, hysteresis, latching, sensor loss, persistence and the outbox.

Time is a fake clock and the ``at`` of each reading; no test waits.
"""

from __future__ import annotations

import itertools
import json
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from helpers.clock import ManualClock
from smartpole.agent.config.alarms import AlarmDefinition, Condition
from smartpole.agent.control.alarms import AlarmError, AlarmEvent, AlarmManager, EventType
from smartpole.agent.core.outbox import Outbox, Priority

T0 = 1_700_000_000.0

LEAKAGE = AlarmDefinition(
    kind="leakage",
    severity="critical",
    raise_above=30.0,  # residual current, mA
    clear_below=10.0,
    debounce_s=2.0,
    latching=True,
    stale_after_s=60.0,
)
OVER_TEMPERATURE = AlarmDefinition(
    kind="over_temperature", severity="major", raise_above=70.0, clear_below=65.0, debounce_s=5.0
)
DOOR = AlarmDefinition(kind="door_open", severity="minor", raise_when=True, debounce_s=1.0)
SUPPLY = AlarmDefinition(
    kind="supply_voltage",
    severity="warning",
    raise_above=253.0,
    clear_below=250.0,
    raise_below=207.0,
    clear_above=210.0,
)
DEFINITIONS = [LEAKAGE, OVER_TEMPERATURE, DOOR, SUPPLY]


class FakeClock(ManualClock):
    def __init__(self, now: float = T0) -> None:
        super().__init__(now)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def outbox(tmp_path: Path, clock: FakeClock) -> Iterator[Outbox]:
    with Outbox(tmp_path, clock=clock) as box:
        yield box


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return tmp_path / "alarms.json"


@pytest.fixture
def manager(store: Path, outbox: Outbox, clock: FakeClock) -> AlarmManager:
    return AlarmManager(DEFINITIONS, store, outbox, clock)


def feed(
    manager: AlarmManager,
    source: str,
    kind: str,
    values: Sequence[float | bool],
    *,
    start: float = T0,
    step: float = 1.0,
    quality: str = "good",
) -> list[tuple[float, AlarmEvent]]:
    """Readings ``step`` seconds apart; returns (time, event) for every transition."""
    out = []
    for i, value in enumerate(values):
        at = start + i * step
        out += [(at - start, e) for e in manager.observe(source, kind, value, quality, at)]
    return out


def types(events: list[AlarmEvent]) -> list[str]:
    return [e.type.value for e in events]


# -- definitions -------------------------------------------------------------------------


def test_definition_evaluates_analog_digital_and_band() -> None:
    assert OVER_TEMPERATURE.evaluate(70.5) is Condition.PRESENT
    assert OVER_TEMPERATURE.evaluate(70.0) is Condition.BETWEEN  # raise needs *above*
    assert OVER_TEMPERATURE.evaluate(67) is Condition.BETWEEN
    assert OVER_TEMPERATURE.evaluate(64.9) is Condition.ABSENT
    assert OVER_TEMPERATURE.evaluate(True) is None  # a digital value for an analog alarm
    assert OVER_TEMPERATURE.evaluate(float("nan")) is None
    assert OVER_TEMPERATURE.evaluate(None) is None
    assert DOOR.evaluate(True) is Condition.PRESENT
    assert DOOR.evaluate(0) is Condition.ABSENT  # a coil or register read as 0/1
    assert DOOR.evaluate(2) is None
    assert [SUPPLY.evaluate(v) for v in (200, 208, 230, 251, 260)] == [
        Condition.PRESENT,
        Condition.BETWEEN,
        Condition.ABSENT,
        Condition.BETWEEN,
        Condition.PRESENT,
    ]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"raise_above": 70.0, "clear_below": 75.0}, "safe side"),
        ({"raise_below": 10.0, "clear_above": 5.0}, "safe side"),
        ({"raise_above": 70.0, "clear_above": 65.0}, "clear_above goes with raise_below"),
        ({"raise_below": 10.0, "clear_below": 15.0}, "clear_below goes with raise_above"),
        ({"raise_above": 1.0, "raise_when": True}, "cannot be combined"),
        ({}, "give raise_above"),
        ({"raise_above": 200.0, "raise_below": 210.0}, "must lie below"),
        (
            {
                "raise_above": 250.0,
                "clear_below": 220.0,
                "raise_below": 200.0,
                "clear_above": 230.0,
            },
            "must lie below",
        ),
        ({"raise_above": "70"}, "valid number"),  # strict: no strings for numbers
        ({"raise_when": 1}, "valid boolean"),
        ({"raise_above": float("inf")}, "finite"),
        ({"raise_above": 1.0, "debounce_s": -1.0}, "greater than or equal"),
        ({"raise_above": 1.0, "latched": True}, "Extra inputs"),
    ],
)
def test_definition_rejects(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        AlarmDefinition.model_validate({"kind": "x", "severity": "major", **fields})


def test_duplicate_kinds_are_refused(store: Path) -> None:
    with pytest.raises(AlarmError, match="twice"):
        AlarmManager([DOOR, DOOR], store, None)
    lost = AlarmDefinition(kind="leakage_sensor_lost", severity="major", raise_when=True)
    with pytest.raises(AlarmError, match="stale_after_s"):
        AlarmManager([LEAKAGE, lost], store, None)


# -- debounce and hysteresis -------------------------------------------------------------


def test_raise_waits_for_the_debounce(manager: AlarmManager) -> None:
    got = feed(manager, "cabinet", "over_temperature", [72, 73, 74, 75, 76, 77, 78, 79])
    assert [(t, e.type.value) for t, e in got] == [(5.0, "raised")]
    (alarm,) = manager.active()
    assert (alarm.alarm_id, alarm.value, alarm.raised_at) == (
        "cabinet/over_temperature",
        77,
        T0 + 5,
    )


def test_a_dip_restarts_the_raise_debounce(manager: AlarmManager) -> None:
    values = [72, 72, 72, 72, 69, 72, 72, 72, 72, 72, 72]  # 69: back in the band
    got = feed(manager, "cabinet", "over_temperature", values)
    assert [(t, e.type.value) for t, e in got] == [(10.0, "raised")]


def test_clear_waits_for_the_debounce_too(manager: AlarmManager) -> None:
    feed(manager, "cabinet", "over_temperature", [80] * 6)
    assert len(manager.active()) == 1
    values = [60, 60, 60, 60, 71, 60, 60, 60, 60, 60, 60]  # 71: the condition is back
    got = feed(manager, "cabinet", "over_temperature", values, start=T0 + 10)
    assert [(t, e.type.value) for t, e in got] == [(10.0, "cleared")]
    assert manager.active() == []


def test_hysteresis_band_does_not_toggle(manager: AlarmManager) -> None:
    oscillating = [66.0, 69.9, 65.1, 70.0, 66.5, 69.0] * 10
    assert feed(manager, "cabinet", "over_temperature", oscillating) == []  # never raised
    feed(manager, "cabinet", "over_temperature", [75] * 6, start=T0 + 100)
    assert len(manager.active()) == 1
    assert feed(manager, "cabinet", "over_temperature", oscillating, start=T0 + 200) == []
    assert len(manager.active()) == 1  # never cleared either


def test_digital_input_with_debounce(manager: AlarmManager) -> None:
    assert feed(manager, "cabinet", "door_open", [True, False, True, False]) == []  # bounce
    got = feed(manager, "cabinet", "door_open", [True, True, False, False], start=T0 + 10)
    assert [(t, e.type.value) for t, e in got] == [(1.0, "raised"), (3.0, "cleared")]


# -- latching and acknowledgement --------------------------------------------------------


def test_latching_alarm_needs_ack_and_condition_gone(manager: AlarmManager) -> None:
    got = feed(manager, "cabinet", "leakage", [45, 45, 45])
    assert types([e for _, e in got]) == ["raised"]
    assert feed(manager, "cabinet", "leakage", [2, 2, 2, 2], start=T0 + 10) == []
    (alarm,) = manager.active()
    assert alarm.latching
    assert not alarm.condition_present  # gone, but latched
    events = manager.acknowledge("cabinet/leakage", "mqtt:operator-7")
    assert types(events) == ["acknowledged", "cleared"]
    assert events[0].actor == "mqtt:operator-7"
    assert manager.active() == []


def test_latching_alarm_acknowledged_while_present_clears_when_gone(
    manager: AlarmManager,
) -> None:
    feed(manager, "cabinet", "leakage", [45, 45, 45])
    assert types(manager.acknowledge("cabinet/leakage", "cli:uid=0")) == ["acknowledged"]
    (alarm,) = manager.active()
    assert (alarm.acknowledged, alarm.acknowledged_by) == (True, "cli:uid=0")
    assert feed(manager, "cabinet", "leakage", [20, 20, 20], start=T0 + 10) == []  # band
    got = feed(manager, "cabinet", "leakage", [5, 5, 5], start=T0 + 20)
    assert [(t, e.type.value) for t, e in got] == [(2.0, "cleared")]


def test_acknowledging_twice_is_one_event_and_unknown_is_an_error(
    manager: AlarmManager,
) -> None:
    feed(manager, "cabinet", "door_open", [True, True])
    assert types(manager.acknowledge("cabinet/door_open", "a")) == ["acknowledged"]
    assert manager.acknowledge("cabinet/door_open", "b") == []
    with pytest.raises(AlarmError, match="no active alarm"):
        manager.acknowledge("cabinet/tilt", "a")
    feed(manager, "cabinet", "door_open", [False, False], start=T0 + 10)
    with pytest.raises(AlarmError, match="no active alarm"):
        manager.acknowledge("cabinet/door_open", "a")


def test_non_latching_alarm_clears_without_ack_and_ack_resets_per_activation(
    manager: AlarmManager,
) -> None:
    feed(manager, "cabinet", "door_open", [True, True])
    manager.acknowledge("cabinet/door_open", "a")
    feed(manager, "cabinet", "door_open", [False, False], start=T0 + 10)
    feed(manager, "cabinet", "door_open", [True, True], start=T0 + 20)
    (alarm,) = manager.active()
    assert not alarm.acknowledged  # a new activation needs its own acknowledgement


# -- quality -----------------------------------------------------------------------------


@pytest.mark.parametrize("quality", ["bad", "stale", "uncertain"])
def test_untrusted_quality_never_raises_or_clears(manager: AlarmManager, quality: str) -> None:
    # 100 s of an "alarming" leakage value from an untrusted sensor: no leakage alarm, only
    # the sensor-lost alarm once stale_after_s (60 s) passed without a good reading.
    got = feed(manager, "cabinet", "leakage", [500] * 100, quality=quality)
    assert [(t, e.kind) for t, e in got] == [(60.0, "leakage_sensor_lost")]
    assert feed(manager, "cabinet", "over_temperature", [99] * 100, quality=quality) == []
    assert feed(manager, "cabinet", "door_open", [True] * 100, quality=quality) == []
    assert [a.kind for a in manager.active()] == ["leakage_sensor_lost"]
    manager.acknowledge("cabinet/leakage_sensor_lost", "op")
    manager.observe("cabinet", "leakage", 0.0, "good", T0 + 150)  # sensor back: lost clears
    feed(manager, "cabinet", "door_open", [True, True], start=T0 + 200)
    assert (
        feed(manager, "cabinet", "door_open", [False] * 50, start=T0 + 300, quality=quality) == []
    )
    assert [a.kind for a in manager.active()] == ["door_open"]


def test_bad_reading_restarts_the_debounce(manager: AlarmManager) -> None:
    for i, quality in enumerate(["good", "good", "bad", "good", "good", "good"]):
        events = manager.observe("cabinet", "leakage", 45.0, quality, T0 + i)
        assert events == [] or (i == 5 and types(events) == ["raised"])
    assert len(manager.active()) == 1


def test_values_that_do_not_fit_are_ignored_and_logged_once(manager: AlarmManager) -> None:
    with structlog.testing.capture_logs() as logs:
        for i in range(5):
            assert manager.observe("cabinet", "leakage", float("nan"), "good", T0 + i) == []
            assert manager.observe("cabinet", "door_open", 7, "good", T0 + i) == []
            assert manager.observe("cabinet", "tilt", True, "good", T0 + i) == []
    assert sorted(e["event"] for e in logs) == [
        "alarm_kind_unknown",
        "alarm_reading_invalid",
        "alarm_reading_invalid",
    ]


# -- sensor loss -------------------------------------------------------------------------


def test_stale_sensor_raises_sensor_lost_once_and_a_good_reading_clears_it(
    manager: AlarmManager, clock: FakeClock
) -> None:
    assert manager.observe("cabinet", "leakage", 1.0, "good", T0) == []
    clock.now = T0 + 59
    assert manager.tick() == []
    clock.now = T0 + 60
    (lost,) = manager.tick()
    assert (lost.type, lost.alarm_id, lost.severity) == (
        EventType.RAISED,
        "cabinet/leakage_sensor_lost",
        "major",
    )
    clock.now = T0 + 120
    assert manager.tick() == []
    assert manager.observe("cabinet", "leakage", 99.0, "bad", T0 + 121) == []  # still lost
    assert [a.kind for a in manager.active()] == ["leakage_sensor_lost"]  # leakage not raised
    (cleared,) = manager.observe("cabinet", "leakage", 1.0, "good", T0 + 122)
    assert (cleared.type, cleared.alarm_id) == (EventType.CLEARED, "cabinet/leakage_sensor_lost")
    assert manager.active() == []


def test_bad_readings_alone_also_reveal_a_lost_sensor(manager: AlarmManager) -> None:
    manager.observe("cabinet", "leakage", 1.0, "good", T0)
    events = feed(manager, "cabinet", "leakage", [0.0] * 70, start=T0 + 1, quality="bad")
    assert [(t, e.kind) for t, e in events] == [(59.0, "leakage_sensor_lost")]


def test_a_watched_sensor_that_never_reports_is_lost(
    manager: AlarmManager, clock: FakeClock
) -> None:
    manager.watch("cabinet", "leakage")
    clock.now = T0 + 60
    assert [e.alarm_id for e in manager.tick()] == ["cabinet/leakage_sensor_lost"]
    with pytest.raises(AlarmError):
        manager.watch("cabinet", "nonexistent")


def test_a_sensor_lost_alarm_does_not_touch_the_main_alarm(manager: AlarmManager) -> None:
    feed(manager, "cabinet", "leakage", [45, 45, 45])
    events = feed(manager, "cabinet", "leakage", [0.0] * 70, start=T0 + 3, quality="stale")
    assert [e.kind for _, e in events] == ["leakage_sensor_lost"]
    assert sorted(a.kind for a in manager.active()) == ["leakage", "leakage_sensor_lost"]


# -- persistence -------------------------------------------------------------------------


def test_active_alarms_survive_a_restart_without_a_second_raise(
    store: Path, outbox: Outbox, clock: FakeClock
) -> None:
    first = AlarmManager(DEFINITIONS, store, outbox, clock)
    feed(first, "cabinet", "leakage", [45, 45, 45])
    feed(first, "cabinet", "door_open", [True, True])
    before = first.active()

    second = AlarmManager(DEFINITIONS, store, outbox, clock)
    assert second.active() == before
    assert feed(second, "cabinet", "leakage", [50] * 10, start=T0 + 10) == []
    assert feed(second, "cabinet", "door_open", [True] * 10, start=T0 + 10) == []
    assert [e.type.value for e in second.history()] == ["raised", "raised"]
    # ... and clearing after the restart works as before.
    assert feed(second, "cabinet", "leakage", [1] * 3, start=T0 + 30) == []  # latched
    assert types(second.acknowledge("cabinet/leakage", "op")) == ["acknowledged", "cleared"]
    got = feed(second, "cabinet", "door_open", [False] * 2, start=T0 + 30)
    assert [(t, e.type.value) for t, e in got] == [(1.0, "cleared")]
    assert second.active() == []
    assert AlarmManager(DEFINITIONS, store, outbox, clock).active() == []


def test_latch_and_acknowledgement_survive_a_restart(
    store: Path, outbox: Outbox, clock: FakeClock
) -> None:
    first = AlarmManager(DEFINITIONS, store, outbox, clock)
    feed(first, "cabinet", "leakage", [45, 45, 45])
    feed(first, "cabinet", "leakage", [1, 1, 1], start=T0 + 10)  # condition gone, latched
    second = AlarmManager(DEFINITIONS, store, outbox, clock)
    (alarm,) = second.active()
    assert not alarm.condition_present
    assert types(second.acknowledge("cabinet/leakage", "op")) == ["acknowledged", "cleared"]


def test_watched_sensors_survive_a_restart_with_a_fresh_grace_period(
    store: Path, outbox: Outbox, clock: FakeClock
) -> None:
    AlarmManager(DEFINITIONS, store, outbox, clock).observe("pole", "leakage", 1.0, "good", T0)
    clock.now = T0 + 1000  # down for a while
    second = AlarmManager(DEFINITIONS, store, outbox, clock)
    assert second.tick() == []  # the sensor gets stale_after_s to report after a start
    clock.now += 60
    assert [e.alarm_id for e in second.tick()] == ["pole/leakage_sensor_lost"]


def test_an_alarm_whose_definition_was_removed_is_cleared_by_acknowledging(
    store: Path, clock: FakeClock
) -> None:
    feed(AlarmManager(DEFINITIONS, store, None, clock), "cabinet", "door_open", [True, True])
    without_door = AlarmManager([LEAKAGE], store, None, clock)
    assert [a.alarm_id for a in without_door.active()] == ["cabinet/door_open"]
    assert types(without_door.acknowledge("cabinet/door_open", "op")) == [
        "acknowledged",
        "cleared",
    ]


def test_an_unreadable_store_starts_empty(store: Path, clock: FakeClock) -> None:
    store.write_text("{not json")
    with structlog.testing.capture_logs() as logs:
        manager = AlarmManager(DEFINITIONS, store, None, clock)
    assert manager.active() == []
    assert [e["event"] for e in logs] == ["alarms_store_damaged"]
    assert logs[0]["lost"] == "unknown"  # no trace of an active alarm: nobody can say
    damage = manager.store_damage
    assert damage is not None
    assert damage.moved_to is not None
    assert Path(damage.moved_to).read_text() == "{not json"  # kept aside as found
    feed(manager, "cabinet", "door_open", [True, True])
    assert json.loads(store.read_text())["active"][0]["alarm_id"] == "cabinet/door_open"


def test_a_truncated_store_is_moved_aside_with_an_estimate_of_its_active_alarms(
    store: Path, clock: FakeClock
) -> None:
    manager = AlarmManager(DEFINITIONS, store, None, clock)
    feed(manager, "cabinet", "door_open", [True, True])
    feed(manager, "cabinet2", "door_open", [True, True])
    assert len(manager.active()) == 2
    text = store.read_text()
    store.write_text(text[: len(text) - 40])  # a torn write: the end is gone
    with structlog.testing.capture_logs() as logs:
        again = AlarmManager(DEFINITIONS, store, None, clock)
    assert again.active() == []
    (event,) = [e for e in logs if e["event"] == "alarms_store_damaged"]
    assert (event["lost"], event["exact"]) == (2, False)


def test_a_failing_store_is_logged_once_and_never_stops_alarms(
    tmp_path: Path, clock: FakeClock
) -> None:
    store = tmp_path / "missing-dir" / "alarms.json"
    with structlog.testing.capture_logs() as logs:
        manager = AlarmManager(DEFINITIONS, store, None, clock)
        assert types([e for _, e in feed(manager, "c", "door_open", [True, True])]) == ["raised"]
        assert types(
            [e for _, e in feed(manager, "c", "door_open", [False] * 2, start=T0 + 5)]
        ) == ["cleared"]
        manager.tick()
        store.parent.mkdir()
        manager.tick()  # retried: the directory is back
    assert [e["event"] for e in logs if e["event"].startswith("alarm_store")] == [
        "alarm_store_write_failed",
        "alarm_store_write_recovered",
    ]
    assert manager.store_write_failures == 3
    assert store.exists()


# -- the outbox --------------------------------------------------------------------------


def test_every_transition_goes_to_the_outbox_in_order(
    manager: AlarmManager, outbox: Outbox, clock: FakeClock
) -> None:
    events: list[AlarmEvent] = []
    events += [e for _, e in feed(manager, "cabinet", "leakage", [45, 45, 45])]
    events += [e for _, e in feed(manager, "cabinet", "door_open", [True, True], start=T0 + 5)]
    clock.now = T0 + 10
    events += manager.acknowledge("cabinet/door_open", "op")
    events += [e for _, e in feed(manager, "cabinet", "door_open", [False] * 2, start=T0 + 20)]
    events += [e for _, e in feed(manager, "cabinet", "leakage", [1] * 3, start=T0 + 30)]
    events += manager.acknowledge("cabinet/leakage", "op")
    assert [(e.alarm_id, e.type.value) for e in events] == [
        ("cabinet/leakage", "raised"),
        ("cabinet/door_open", "raised"),
        ("cabinet/door_open", "acknowledged"),
        ("cabinet/door_open", "cleared"),
        ("cabinet/leakage", "acknowledged"),
        ("cabinet/leakage", "cleared"),
    ]
    records = outbox.pending("alarms")
    assert [r.seq for r in records] == [e.outbox_seq for e in events] == [1, 2, 3, 4, 5, 6]
    assert all(r.priority == Priority.HIGH for r in records)
    for record, event in zip(records, events, strict=True):
        expected = event.to_json()
        del expected["outbox_seq"]
        assert record.payload == expected
    assert manager.history() == events


def test_an_outbox_failure_does_not_stop_the_alarm(
    store: Path, outbox: Outbox, clock: FakeClock
) -> None:
    manager = AlarmManager(DEFINITIONS, store, outbox, clock)
    outbox.close()  # as good as a dead disk
    assert manager.observe("cabinet", "door_open", True, "good", T0) == []
    (raised,) = manager.observe("cabinet", "door_open", True, "good", T0 + 1)
    assert raised.type is EventType.RAISED
    assert raised.outbox_seq is None
    assert manager.outbox_failures == 1
    assert len(manager.active()) == 1


# -- properties --------------------------------------------------------------------------

PROPERTY_DEFINITION = {
    "kind": "leakage",
    "severity": "critical",
    "raise_above": 30.0,
    "clear_below": 10.0,
    "debounce_s": 2.0,
    "stale_after_s": 20.0,
}
# Levels on both sides of, in between and exactly at the thresholds, held for a few readings
# so that debounces complete, mixed with arbitrary values, untrusted quality, acks, ticks
# (sensor loss) and restarts.
levels = st.sampled_from([-5.0, 0.0, 9.9, 10.0, 20.0, 30.0, 30.1, 45.0, float("nan")])
steps = st.lists(
    st.tuples(
        st.one_of(levels, st.floats(-5, 60)),  # value
        st.sampled_from([0.0, 0.5, 1.0, 1.0, 2.0, 5.0, 30.0]),  # dt between readings
        st.sampled_from(["good", "good", "good", "good", "bad", "stale"]),
        st.sampled_from(["observe"] * 6 + ["ack", "tick", "restart"]),
        st.integers(1, 4),  # readings in a row
    ),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(latching=st.booleans(), ops=steps)
def test_any_reading_sequence_keeps_alarms_consistent(
    latching: bool, ops: list[tuple[float, float, str, str, int]]
) -> None:
    definition = AlarmDefinition.model_validate({**PROPERTY_DEFINITION, "latching": latching})
    with tempfile.TemporaryDirectory() as folder:
        clock = FakeClock()
        store = Path(folder) / "alarms.json"
        with Outbox(Path(folder), clock=clock) as outbox:
            manager = AlarmManager([definition], store, outbox, clock)
            events: list[AlarmEvent] = []
            for value, dt, quality, action, repeat in ops:
                clock.now += dt
                if action == "observe":
                    for _ in range(repeat):
                        events += manager.observe("pole", "leakage", value, quality, clock.now)
                        clock.now += dt
                elif action == "tick":
                    events += manager.tick()
                elif action == "restart":
                    manager = AlarmManager([definition], store, outbox, clock)
                else:
                    for alarm in manager.active():
                        events += manager.acknowledge(alarm.alarm_id, "op")

            by_alarm: dict[str, list[EventType]] = {}
            for event in events:
                by_alarm.setdefault(event.alarm_id, []).append(event.type)
            for sequence in by_alarm.values():
                assert sequence[0] is EventType.RAISED
                for earlier, later in itertools.pairwise(sequence):
                    assert earlier is not later  # de-duplicated: never the same twice
                    if later is EventType.RAISED:
                        assert earlier is EventType.CLEARED
            expected_active = {
                alarm_id
                for alarm_id, sequence in by_alarm.items()
                if [t for t in sequence if t is not EventType.ACKNOWLEDGED][-1] is EventType.RAISED
            }
            assert {a.alarm_id for a in manager.active()} == expected_active
            restarted = AlarmManager([definition], store, outbox, clock)
            assert restarted.active() == manager.active()
            records = outbox.pending("alarms", limit=10_000)
            assert [r.payload["type"] for r in records] == [e.type.value for e in events]
            assert [r.seq for r in records] == [e.outbox_seq for e in events]


def test_malformed_store_entries_are_skipped_not_half_restored(tmp_path: Path) -> None:
    import json as _json

    store = tmp_path / "alarms.json"
    good = AlarmManager([LEAKAGE], store, None, clock=FakeClock(103.0))
    good.observe("cabinet.leakage", "leakage", 50.0, "good", 100.0)
    good.observe("cabinet.leakage", "leakage", 50.0, "good", 103.0)  # past the debounce
    saved = _json.loads(store.read_text())
    broken = dict(saved["active"][0])
    del broken["severity"]
    saved["active"].append({**broken, "source": "other.leakage"})
    saved["history"].append([1, 2])
    store.write_text(_json.dumps(saved))
    again = AlarmManager([LEAKAGE], store, None, clock=FakeClock(200.0))
    assert [alarm.source for alarm in again.active()] == ["cabinet.leakage"]
    assert len(again.history(50)) == len(good.history(50))
