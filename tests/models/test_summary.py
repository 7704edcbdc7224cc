"""Per-interval summaries: fixed shape, aligned intervals, every crossing counted once."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smartpole.models.counting import Crossing
from smartpole.models.summary import DEFAULT_CLASSES, SummaryAggregator
from smartpole.models.zones import Dwell, QueueState, ZoneEvent

CLASSES = ("car", "truck", "bus", "motorcycle", "bicycle", "person")


def crossing(
    t: float,
    direction: str = "in",
    cls: str = "car",
    line: str = "main",
    speed: float | None = None,
) -> Crossing:
    return Crossing(line, direction, cls, 1, t, speed)  # type: ignore[arg-type]


def aggregator(interval: float = 60.0) -> SummaryAggregator:
    return SummaryAggregator("cam1", interval, ["main", "side"], ["bay"], queues=["stop"])


def total(summary: dict[str, Any]) -> int:
    return sum(
        n
        for per_line in summary["lines"].values()
        for per_class in per_line.values()
        for n in per_class.values()
    )


def test_an_empty_interval_has_the_full_fixed_shape() -> None:
    agg = aggregator()
    summary = agg.flush(30.0)
    assert summary == {
        "camera": "cam1",
        "interval_start": 0.0,
        "interval_s": 60.0,
        "lines": {
            line: {d: dict.fromkeys(CLASSES, 0) for d in ("in", "out")} for line in ("main", "side")
        },
        "speed_kmh": {line: {"mean": None, "p85": None, "n": 0} for line in ("main", "side")},
        "zones": {"bay": {"occupancy": 0.0, "mean_dwell_s": None}},
        "queue": {
            "stop": {"max_vehicles": 0, "mean_vehicles": 0.0, "max_length": 0.0, "unit": "px"}
        },
        "events": [],
        "quality": {"fps": 0.0, "frames": 0, "dropped": 0, "state": "no_frames"},
    }
    assert tuple(DEFAULT_CLASSES) == CLASSES
    json.dumps(summary)


def test_the_classes_are_the_class_maps() -> None:
    agg = SummaryAggregator("c", 60, ["l"], [], classes=["person", "car", "car"])
    agg.add_crossing(crossing(1.0, cls="truck", line="l"))  # not in the map: not reported
    agg.add_crossing(crossing(2.0, cls="car", line="l"))
    agg.add_crossing(crossing(3.0, line="unknown"))
    assert agg.flush(60.0)["lines"] == {
        "l": {"in": {"person": 0, "car": 1}, "out": {"person": 0, "car": 0}}
    }


def test_intervals_are_aligned_to_the_stream_clock() -> None:
    agg = aggregator()
    for t in (10.0, 59.99, 60.0, 130.0):
        agg.add_crossing(crossing(t))
    assert not agg.due(59.99)
    assert agg.due(60.0)
    first = agg.flush(60.0)
    assert first["interval_start"] == 0.0
    assert total(first) == 2
    assert agg.due(130.0)
    second = agg.flush(130.0)
    assert second["interval_start"] == 60.0
    assert total(second) == 1
    assert not agg.due(130.0)
    third = agg.flush(200.0)
    assert third["interval_start"] == 120.0
    assert total(third) == 1


def test_a_stream_starting_mid_interval_opens_the_aligned_interval() -> None:
    agg = SummaryAggregator("c", 300.0, ["l"], [])
    for i in range(75 * 25):  # from t = 225 s to 300 s at 25 fps
        t = 225.0 + i / 25
        agg.sample(t, {})
        if i % 25 == 24:
            agg.add_quality(25, 25, 0, "ok")
    summary = agg.flush(300.0)
    assert summary["interval_start"] == 0.0
    assert summary["quality"]["frames"] == 1875
    assert summary["quality"]["fps"] == pytest.approx(25.0, rel=0.01)  # over the 75 s covered


def test_a_late_crossing_goes_to_the_oldest_open_interval() -> None:
    agg = aggregator()
    agg.add_crossing(crossing(30.0))
    agg.flush(60.5)
    agg.add_crossing(crossing(59.9))  # interpolated before the boundary, reported after it
    summary = agg.flush(120.0)
    assert summary["interval_start"] == 60.0
    assert total(summary) == 1


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.floats(0.0, 1000.0), st.floats(0.0, 2.0)), max_size=60),
    st.sampled_from([60.0, 300.0, 900.0]),
)
def test_every_crossing_lands_in_exactly_one_interval(
    times: list[tuple[float, float]], interval: float
) -> None:
    """Crossings arrive in time order but up to 2 s late; flushes happen whenever due."""
    agg = SummaryAggregator("c", interval, ["l"], [])
    summaries: list[dict[str, Any]] = []
    events = sorted((t + late, t) for t, late in times)  # (reported at, happened at)
    for reported, happened in events:
        while agg.due(reported):
            summaries.append(agg.flush(reported))
        agg.add_crossing(Crossing("l", "in", "car", 1, happened, None))
    end = (events[-1][0] if events else 0.0) + 2 * interval
    while agg.due(end):
        summaries.append(agg.flush(end))
    assert sum(total(s) for s in summaries) == len(times)
    starts = [s["interval_start"] for s in summaries]
    assert starts == sorted(starts)
    assert len(set(starts)) == len(starts)
    for s in summaries:
        assert s["interval_start"] == math.floor(s["interval_start"] / interval) * interval


def test_speeds_mean_and_85th_percentile() -> None:
    agg = aggregator()
    speeds = [30.0, 35.0, 40.0, 42.0, 45.0, 50.0, 55.0, 60.0, 62.0, 70.0]
    for i, v in enumerate(speeds):
        agg.add_crossing(crossing(float(i), speed=v, direction="out" if i % 2 else "in"))
    agg.add_crossing(crossing(20.0, speed=None))
    summary = agg.flush(60.0)
    assert summary["speed_kmh"]["main"] == {
        "mean": pytest.approx(np.mean(speeds), abs=0.01),
        "p85": pytest.approx(np.percentile(speeds, 85), abs=0.01),
        "n": 10,
    }
    assert summary["speed_kmh"]["side"]["n"] == 0
    assert summary["lines"]["main"]["in"]["car"] == 6
    assert summary["lines"]["main"]["out"]["car"] == 5


def test_occupancy_dwell_queue_and_events() -> None:
    agg = aggregator()
    for i in range(60 * 10):  # 10 fps; the bay is occupied during the first 15 s
        t = i / 10
        queue = {"stop": QueueState("stop", 3 if t < 30 else 1, 42.5 if t < 30 else 7.0, "m")}
        agg.sample(t, {"bay": t < 15.0}, queue)
    agg.add_dwell(Dwell("bay", 1, "car", 0.0, 15.0))
    agg.add_dwell(Dwell("bay", 2, "car", 5.0, 10.0))
    agg.add_event(ZoneEvent("stopped_vehicle", "bay", 1, "car", 40.0, 31.0))
    agg.add_event(ZoneEvent("pedestrian_on_carriageway", "bay", 3, "person", 12.0, 1.1))
    summary = agg.flush(60.0)
    assert summary["zones"]["bay"]["occupancy"] == pytest.approx(0.25, abs=0.01)
    assert summary["zones"]["bay"]["mean_dwell_s"] == 10.0
    assert summary["queue"]["stop"] == {
        "max_vehicles": 3,
        "mean_vehicles": 2.0,
        "max_length": 42.5,
        "unit": "m",
    }
    assert [e["type"] for e in summary["events"]] == [
        "pedestrian_on_carriageway",
        "stopped_vehicle",
    ]
    json.dumps(summary)


def test_quality_counts_frames_and_reports_the_worst_state() -> None:
    agg = aggregator()
    for second in range(60):
        agg.sample(float(second), {})
        state = "dark" if 20 <= second < 25 else "shaken" if second == 40 else "ok"
        agg.add_quality(25, 24, 1, state)
    summary = agg.flush(60.0)
    assert summary["quality"] == {"fps": 24.0, "frames": 1440, "dropped": 60, "state": "dark"}
    # Nothing at all in the next interval: no frames.
    assert agg.due(120.0)
    assert agg.flush(120.0)["quality"]["state"] == "no_frames"


def test_quality_before_the_first_sample_is_kept() -> None:
    agg = aggregator()
    agg.add_quality(10, 10, 0, "blocked")
    agg.sample(5.0, {})
    quality = agg.flush(60.0)["quality"]
    assert quality["frames"] == 10
    assert quality["state"] == "blocked"


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="interval_s"):
        SummaryAggregator("c", 0, [], [])
    with pytest.raises(ValueError, match="unknown quality state"):
        aggregator().add_quality(1, 1, 0, "foggy")
