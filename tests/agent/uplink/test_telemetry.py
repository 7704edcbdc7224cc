"""Report by exception: what the telemetry reporter sends up, and what it holds back.

A real point table feeds a real reporter writing into a real outbox; the records are read
back as the uplink would read them.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers.paths import REPO
from smartpole.agent.config.uplink import TelemetryConfig
from smartpole.agent.core.outbox import Outbox
from smartpole.agent.core.point_meta import PointMeta, decimals_of, round_to, rounder
from smartpole.agent.core.points import PointTable, Quality
from smartpole.agent.uplink.telemetry import MAX_VALUES_PER_RECORD, TelemetryReporter

Row = tuple[str, str, object, str]
META_HASH = "0123456789abcdef"
DATA_SCHEMA = json.loads((REPO / "schemas" / "uplink" / "telemetry.schema.json").read_text())[
    "properties"
]["data"]


def rows_of(payload: dict[str, object]) -> list[tuple[str, str, object, str, float]]:
    """The record as ``(device, point, value, quality, ts)`` rows, checked by its schema."""
    jsonschema.validate(payload, DATA_SCHEMA)
    blocks = payload["blocks"]
    assert isinstance(blocks, list)
    return [
        (b["device"], point, value, b.get("quality", {}).get(point, "good"), b["ts"])
        for b in blocks
        for point, value in b["values"].items()
    ]


class Rig:
    def __init__(
        self,
        state_dir: Path,
        deadbands: dict[str, float] | None = None,
        resolution: float | None = None,
    ) -> None:
        """``resolution``: the voltage's, as its bus would describe it."""
        self.clock = 1_700_000_000.0
        self.table = PointTable(wall=lambda: self.clock, monotonic=lambda: self.clock)
        for point in ("voltage", "door", "name", "count"):
            meta = None
            if point == "voltage" and resolution is not None:
                meta = PointMeta(type="number", wire="f32", resolution=resolution)
            self.table.register("meter", point, "", 60.0, meta)
        self.outbox = Outbox(state_dir, report_interval_s=None)
        config = TelemetryConfig(deadbands=deadbands or {})
        self.reporter = TelemetryReporter(
            config, self.table, self.outbox, meta_hash=META_HASH, wall=lambda: self.clock
        )
        self.reporter.start()

    def read(self, point: str, value: object, quality: Quality = Quality.GOOD) -> None:
        self.clock += 0.1
        self.table.update("meter", point, value, quality)  # type: ignore[arg-type]

    def records(self) -> list[dict[str, Any]]:
        """Flush, then the payloads of the telemetry records so far (not acknowledged)."""
        self.reporter.flush()
        return [r.payload for r in self.outbox.pending("telemetry", limit=10_000)]

    def sent(self) -> list[Row]:
        """Flush, then every value in every telemetry record so far, oldest first."""
        self.reporter.flush()
        rows: list[Row] = []
        for record in self.outbox.pending("telemetry", limit=10_000):
            rows += [(d, p, v, q) for d, p, v, q, _ in rows_of(record.payload)]
            self.outbox.ack("telemetry", record.seq)
        return rows


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    return Rig(tmp_path, {"meter.voltage": 0.5})


def test_an_unchanged_value_goes_up_once(rig: Rig) -> None:
    rig.read("count", 7)
    rig.read("count", 7)
    assert rig.sent() == [("meter", "count", 7, "good")]
    rig.read("count", 7)
    assert rig.sent() == []
    assert rig.reporter.status()["suppressed_by_deadband"] == 2


def test_changes_within_the_deadband_are_held_back_and_beyond_it_go_up(rig: Rig) -> None:
    rig.read("voltage", 230.0)
    rig.read("voltage", 230.4)  # within 0.5 of 230.0
    rig.read("voltage", 229.6)  # within 0.5 of 230.0, the last value sent
    assert rig.sent() == [("meter", "voltage", 230.0, "good")]
    rig.read("voltage", 230.6)
    assert rig.sent() == [("meter", "voltage", 230.6, "good")]


