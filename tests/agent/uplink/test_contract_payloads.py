"""What the pole's code builds, checked against the published schemas with ``jsonschema``.

Most payloads are plain dicts, not models, so nothing but these tests ties them to
schemas/uplink/. Hypothesis drives the real builders (the telemetry reporter over a point
table, the alarm manager, the MCU event recorder, the clock-step handler, the outbox's
reports, the uplink's birth and last will) and each record goes through the uplink's own
envelope code into a fake MQTT client; the schema of the topic the docs' table names must
accept every message. The other direction: shapes the code never sends (a field missing,
unknown or of the wrong type) are rejected. Camera payloads: ``test_contract_camera.py``;
command requests: ``test_contract_requests.py``.
"""

from __future__ import annotations

import asyncio
import json
import math
import tempfile
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from helpers.clock import ManualClock
from helpers.contract import SCHEMAS, errors, topic_of
from helpers.payloads import (
    EPOCH,
    FINITE,
    KINDS,
    NAMES,
    POLE,
    TIMES,
    Capture,
    check_all,
    envelope,
    make_uplink,
    published,
    rejects,
)
from smartpole.agent.buses.mcu.event_marks import EventMarks
from smartpole.agent.buses.mcu.events import EventRecorder
from smartpole.agent.config.alarms import AlarmDefinition
from smartpole.agent.config.uplink import TelemetryConfig
from smartpole.agent.control.alarms import AlarmManager
from smartpole.agent.control.clock_watch import ClockStepHandler
from smartpole.agent.core.clock import ClockStepWatch
from smartpole.agent.core.points import PointTable, Quality
from smartpole.agent.core.quarantine import Damage
from smartpole.agent.uplink.telemetry import TelemetryReporter
from smartpole.drivers.mcu.codes import EventKind
from smartpole.drivers.mcu.results import McuEvent

# -- telemetry ---------------------------------------------------------------------------

VALUES = (
    st.floats(allow_nan=True, allow_infinity=True)
    | st.integers(-(2**63), 2**63)
    | st.booleans()
    | st.text(max_size=12)
)
# Every quality a reading can have: ``unknown`` is the quality of no reading (a point never
# read), which the table never hands to a listener, so the uplink never sends it.
READ_QUALITIES = [q for q in Quality if q is not Quality.UNKNOWN]
READINGS = st.lists(
    st.tuples(NAMES, VALUES, st.sampled_from(READ_QUALITIES)), min_size=1, max_size=6
)
BLOCKS = st.lists(st.tuples(NAMES, READINGS, TIMES), min_size=1, max_size=5)


@settings(max_examples=60, deadline=None)
@given(blocks=BLOCKS)
def test_telemetry_changes_and_integrity_reports_validate(
    blocks: list[tuple[str, list[tuple[str, Any, Quality]], float]],
) -> None:
    now = [0.0]
    table = PointTable(wall=lambda: now[0])
    capture = Capture()
    reporter = TelemetryReporter(TelemetryConfig(), table, capture, meta_hash="0123456789abcdef")  # type: ignore[arg-type]
    reporter.start()
    for device, readings, at in blocks:
        now[0] = at
        unique = dict((point, (value, quality)) for point, value, quality in readings)
        for point in unique:
            table.register(device, point, "", 10.0)
        table.update_many(device, [(p, v, q) for p, (v, q) in unique.items()])
    reporter.flush()
    reporter.integrity()
    assert check_all(capture) == 2


def test_telemetry_schema_rejects_what_the_reporter_never_sends() -> None:
    good = {
        "pole": POLE,
        "epoch": EPOCH,
        "stream": "telemetry",
        "seq": 1,
        "ts": 1.0,
        "data": {
            "kind": "change",
            "blocks": [{"device": "d", "ts": 1.0, "values": {"p": 1}}],
            "meta": "0123456789abcdef",
        },
    }
    schema = "telemetry.schema.json"
    assert not errors(schema, good)
    block = good["data"]["blocks"][0]  # type: ignore[index]
    meta = "0123456789abcdef"
    for data in (
        {"kind": "delta", "blocks": [], "meta": meta},
        {"kind": "change", "meta": meta},
        {"kind": "change", "blocks": [block]},
        {"kind": "change", "blocks": [block], "meta": "not-a-hash"},
        {"kind": "change", "blocks": [], "extra": 1, "meta": meta},
        {"kind": "change", "blocks": [{**block, "values": {}}], "meta": meta},
        {"kind": "change", "blocks": [{**block, "quality": {"p": "good"}}], "meta": meta},
        {"kind": "change", "blocks": [{**block, "values": {"p": [1]}}], "meta": meta},
    ):
        assert rejects(schema, {**good, "data": data}), data


