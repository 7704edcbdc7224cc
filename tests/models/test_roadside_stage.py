"""The roadside stage's clock and filter: snapshots at the rate, nothing vague or far."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from helpers import street_geo
from helpers.road_users import participant
from smartpole.models.calibration import GroundCalibration
from smartpole.models.roadside_stage import (
    MAX_POS_SIGMA_M,
    RANGE_PER_REACH,
    SnapshotClock,
    reportable,
)


@given(
    fps=st.floats(min_value=5.0, max_value=60.0),
    rate_hz=st.floats(min_value=1.0, max_value=20.0),
    jitter=st.lists(st.floats(min_value=0.0, max_value=0.4), min_size=50, max_size=400),
)
def test_snapshots_keep_the_rate_on_average_and_never_burst(
    fps: float, rate_hz: float, jitter: list[float]
) -> None:
    """Frames at any rate with jittered times: a snapshot is never closer than one frame
    interval to the last, never more than one period plus a frame late while frames come,
    and over the run their number is the duration times the rate (the frames allow)."""
    period, frame = 1.0 / rate_hz, 1.0 / fps
    clock = SnapshotClock(period)
    times = []
    t = 0.0
    for j in jitter:
        t += frame * (1.0 + j)
        times.append(t)
    due = [t for t in times if clock.due(t)]
    assert due[0] == times[0]
    longest_frame_gap = max(b - a for a, b in itertools.pairwise(times))
    for a, b in itertools.pairwise(due):
        assert b - a <= period + longest_frame_gap + 1e-9
        assert b - a > 0
    duration = times[-1] - times[0]
    if frame * 1.4 < period:  # frames come faster than snapshots: the rate is kept
        assert len(due) <= duration / period + 2
        assert len(due) >= duration / (period + frame * 1.4) - 1
    else:  # snapshots as often as frames come, never two for one frame
        assert len(due) <= len(times)


def test_at_25_fps_10_hz_alternates_080_and_120_ms() -> None:
    clock = SnapshotClock(0.1)
    due = [i for i in range(100) if clock.due(i * 0.04)]
    gaps = {round((b - a) * 0.04, 2) for a, b in itertools.pairwise(due)}
    assert gaps == {0.08, 0.12}
    assert len(due) == 40  # 4 s at 10 Hz


def test_only_precise_road_users_within_reach_of_the_calibration_are_reported() -> None:
    near = participant(east_m=3.0, north_m=40.0, pos_sigma_m=0.4)
    far = participant(east_m=10.0, north_m=90.0, pos_sigma_m=2.0)
    vague = participant(east_m=0.0, north_m=20.0, pos_sigma_m=6.0)
    kept = reportable([near, far, vague], max_sigma_m=MAX_POS_SIGMA_M, max_range_m=80.0)
    assert kept == [near]


def test_the_reach_is_the_farthest_ground_mark_from_the_pole() -> None:
    calibration = GroundCalibration(street_geo.IMAGE_640, [list(p) for p in street_geo.GROUND_EN_M])
    assert calibration.reach_m == pytest.approx(math.hypot(3.5, 40.0))
    assert RANGE_PER_REACH * calibration.reach_m == pytest.approx(80.3, abs=0.1)