def test_points_without_a_deadband_report_every_change_in_order(rig: Rig) -> None:
    rig.read("count", 1)
    rig.sent()
    rig.read("count", 2)
    rig.read("voltage", 230.0)
    rig.read("count", 3)
    # Batched into one record per flush, but every change is in it, not just the latest.
    assert rig.sent() == [
        ("meter", "count", 2, "good"),
        ("meter", "voltage", 230.0, "good"),
        ("meter", "count", 3, "good"),
    ]
    assert rig.reporter.status()["records"] == 2


def test_a_full_batch_goes_out_without_waiting_for_the_flush(rig: Rig) -> None:
    for i in range(MAX_VALUES_PER_RECORD + 3):
        rig.read("count", i)
    first = rig.outbox.pending("telemetry")
    assert len(first) == 1  # appended by the reading that filled it, before any flush
    assert [row[2] for row in rows_of(first[0].payload)] == list(range(MAX_VALUES_PER_RECORD))
    assert rig.reporter.status()["queued"] == 3


def test_an_integrity_report_comes_after_the_changes_before_it(rig: Rig) -> None:
    rig.read("count", 1)
    rig.read("count", 2)
    rig.reporter.integrity()
    kinds = [r.payload["kind"] for r in rig.outbox.pending("telemetry")]
    assert kinds == ["change", "integrity"]


def test_a_block_read_goes_up_in_order_with_one_acquisition_time(rig: Rig) -> None:
    rig.read("count", 1)
    rig.sent()
    rig.clock += 1.0
    rig.table.update_many(
        "meter",
        [
            ("count", 1, Quality.GOOD),
            ("voltage", 231.0, Quality.GOOD),
            ("door", True, Quality.GOOD),
        ],
    )
    rig.reporter.flush()
    (record,) = rig.outbox.pending("telemetry")
    rows = rows_of(record.payload)
    assert [(row[1], row[2]) for row in rows] == [("voltage", 231.0), ("door", True)]
    assert {row[4] for row in rows} == {round(rig.clock, 3)}
    assert len(record.payload["blocks"]) == 1  # type: ignore[arg-type]


def test_a_quality_change_goes_up_even_without_a_value_change(rig: Rig) -> None:
    rig.read("voltage", 230.0)
    rig.sent()
    rig.read("voltage", 230.0, Quality.UNCERTAIN)
    assert rig.sent() == [("meter", "voltage", 230.0, "uncertain")]


def test_a_dead_device_goes_up_as_null_and_bad_at_the_time_it_was_declared_so(rig: Rig) -> None:
    """A quality change is no reading: the last value (acquired earlier) must not go up
    again stamped with the time of the change."""
    rig.read("count", 5)
    rig.sent()
    rig.clock += 30.0
    rig.table.mark_bad("meter")
    rig.reporter.flush()
    (record,) = rig.outbox.pending("telemetry")
    rows = rows_of(record.payload)
    assert ("meter", "count", None, "bad", round(rig.clock, 3)) in rows
    assert all(value is None for _, _, value, _, _ in rows)
    rig.outbox.ack("telemetry", record.seq)
    # The integrity report then carries the last value with its own acquisition time.
    rig.reporter.integrity()
    (record,) = rig.outbox.pending("telemetry")
    assert ("meter", "count", 5, "bad", round(rig.clock - 30.0, 3)) in rows_of(record.payload)


def test_restored_values_are_not_published_until_read_again(tmp_path: Path) -> None:
    """After a restart the table holds the last saved values, stale. The life that read
    them published them (or a newer value); publishing them again after a restart, even
    with their own time, would show a counter going backwards."""
    rig = Rig(tmp_path)
    rig.table.restore("meter", "count", 41, rig.clock - 100.0)
    rig.table.restore("meter", "voltage", 229.0, rig.clock - 100.0)
    rig.reporter.integrity()
    (record,) = rig.outbox.pending("telemetry")
    assert rows_of(record.payload) == []
    rig.outbox.ack("telemetry", record.seq)
    rig.clock += 1.0
    rig.table.mark_bad("meter")  # the device does not answer after the restart
    assert {(p, v, q) for _, p, v, q in rig.sent()} >= {("count", None, "bad")}
    rig.read("count", 42)  # read again: now it is a reading of this life
    assert rig.sent() == [("meter", "count", 42, "good")]
    rig.reporter.integrity()
    (record,) = rig.outbox.pending("telemetry")
    assert [(r[1], r[2]) for r in rows_of(record.payload)] == [("count", 42)]


