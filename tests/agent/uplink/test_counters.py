"""Counters that only grow never go backwards upstream without a ``counter_reset`` event.

A real point table feeds a real telemetry reporter and its counter watch, writing into a
real outbox; what the platform would receive is read back from it, checked by the schemas.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from helpers.paths import PROFILES, REPO
from smartpole.agent.buses.registry import load_profile
from smartpole.agent.config.uplink import TelemetryConfig
from smartpole.agent.core.outbox import Outbox
from smartpole.agent.core.points import PointTable, Quality
from smartpole.agent.uplink.counters import FILE_NAME, CounterWatch, counter_points
from smartpole.agent.uplink.telemetry import TelemetryReporter
from smartpole.drivers.modbus.points import PointSpec

SCHEMAS = REPO / "schemas" / "uplink"


def _schema(name: str) -> Any:
    return json.loads((SCHEMAS / name).read_text())


EVENT = _schema("event.schema.json")


class Rig:
    """One meter with a counter point (``energy``) and a plain one (``power``)."""

    def __init__(self, state_dir: Path, *, deadband: float = 0.0) -> None:
        self.clock = 1_700_000_000.0
        self.state_dir = state_dir
        self.table = PointTable(wall=lambda: self.clock, monotonic=lambda: self.clock)
        for point in ("energy", "power"):
            self.table.register("meter", point, "", 60.0)
        self.outbox = Outbox(state_dir, report_interval_s=None)
        self.counters = CounterWatch([("meter", "energy")], self.outbox, state_dir)
        config = TelemetryConfig(deadbands={"meter.energy": deadband} if deadband else {})
        self.reporter = TelemetryReporter(
            config,
            self.table,
            self.outbox,
            wall=lambda: self.clock,
            counters=self.counters,
            meta_hash="0123456789abcdef",
        )
        self.reporter.start()

    def read(self, point: str, value: float) -> None:
        self.clock += 1.0
        self.table.update("meter", point, value, Quality.GOOD)

    def upstream(self) -> list[tuple[str, Any]]:
        """Everything appended so far, in the order the platform gets it per stream, as
        ``("value", energy)`` and ``("reset", event)``, each checked by its schema."""
        self.reporter.flush()
        out: list[tuple[str, Any]] = []
        for record in self.outbox.pending(limit=10_000):
            envelope = {
                "pole": "p1", "epoch": "0123456789abcdef", "stream": record.stream,
                "seq": record.seq, "ts": record.created_at, "data": record.payload,
            }  # fmt: skip
            if record.stream == "events":
                jsonschema.validate(envelope, EVENT, format_checker=jsonschema.FormatChecker())
                out.append(("reset", record.payload))
            elif record.stream == "telemetry":
                jsonschema.validate(envelope, _schema("telemetry.schema.json"))
                for block in record.payload["blocks"]:
                    if "energy" in block["values"]:
                        out.append(("value", block["values"]["energy"]))
            self.outbox.ack(record.stream, record.seq)
        return out

    def close(self) -> None:
        self.reporter.flush()
        self.counters.save()
        self.outbox.close()


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    return Rig(tmp_path)


def test_a_growing_counter_raises_no_event(rig: Rig) -> None:
    for value in (100.0, 100.5, 100.5, 101.0):
        rig.read("energy", value)
    assert rig.upstream() == [("value", 100.0), ("value", 100.5), ("value", 101.0)]
    assert rig.counters.resets == 0


def test_a_lower_reading_is_published_after_a_counter_reset_event(rig: Rig) -> None:
    rig.read("energy", 12346.25)
    rig.read("energy", 3.5)  # the meter was replaced
    rig.read("energy", 3.75)
    got = rig.upstream()
    resets = [e for kind, e in got if kind == "reset"]
    assert resets == [
        {
            "source": "counter", "kind": "counter_reset", "device": "meter",
            "point": "energy", "previous": 12346.25, "value": 3.5, "at": rig.clock - 1.0,
        }
    ]  # fmt: skip
    assert [v for kind, v in got if kind == "value"] == [12346.25, 3.5, 3.75]
    assert rig.counters.resets == 1
    assert rig.reporter.status()["counters"] == {"points": 1, "resets": 1, "write_failures": 0}


def test_a_plain_point_may_fall_freely(rig: Rig) -> None:
    rig.read("power", 5.0)
    rig.read("power", 1.0)
    rig.upstream()
    assert rig.counters.resets == 0


def test_the_highest_value_published_is_remembered_across_a_restart(tmp_path: Path) -> None:
    first = Rig(tmp_path)
    first.read("energy", 500.0)
    first.upstream()
    first.close()  # a clean stop saves
    second = Rig(tmp_path)
    assert second.counters.high("meter", "energy") == 500.0
    second.read("energy", 499.0)
    assert [kind for kind, _ in second.upstream()] == ["reset", "value"]
    second.close()


def test_a_reset_is_saved_at_once(tmp_path: Path) -> None:
    first = Rig(tmp_path)
    first.read("energy", 500.0)
    first.read("energy", 2.0)
    first.upstream()  # no clean stop: the reset was written when it happened
    saved = json.loads((tmp_path / FILE_NAME).read_text())
    assert saved["counters"] == [{"device": "meter", "point": "energy", "high": 2.0}]


def test_values_held_back_by_the_deadband_are_not_compared(tmp_path: Path) -> None:
    rig = Rig(tmp_path, deadband=1.0)
    rig.read("energy", 10.0)
    rig.read("energy", 9.5)  # within the deadband: not published, so nothing went back
    rig.read("energy", 12.0)
    assert [v for kind, v in rig.upstream() if kind == "value"] == [10.0, 12.0]
    assert rig.counters.resets == 0


def test_an_integrity_report_checks_counters_too(rig: Rig) -> None:
    rig.counters.check("meter", "energy", 900.0, rig.clock)  # published by an earlier life
    rig.read("energy", 10.0)
    rig.reporter.flush()
    rig.reporter.integrity()
    assert [kind for kind, _ in rig.upstream()] == ["reset", "value", "value"]
    assert rig.counters.resets == 1  # the integrity report repeats 10.0: no second event


@pytest.mark.parametrize(
    "content",
    [b"", b"{not json", b'{"version": 99.5}', b"[1, 2]"],
)
def test_a_damaged_counter_file_is_moved_aside_and_reported(tmp_path: Path, content: bytes) -> None:
    (tmp_path / FILE_NAME).write_bytes(content)
    outbox = Outbox(tmp_path, report_interval_s=None)
    watch = CounterWatch([("meter", "energy")], outbox, tmp_path)
    assert watch.damage is not None
    assert watch.damage.store == "counters"
    assert not (tmp_path / FILE_NAME).exists()
    assert watch.high("meter", "energy") is None
    outbox.close()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(
    counters=st.one_of(
        json_values,
        st.lists(
            st.fixed_dictionaries(
                {
                    "device": st.sampled_from(["meter", 3]),
                    "point": st.just("energy"),
                    "high": json_values | st.floats(),
                }
            )
        ),
    )
)
def test_any_counter_file_content_loads_without_crashing(
    tmp_path_factory: pytest.TempPathFactory, counters: object
) -> None:
    """Whatever a file holds under ``counters``, loading keeps only finite numbers of
    known points, and never raises."""
    state = tmp_path_factory.mktemp("counters")
    (state / FILE_NAME).write_text(json.dumps({"version": 1, "counters": counters}))
    outbox = Outbox(state, report_interval_s=None)
    watch = CounterWatch([("meter", "energy")], outbox, state)
    high = watch.high("meter", "energy")
    assert high is None or isinstance(high, float)
    outbox.close()


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 50).map(float), min_size=1, max_size=30))
def test_what_goes_up_never_falls_without_an_event_saying_so(
    tmp_path_factory: pytest.TempPathFactory, readings: list[float]
) -> None:
    """Whatever the meter reads, every fall in the published values comes after exactly one
    ``counter_reset`` event whose ``previous`` is the highest value published before and
    whose ``value`` is the lower one."""
    rig = Rig(tmp_path_factory.mktemp("counter"))
    for value in readings:
        rig.read("energy", value)
    got = rig.upstream()
    events = [e for kind, e in got if kind == "reset"]
    values = [v for kind, v in got if kind == "value"]
    high: float | None = None
    expected = []
    for value in values:
        if high is not None and value < high:
            expected.append((high, value))
        high = value  # the last value published is the highest since the last reset
    assert [(e["previous"], e["value"]) for e in events] == expected
    rig.close()


def test_the_shipped_profiles_flag_their_energy_and_hour_counters() -> None:
    flagged = {
        path.stem: sorted(p for _, p in counter_points([("d", load_profile(path))]))
        for path in sorted(PROFILES.glob("*.yaml"))
    }
    assert flagged["dlt645-meter"] == ["forward_active_energy"]
    assert flagged["lamp-controller"] == ["burning_hours", "energy"]
    assert flagged["eastron-sdm630"] == ["export_energy", "import_energy", "total_energy"]
    assert flagged["eastron-sdm120"] == ["export_energy", "import_energy", "total_energy"]
    assert flagged["chint-dtsu666"] == ["export_energy", "import_energy"]
    assert flagged["alfen-ng9xx"] == ["energy"]
    assert flagged["cwt-uwd"] == []
    assert flagged["pole-mcu"] == []


def test_only_a_numeric_modbus_point_can_be_a_counter() -> None:
    with pytest.raises(ValidationError, match="monotonic applies only to numeric points"):
        PointSpec.model_validate({"kind": "coil", "address": 1, "type": "bool", "monotonic": True})
    spec = PointSpec.model_validate(
        {"kind": "input", "address": 1, "type": "u32", "monotonic": True}
    )
    assert spec.monotonic is True