# -- alarms ------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    source=NAMES,
    kind=KINDS,
    severity=st.sampled_from(["critical", "major", "minor", "warning"]),
    readings=st.lists(FINITE, min_size=1, max_size=8),
    actor=NAMES,
    quiet_s=st.floats(0, 100),
)
def test_alarm_transitions_validate(
    source: str, kind: str, severity: str, readings: list[float], actor: str, quiet_s: float
) -> None:
    clock = ManualClock()
    definition = AlarmDefinition.model_validate(
        {
            "kind": kind,
            "severity": severity,
            "raise_above": 10.0,
            "clear_below": 5.0,
            "latching": True,
            "stale_after_s": 30.0,
        }
    )
    capture = Capture()
    with tempfile.TemporaryDirectory() as folder:
        manager = AlarmManager([definition], Path(folder) / "alarms.json", capture, clock)  # type: ignore[arg-type]
        for value in readings:
            clock.advance(1.0)
            manager.observe(source, kind, value, "good", clock.time())
        for alarm in manager.active():
            manager.acknowledge(alarm.alarm_id, actor)
        clock.advance(quiet_s)
        manager.tick()
        manager.observe(source, kind, 0.0, "good", clock.time())
    check_all(capture)


def test_the_alarm_schema_rejects_an_unknown_type_or_severity_or_field() -> None:
    data = {
        "type": "raised",
        "alarm_id": "m/leakage",
        "source": "m",
        "kind": "leakage",
        "severity": "critical",
        "at": 1.0,
        "value": 1.0,
        "actor": None,
        "reason": None,
    }
    good = {"pole": POLE, "epoch": EPOCH, "stream": "alarms", "seq": 1, "ts": 1.0, "data": data}
    assert not errors("alarm.schema.json", good)
    for change in ({"type": "reset"}, {"severity": "fatal"}, {"colour": "red"}, {"at": "now"}):
        assert rejects("alarm.schema.json", {**good, "data": {**data, **change}}), change
    assert rejects(
        "alarm.schema.json", {**good, "data": {k: v for k, v in data.items() if k != "actor"}}
    )


# -- events ------------------------------------------------------------------------------

KNOWN = [kind.name.lower() for kind in EventKind]
U32 = st.integers(0, 2**32 - 1)


@settings(max_examples=80, deadline=None)
@given(
    boot=U32,
    event_id=st.integers(1, 2**32 - 1),
    kind=st.sampled_from(list(EventKind)) | st.integers(0, 255),
    value=st.integers(-(2**31), 2**32 - 1),
    uptime=U32,
    unix_time=st.none() | st.integers(1, 2**32 - 1),  # the decoder makes 0 None
)
def test_mcu_events_validate(
    boot: int, event_id: int, kind: EventKind | int, value: int, uptime: int, unix_time: int | None
) -> None:
    assume(not isinstance(kind, int) or isinstance(kind, EventKind) or kind not in set(EventKind))
    capture = Capture()
    record = EventRecorder(capture, EventMarks(None), "rs485-mcu", "mcu")  # type: ignore[arg-type]
    record(McuEvent(boot, event_id, kind, value, uptime, unix_time, pushed=True))
    assert check_all(capture) == 1


def test_the_event_schema_lists_the_mcu_kinds_of_the_code() -> None:
    schema = json.loads((SCHEMAS / "event.schema.json").read_text())
    assert schema["$defs"]["mcu"]["properties"]["kind"]["anyOf"][0]["enum"] == KNOWN


@settings(max_examples=30, deadline=None)
@given(step=st.floats(-1e7, 1e7).filter(lambda s: abs(s) > 61), threshold=st.floats(1, 60))
def test_clock_step_events_validate(step: float, threshold: float) -> None:
    clock = ManualClock()
    watch = ClockStepWatch(clock, threshold_s=threshold)  # type: ignore[arg-type]
    capture = Capture()
    handler = ClockStepHandler(watch, capture, None)  # type: ignore[arg-type]
    asyncio.run(handler.check())
    clock.step(step)
    assert asyncio.run(handler.check()) is not None
    assert check_all(capture) == 1


# -- the outbox's own reports ------------------------------------------------------------

COUNTS = st.dictionaries(NAMES, st.dictionaries(NAMES, st.integers(0, 10**9)), max_size=3)


@settings(max_examples=40, deadline=None)
@given(
    evicted=COUNTS,
    totals=COUNTS,
    store=st.sampled_from(["outbox", "points", "alarms", "audit"]),
    lost=st.none() | st.integers(0, 10**9),
    moved=st.none() | st.text(max_size=30),
    exact=st.booleans(),
)
def test_outbox_reports_validate(
    evicted: dict[str, Any],
    totals: dict[str, Any],
    store: str,
    lost: int | None,
    moved: str | None,
    exact: bool,
) -> None:
    capture = Capture()
    capture.append(
        "outbox", {"kind": "evictions", "evicted": evicted, "totals": totals}, priority=2
    )  # the payload outbox_bounds.py builds
    damage = Damage(store, "/state/x", moved, "reason", lost, exact, recovered=3, at=1.0)
    capture.append("outbox", damage.to_json(), priority=2)
    assert check_all(capture) == 2