def test_nan_and_infinity_go_up_as_null_with_quality_bad(rig: Rig) -> None:
    rig.read("voltage", math.nan)
    assert rig.sent() == [("meter", "voltage", None, "bad")]
    rig.read("voltage", math.inf)
    assert rig.sent() == []  # still no reading: nothing new to say
    rig.read("voltage", 231.0)
    assert rig.sent() == [("meter", "voltage", 231.0, "good")]


def test_equal_numbers_are_one_reading_but_a_boolean_is_not_a_number(rig: Rig) -> None:
    rig.read("count", 2)
    rig.read("count", 2.0)
    rig.read("door", 1)
    rig.read("door", True)
    assert rig.sent() == [
        ("meter", "count", 2, "good"),
        ("meter", "door", 1, "good"),
        ("meter", "door", True, "good"),
    ]


def test_booleans_and_strings_report_any_change(rig: Rig) -> None:
    rig.read("door", False)
    rig.read("name", "abc")
    rig.sent()
    rig.read("door", True)
    rig.read("name", "abd")
    assert sorted(rig.sent()) == [
        ("meter", "door", True, "good"),
        ("meter", "name", "abd", "good"),
    ]


def test_an_integrity_report_carries_every_point_and_resets_the_baseline(rig: Rig) -> None:
    rig.read("voltage", 230.0)
    rig.read("count", 1)
    rig.reporter.integrity()
    records = rig.outbox.pending("telemetry")
    assert [r.payload["kind"] for r in records] == ["change", "integrity"]
    rows = rows_of(records[1].payload)
    assert sorted((r[1], r[2]) for r in rows) == [("count", 1), ("voltage", 230.0)]
    rig.outbox.ack("telemetry", records[1].seq)
    rig.read("voltage", 230.0)
    assert rig.sent() == []


