"""MCU events go to the outbox exactly once, across restarts: marked only once durable.

Real outbox files and real marks files in a temporary state directory; the events are the
driver's ``McuEvent`` as the tracker hands them on."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers.paths import REPO
from smartpole.agent.buses.mcu.event_marks import FILE_NAME, MAX_ABOVE, BootMarks, EventMarks
from smartpole.agent.buses.mcu.events import EventRecorder, event_payload
from smartpole.agent.core.outbox import FILE_NAME as OUTBOX_FILE
from smartpole.agent.core.outbox import Outbox
from smartpole.drivers.mcu.codes import EventKind
from smartpole.drivers.mcu.results import McuEvent

EVENT_SCHEMA = json.loads((REPO / "schemas" / "uplink" / "event.schema.json").read_text())


def event(
    event_id: int, boot_id: int = 0xBEEF, kind: EventKind | int = EventKind.DOOR_OPEN
) -> McuEvent:
    return McuEvent(boot_id, event_id, kind, 0, 1000 * event_id, None, pushed=True)


def queued(outbox: Outbox) -> list[tuple[int, int]]:
    return [(r.payload["boot_id"], r.payload["id"]) for r in outbox.pending("events", 1000)]


def test_an_event_is_marked_after_its_durable_append_and_survives_a_restart(
    tmp_path: Path,
) -> None:
    with Outbox(tmp_path, report_interval_s=None) as outbox:
        record = EventRecorder(outbox, EventMarks(tmp_path), "cabinet-mcu", "mcu")
        record(event(1, kind=EventKind.BOOT))
        record(event(2))
        assert queued(outbox) == [(0xBEEF, 1), (0xBEEF, 2)]
    saved = json.loads((tmp_path / FILE_NAME).read_text())
    assert saved["buses"]["cabinet-mcu"] == {"boot_id": 0xBEEF, "cursor": 2, "above": []}
    # The next life: the bus task resumes from the marks, and a replay is refused anyway.
    marks = EventMarks(tmp_path)
    assert marks.resume("cabinet-mcu")(0xBEEF) == (2, frozenset())
    assert marks.resume("cabinet-mcu")(0xCAFE) == (0, ())  # another boot: from the start
    assert marks.resume("other-bus")(0xBEEF) == (0, ())
    with Outbox(tmp_path, report_interval_s=None) as outbox:
        record = EventRecorder(outbox, marks, "cabinet-mcu", "mcu")
        record(event(2))
        record(event(3))
        assert queued(outbox) == [(0xBEEF, 1), (0xBEEF, 2), (0xBEEF, 3)]
        assert record.skipped == 1


def test_the_payload_carries_its_identity_and_fits_the_schema() -> None:
    payload = event_payload(event(4, kind=EventKind.BOOT), "mcu")
    assert (payload["device"], payload["boot_id"], payload["id"], payload["kind"]) == (
        "mcu", 0xBEEF, 4, "boot",
    )  # fmt: skip
    envelope = {"pole": "p1", "epoch": "0123456789abcdef", "stream": "events", "seq": 1,
                "ts": 1.0, "data": payload}  # fmt: skip
    jsonschema.validate(envelope, EVENT_SCHEMA, format_checker=jsonschema.FormatChecker())
    envelope["data"] = event_payload(event(5, kind=99), "mcu")  # a kind this host does not know
    jsonschema.validate(envelope, EVENT_SCHEMA)
    for broken in ({"id": 0}, {"boot_id": -1}, {"device": 3}, {"extra": 1}):
        envelope["data"] = {**payload, **broken}
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(envelope, EVENT_SCHEMA)
    del payload["boot_id"]
    envelope["data"] = payload
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(envelope, EVENT_SCHEMA)


def test_an_event_held_in_memory_is_not_marked_until_the_file_has_it(tmp_path: Path) -> None:
    (tmp_path / OUTBOX_FILE).mkdir()  # the outbox file cannot be opened
    ticks = [0.0]
    marks = EventMarks(tmp_path)
    with Outbox(tmp_path, monotonic=lambda: ticks[0], report_interval_s=None) as outbox:
        record = EventRecorder(outbox, marks, "cabinet-mcu", "mcu")
        record(event(1))
        assert outbox.held == 1
        assert not marks.holds("cabinet-mcu", 0xBEEF, 1)
        assert not (tmp_path / FILE_NAME).exists()  # a daemon stopped now gets it again
        record.settle()  # still failing: nothing to mark
        assert not marks.holds("cabinet-mcu", 0xBEEF, 1)
        (tmp_path / OUTBOX_FILE).rmdir()
        ticks[0] += 10.0
        assert outbox.retry()
        record.settle()  # the composition root calls it when the file works again
        assert marks.holds("cabinet-mcu", 0xBEEF, 1)
        assert queued(outbox) == [(0xBEEF, 1)]
    assert EventMarks(tmp_path).holds("cabinet-mcu", 0xBEEF, 1)


def test_a_later_durable_append_marks_the_events_held_before_it(tmp_path: Path) -> None:
    (tmp_path / OUTBOX_FILE).mkdir()
    ticks = [0.0]
    marks = EventMarks(tmp_path)
    with Outbox(tmp_path, monotonic=lambda: ticks[0], report_interval_s=None) as outbox:
        record = EventRecorder(outbox, marks, "cabinet-mcu", "mcu")
        record(event(1))
        (tmp_path / OUTBOX_FILE).rmdir()
        ticks[0] += 10.0
        record(event(2))  # the append writes the held record first, then this one
        assert queued(outbox) == [(0xBEEF, 1), (0xBEEF, 2)]
        assert marks.resume("cabinet-mcu")(0xBEEF) == (2, frozenset())


def test_a_new_boot_replaces_the_marks_of_the_old_one() -> None:
    marks = EventMarks(None)
    marks.take("bus", 1, [1, 2, 3])
    marks.take("bus", 2, [1])
    assert not marks.holds("bus", 1, 1)
    assert marks.holds("bus", 2, 1)


def test_ids_apart_from_the_cursor_are_kept_and_bounded() -> None:
    boot = BootMarks(1)
    for event_id in (1, 3, 5):
        assert boot.take(event_id)
    assert not boot.take(3)
    assert (boot.cursor, boot.above) == (1, {3, 5})
    for event_id in range(10, 10 + MAX_ABOVE + 1):
        boot.take(event_id)
    assert len(boot.above) <= MAX_ABOVE
    assert boot.cursor >= 3  # the oldest gap was given up
    assert all(boot.holds(i) for i in (1, 3, 5, 10 + MAX_ABOVE))


@pytest.mark.parametrize("content", [b"", b"{", b'{"version": "2", "buses": {}}', b"null"])
def test_a_damaged_marks_file_is_moved_aside_and_reported(tmp_path: Path, content: bytes) -> None:
    (tmp_path / FILE_NAME).write_bytes(content)
    marks = EventMarks(tmp_path)
    assert marks.damage is not None
    assert marks.damage.store == "mcu_events"
    assert not (tmp_path / FILE_NAME).exists()
    assert marks.resume("bus")(1) == (0, ())


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)
entries = st.fixed_dictionaries(
    {
        "boot_id": json_values | st.integers(),
        "cursor": json_values | st.integers(0, 99),
        "above": json_values | st.lists(st.integers(-5, 200)),
    }
)


@settings(max_examples=200, deadline=None)
@given(buses=json_values | st.dictionaries(st.text(max_size=8), json_values | entries))
def test_any_marks_file_loads_without_crashing_and_keeps_only_sound_entries(
    tmp_path_factory: pytest.TempPathFactory, buses: Any
) -> None:
    state = tmp_path_factory.mktemp("marks")
    (state / FILE_NAME).write_text(json.dumps({"version": 1, "buses": buses}))
    marks = EventMarks(state)
    assert marks.damage is None
    for bus in buses if isinstance(buses, dict) else ():
        entry = buses[bus]
        cursor, above = marks.resume(bus)(entry.get("boot_id") if isinstance(entry, dict) else 0)
        assert isinstance(cursor, int)
        assert cursor >= 0
        assert all(isinstance(i, int) and i > cursor for i in above)


@settings(max_examples=100, deadline=None)
@given(ids=st.lists(st.integers(1, 400), max_size=80), boot_id=st.integers(0, 2**32 - 1))
def test_marks_written_and_read_back_hold_the_same_ids(
    tmp_path_factory: pytest.TempPathFactory, ids: list[int], boot_id: int
) -> None:
    state = tmp_path_factory.mktemp("marks")
    marks = EventMarks(state)
    marks.take("bus", boot_id, ids)
    assert marks.save()
    again = EventMarks(state)
    assert again.resume("bus")(boot_id) == marks.resume("bus")(boot_id)
    assert all(again.holds("bus", boot_id, i) for i in ids)