# -- birth, will, shutdown ---------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(pole=NAMES, protocol=st.sampled_from(["5", "3.1.1"]))
def test_birth_and_last_will_validate(pole: str, protocol: str) -> None:
    uplink = make_uplink(pole=pole, protocol=protocol)
    topic = f"smartpole/v1/{pole}/state"
    schema = topic_of(topic, pole).schema

    async def will_of_a_new_connection() -> bytes:
        return bytes(uplink._client()._client.will_payload or b"")

    will = json.loads(asyncio.run(will_of_a_new_connection()))
    birth = json.loads(uplink._birth())  # the birth of the connection that set that will
    assert birth["session"] == will["session"]
    assert not errors(schema, birth), birth
    assert not errors(schema, will), will
    assert (birth["state"], will["state"], will["reason"]) == (
        "online",
        "offline",
        "connection lost",
    )
    assert rejects(schema, {**birth, "reason": "shutdown"})
    assert rejects(schema, {**will, "epoch": EPOCH})
    assert rejects(schema, {k: v for k, v in birth.items() if k != "epoch"})


def test_every_schema_is_a_valid_draft_2020_12_schema() -> None:
    for path in SCHEMAS.glob("*.schema.json"):
        jsonschema.Draft202012Validator.check_schema(json.loads(path.read_text()))


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_a_value_that_is_not_a_number_goes_up_as_null(value: float) -> None:
    table = PointTable(wall=lambda: 5.0)
    capture = Capture()
    reporter = TelemetryReporter(TelemetryConfig(), table, capture, meta_hash="0123456789abcdef")  # type: ignore[arg-type]
    reporter.start()
    table.register("meter", "p", "", 10.0)
    table.update("meter", "p", value, Quality.GOOD)
    reporter.flush()
    ((_, message),) = published(capture)
    assert message["data"]["blocks"][0]["values"] == {"p": None}
    assert message["data"]["blocks"][0]["quality"] == {"p": "bad"}


MCU = {"source": "mcu", "device": "mcu", "boot_id": 1, "id": 2, "kind": "boot", "value": 0,
       "mcu_uptime_ms": 5, "mcu_time": None}  # fmt: skip
CLOCK = {"source": "clock", "kind": "wall_clock_step", "step_s": 100.0, "wall_before": 1.0,
         "wall_after": 101.0, "threshold_s": 60.0}  # fmt: skip
ANSWER = {"id": "c-1", "command": "relay", "status": "ok", "reason": "ok", "error": None,
          "result": True}  # fmt: skip
EVICTIONS = {"kind": "evictions", "evicted": {"telemetry": {"size": 1}}, "totals": {}}


@pytest.mark.parametrize(
    ("schema", "stream", "good", "wrong"),
    [
        ("event.schema.json", "events", MCU, {**MCU, "kind": "door_ajar"}),
        ("event.schema.json", "events", MCU, {k: v for k, v in MCU.items() if k != "boot_id"}),
        ("event.schema.json", "events", MCU, {**MCU, "source": "camera"}),
        ("event.schema.json", "events", CLOCK, {**CLOCK, "step_s": "100"}),
        ("event.schema.json", "events", CLOCK, {**CLOCK, "extra": 1}),
        ("outbox.schema.json", "outbox", EVICTIONS, {**EVICTIONS, "kind": "eviction"}),
        ("outbox.schema.json", "outbox", EVICTIONS, {**EVICTIONS, "evicted": {"t": {"s": -1}}}),
        ("command-result.schema.json", "cmd_result", ANSWER, {**ANSWER, "status": "maybe"}),
        ("command-result.schema.json", "cmd_result", ANSWER, {**ANSWER, "ok": True}),
        ("command-result.schema.json", "cmd_result", ANSWER,
         {k: v for k, v in ANSWER.items() if k != "error"}),
        ("command-result.schema.json", "cmd_result", ANSWER, {**ANSWER, "id": "x" * 65}),
        ("command-result.schema.json", "cmd_result", ANSWER,
         {**ANSWER, "first": {"status": "ok", "reason": "ok", "error": None}}),
    ],
)  # fmt: skip
def test_each_schema_rejects_a_shape_the_code_never_sends(
    schema: str, stream: str, good: dict[str, Any], wrong: dict[str, Any]
) -> None:
    assert not errors(schema, envelope(stream, good))
    assert rejects(schema, envelope(stream, wrong))
    assert rejects(schema, {**envelope(stream, good), "stream": "telemetry"})