readings = st.lists(
    st.tuples(
        st.one_of(
            st.floats(allow_nan=True, allow_infinity=True, width=32),
            st.integers(-1000, 1000),
        ),
        # every quality a reading can have: ``unknown`` is that of no reading at all
        st.sampled_from([q for q in Quality if q is not Quality.UNKNOWN]),
    ),
    min_size=1,
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(readings=readings, band=st.sampled_from([0.0, 0.5, 10.0]))
def test_what_goes_up_tracks_every_reading_to_within_the_deadband(
    tmp_path_factory: pytest.TempPathFactory,
    readings: list[tuple[float | int, Quality]],
    band: float,
) -> None:
    """Whatever the readings, after each flush the platform's last value is the reading's
    quality and within the deadband of its value, and nothing went up that did not move."""
    rig = Rig(tmp_path_factory.mktemp("telemetry"), {"meter.voltage": band})
    platform: tuple[object, str] | None = None
    for value, quality in readings:
        rig.read("voltage", value, quality)
        for _, _, sent_value, sent_quality in rig.sent():
            if platform is not None and sent_quality == platform[1]:
                moved = sent_value != platform[0]
                if band > 0 and isinstance(sent_value, int | float):
                    last = platform[0]
                    moved = not isinstance(last, int | float) or abs(sent_value - last) > band
                assert moved, (platform, sent_value)
            platform = (sent_value, sent_quality)
        finite = not (isinstance(value, float) and not math.isfinite(value))
        expected_quality = quality.value if finite else "bad"
        assert platform is not None
        assert platform[1] == expected_quality
        if finite and isinstance(platform[0], int | float):
            assert abs(platform[0] - value) <= band
        elif not finite:
            assert platform[0] is None
    rig.outbox.close()


# -- rounding to the resolution, the meta hash, merged blocks ------------------------------


def test_a_float_goes_up_rounded_and_a_rounded_repeat_is_no_change(tmp_path: Path) -> None:
    rig = Rig(tmp_path, resolution=0.1)
    rig.read("voltage", 230.20000610351562)  # 230.2 V as an f32 decodes
    rig.read("voltage", 230.23)  # rounds to what was sent: no change
    rig.read("voltage", 0.1 + 0.2)
    rig.read("voltage", 0.30001)
    assert rig.sent() == [("meter", "voltage", 230.2, "good"), ("meter", "voltage", 0.3, "good")]
    assert rig.reporter.status()["suppressed_by_deadband"] == 2
    rig.read("count", 7)  # a point without a resolution is sent as read
    assert rig.sent() == [("meter", "count", 7, "good")]


def test_the_deadband_compares_rounded_values(tmp_path: Path) -> None:
    rig = Rig(tmp_path, {"meter.voltage": 0.5}, resolution=1.0)
    rig.read("voltage", 230.4)  # 230
    rig.read("voltage", 230.6)  # 231: 1 from 230, beyond the band though 0.2 from the reading
    rig.read("voltage", 231.4)  # 231 again
    assert [v for _, _, v, _ in rig.sent()] == [230.0, 231.0]


def test_an_integrity_report_is_rounded_too(tmp_path: Path) -> None:
    rig = Rig(tmp_path, resolution=0.01)
    rig.read("voltage", 12346.254)
    rig.sent()
    rig.reporter.integrity()
    assert ("meter", "voltage", 12346.25, "good") in rig.sent()


def test_every_record_names_the_meta_hash(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.read("count", 1)
    rig.reporter.flush()
    rig.reporter.integrity()
    records = rig.records()
    assert [r["kind"] for r in records] == ["change", "integrity"]
    assert {r["meta"] for r in records} == {META_HASH}
    for record in records:
        jsonschema.validate(record, DATA_SCHEMA)


def test_blocks_of_one_device_with_one_timestamp_are_merged(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.table.update("meter", "count", 1, Quality.GOOD)  # same clock: one acquisition
    rig.table.update("meter", "door", True, Quality.GOOD)
    rig.table.update("meter", "name", "x", Quality.UNCERTAIN)
    rig.table.update("meter", "count", 2, Quality.GOOD)  # count again: a block of its own
    (record,) = rig.records()
    assert record["blocks"] == [
        {"device": "meter", "ts": rig.clock, "values": {"count": 1, "door": True, "name": "x"},
         "quality": {"name": "uncertain"}},
        {"device": "meter", "ts": rig.clock, "values": {"count": 2}},
    ]  # fmt: skip
    rig.read("count", 3)  # another time: another block, in the next record
    assert rig.records()[-1]["blocks"] == [
        {"device": "meter", "ts": rig.clock, "values": {"count": 3}}
    ]


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(st.floats(-1e6, 1e6, allow_nan=False, width=32), min_size=1, max_size=20),
    resolution=st.sampled_from([0.001, 0.01, 0.1, 0.5, 1.0]),
    band=st.sampled_from([0.0, 0.5]),
)
def test_rounded_telemetry_tracks_every_reading_without_noise_or_repeats(
    tmp_path_factory: pytest.TempPathFactory, values: list[float], resolution: float, band: float
) -> None:
    """Every value sent is the reading rounded (no more decimals than the resolution has),
    no value sent equals the one sent before it, and after each flush the platform's value
    is within the deadband of the rounded reading."""
    rig = Rig(tmp_path_factory.mktemp("rounded"), {"meter.voltage": band}, resolution)
    step = rounder(resolution)
    platform: float | None = None
    for value in values:
        rig.read("voltage", value)
        for _, _, sent, _ in rig.sent():
            assert isinstance(sent, float)
            assert sent == round_to(value, *step)
            assert len(repr(sent).partition(".")[2]) <= max(1, decimals_of(resolution)), sent
            assert sent != platform
            platform = sent
        assert platform is not None
        assert abs(platform - round_to(value, *step)) <= band
    rig.outbox.close()
