"""Tracker identities and counting-line crossings on synthetic tracks."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smartpole.models.counting import CountingLine, Crossing, LineCounter
from smartpole.models.detector import Detection
from smartpole.models.errors import AnalyticsConfigError
from smartpole.models.tracker import Track, Tracker

FPS = 25.0
DT = 1.0 / FPS


def det(cx: float, bottom: float, w: float = 60.0, h: float = 40.0, cls: str = "car") -> Detection:
    """A detection whose bottom-centre is ``(cx, bottom)``."""
    return Detection((cx - w / 2, bottom - h, cx + w / 2, bottom), 0.8, cls)


def run(
    tracker: Tracker, frames: list[list[Detection] | None], counter: LineCounter | None = None
) -> tuple[set[int], list[Crossing]]:
    """Feed frames (None = no detector run); return every confirmed id seen and crossings."""
    ids: set[int] = set()
    crossings: list[Crossing] = []
    for i, dets in enumerate(frames):
        t = i * DT
        tracks = tracker.predict_only(t) if dets is None else tracker.update(dets, t)
        ids |= {tr.id for tr in tracks}
        if counter is not None:
            crossings += counter.update(tracks)
    return ids, crossings


# --- tracker ----------------------------------------------------------------------------------


def test_constant_motion_with_dropouts_and_jitter_keeps_one_id() -> None:
    rng = random.Random(7)
    frames: list[list[Detection] | None] = []
    for i in range(150):
        if i % 3 == 2 or 60 <= i < 80:  # one frame in three missing, then a 0.8 s occlusion
            frames.append([])
            continue
        j = [rng.uniform(-3, 3) for _ in range(4)]
        x, y = 100 + 4.0 * i, 300 - 1.0 * i
        frames.append([Detection((x + j[0], y + j[1], x + 60 + j[2], y + 40 + j[3]), 0.7, "car")])
    tracker = Tracker()
    ids, _ = run(tracker, frames)
    assert len(ids) == 1
    (track,) = tracker.active()
    assert track.hits == sum(1 for f in frames if f)
    assert track.velocity[0] == pytest.approx(100.0, rel=0.1)  # 4 px per frame at 25 fps
    assert track.velocity[1] == pytest.approx(-25.0, abs=10)


def test_frames_without_a_detector_run_do_not_count_as_missed() -> None:
    frames: list[list[Detection] | None] = [
        [det(100 + 8.0 * i, 200)] if i % 4 == 0 else None for i in range(40)
    ]
    tracker = Tracker(max_missed_s=0.5)
    ids, _ = run(tracker, frames)
    assert len(ids) == 1
    (track,) = tracker.active()
    assert track.missed == 0
    # The prediction moved on with the object between detections.
    assert track.box[0] == pytest.approx(100 + 8.0 * 39 - 30, abs=2)


def test_two_crossing_objects_keep_their_ids() -> None:
    frames: list[list[Detection] | None] = []
    for i in range(100):
        a = det(100 + 5.0 * i, 200)  # left to right
        b = det(600 - 5.0 * i, 215)  # right to left, one lane lower, overlapping at i == 50
        frames.append([a, b] if i % 5 else [b, a])
    tracker = Tracker()
    run(tracker, frames)
    tracks = sorted(tracker.active(), key=lambda t: t.first_seen_s)
    assert len(tracks) == 2
    by_bottom = {round(t.points[-1][2]): t for t in tracks}
    assert by_bottom[200].velocity[0] > 0 > by_bottom[215].velocity[0]
    for track in tracks:  # every point of a track lies on its own lane
        assert {round(p[2]) for p in track.points} == {round(track.points[0][2])}


def test_a_fast_small_object_still_matches() -> None:
    # 12 px wide, moving 15 px per frame: consecutive boxes never overlap (IoU 0).
    frames: list[list[Detection] | None] = [
        [det(50 + 15.0 * i, 100, w=12, h=12, cls="motorcycle")] for i in range(30)
    ]
    ids, _ = run(Tracker(), frames)
    assert len(ids) == 1


def test_a_parked_car_does_not_jump_onto_a_passing_truck() -> None:
    parked = det(385, 162, w=60, h=30)
    frames: list[list[Detection] | None] = [[parked] for _ in range(30)]
    # A truck passes in front (the parked car hidden), one lane nearer, moving down-right.
    for i in range(15):
        frames.append([det(420 + 6.0 * i, 200 + 4.0 * i, w=80, h=40)])
    tracker = Tracker()
    run(tracker, frames)
    parked_track = min(tracker.active() + tracker.finished(), key=lambda t: t.id)
    assert {round(p[1]) for p in parked_track.points} == {385}


def test_a_single_detection_is_never_reported() -> None:
    tracker = Tracker(min_hits=2)
    assert tracker.update([det(100, 100)], 0.0) == []
    assert tracker.update([], DT) == []
    assert tracker.predict_only(5.0) == []
    assert tracker.finished() == []  # unconfirmed tracks end silently


def test_tracks_end_after_max_missed_s_and_are_handed_over_once() -> None:
    tracker = Tracker(max_missed_s=1.0)
    for i in range(10):
        tracker.update([det(100 + i, 100, cls="truck" if i == 3 else "car")], i * DT)
    assert len(tracker.update([], 1.0)) == 1  # 0.64 s since the last sighting: alive
    assert tracker.finished() == []
    assert tracker.update([], 1.5) == []
    (ended,) = tracker.finished()
    assert ended.class_name == "car"
    assert ended.hits == 10
    assert ended.first_seen_s == 0.0
    assert ended.last_seen_s == pytest.approx(9 * DT)
    assert tracker.finished() == []


def test_finish_all_ends_everything() -> None:
    tracker = Tracker()
    tracker.update([det(100, 100), det(400, 100)], 0.0)
    tracker.update([det(102, 100), det(402, 100)], DT)
    assert len(tracker.finish_all()) == 2
    assert tracker.active() == []


def test_class_flicker_does_not_split_the_track() -> None:
    frames: list[list[Detection] | None] = [
        [det(100 + 3.0 * i, 200, cls="truck" if i % 4 == 0 else "car")] for i in range(40)
    ]
    tracker = Tracker()
    ids, _ = run(tracker, frames)
    assert len(ids) == 1
    assert tracker.active()[0].class_name == "car"


# --- counting line -----------------------------------------------------------------------------


def test_a_line_with_both_ends_equal_or_outside_the_frame_is_refused() -> None:
    with pytest.raises(AnalyticsConfigError, match="same point"):
        CountingLine("l", (10.0, 10.0), (10.0, 10.0))
    line = CountingLine("l", (0.0, 200.0), (700.0, 200.0))
    with pytest.raises(AnalyticsConfigError, match=r"p2 \(700, 200\) is outside the 640x352"):
        line.validate(640, 352)
    CountingLine("ok", (0.0, 0.0), (640.0, 352.0)).validate(640, 352)
    with pytest.raises(AnalyticsConfigError, match="finite"):
        CountingLine("l", (float("nan"), 0.0), (1.0, 1.0))


def test_direction_convention_moving_down_across_a_left_to_right_line_is_in() -> None:
    line = CountingLine("l", (0.0, 200.0), (640.0, 200.0))
    assert line.signed_distance(300, 150) < 0 < line.signed_distance(300, 250)
    frames: list[list[Detection] | None] = [[det(300, 150 + 4.0 * i)] for i in range(30)]
    _, crossings = run(Tracker(), frames, LineCounter(line))
    assert [(c.direction, c.class_name) for c in crossings] == [("in", "car")]
    assert crossings[0].t_s == pytest.approx(12.5 * DT)  # y == 200 between frames 12 and 13
    reverse = LineCounter(CountingLine("r", (640.0, 200.0), (0.0, 200.0)))
    _, crossings = run(Tracker(), frames, reverse)
    assert [c.direction for c in crossings] == ["out"]


def test_flicker_on_the_line_counts_once() -> None:
    line = CountingLine("l", (0.0, 200.0), (640.0, 200.0))
    ys = [150 + 5.0 * i for i in range(10)]  # approach from above
    ys += [200 + (4.0 if i % 2 else -4.0) for i in range(40)]  # sits on the line, jittering
    ys += [205 + 5.0 * i for i in range(10)]  # and leaves downwards
    frames: list[list[Detection] | None] = [
        [det(300, y)] if i % 7 != 3 else [] for i, y in enumerate(ys)
    ]
    _, crossings = run(Tracker(), frames, LineCounter(line, band_px=6.0))
    assert [c.direction for c in crossings] == ["in"]


def test_a_track_that_turns_back_counts_in_then_out_and_no_more() -> None:
    line = CountingLine("l", (0.0, 200.0), (640.0, 200.0))
    ys = [150 + 5.0 * i for i in range(21)]  # down to 250
    ys += [250 - 5.0 * i for i in range(1, 21)]  # back up to 150
    ys += [150 + 5.0 * i for i in range(1, 21)]  # and down again
    frames: list[list[Detection] | None] = [[det(300, y)] for y in ys]
    _, crossings = run(Tracker(), frames, LineCounter(line))
    assert [c.direction for c in crossings] == ["in", "out"]
    assert len({c.track_id for c in crossings}) == 1


def test_crossings_outside_the_segment_do_not_count() -> None:
    line = CountingLine("l", (100.0, 200.0), (300.0, 200.0))
    outside: list[list[Detection] | None] = [[det(400, 150 + 4.0 * i)] for i in range(30)]
    _, crossings = run(Tracker(), outside, LineCounter(line))
    assert crossings == []
    near_end: list[list[Detection] | None] = [[det(303, 150 + 4.0 * i)] for i in range(30)]
    _, crossings = run(Tracker(), near_end, LineCounter(line, band_px=6.0))
    assert [c.direction for c in crossings] == ["in"]  # within the tolerance of an end


def test_a_diagonal_line_counts_by_the_crossing_point() -> None:
    line = CountingLine("d", (100.0, 100.0), (300.0, 300.0))
    # Moving right across the diagonal at (200, 200): from cross > 0 to cross < 0: "out".
    frames: list[list[Detection] | None] = [[det(150 + 4.0 * i, 200)] for i in range(25)]
    _, crossings = run(Tracker(), frames, LineCounter(line))
    assert [c.direction for c in crossings] == ["out"]


def test_counter_state_is_forgotten_for_finished_tracks() -> None:
    line = CountingLine("l", (0.0, 200.0), (640.0, 200.0))
    counter = LineCounter(line)
    tracker = Tracker(max_missed_s=0.2)
    for i in range(30):
        counter.update(tracker.update([det(300, 150 + 4.0 * i)], i * DT))
    tracker.update([], 2.0)
    counter.forget(t.id for t in tracker.finished())
    assert counter._states == {}


def _track_with(points: list[tuple[float, float, float]], cls: str = "car") -> Track:
    return Track(
        id=1,
        box=(0.0, 0.0, 1.0, 1.0),
        class_name=cls,
        score=0.9,
        hits=len(points),
        missed=0,
        first_seen_s=points[0][0],
        last_seen_s=points[-1][0],
        points=list(points),
    )


jitter = st.floats(-0.99, 0.99)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(jitter, jitter), min_size=20, max_size=80),
    st.floats(2.0, 15.0),
    st.integers(1, 5),
)
def test_jitter_smaller_than_the_band_never_adds_counts(
    noise: list[tuple[float, float]], band: float, chunk: int
) -> None:
    """A true path that crosses once, measured with any jitter below ``band_px``: one count.

    The true bottom-centre goes from 40 px above the line to 40 px below it; every measured
    point is off by less than the band (in x and y). Points arrive ``chunk`` at a time, as
    when the counter runs after several tracker steps.
    """
    line = CountingLine("l", (0.0, 200.0), (640.0, 200.0))
    counter = LineCounter(line, band_px=band)
    n = len(noise)
    points = []
    for i, (jx, jy) in enumerate(noise):
        true_y = 160.0 + 80.0 * i / (n - 1)
        points.append((i * DT, 320.0 + jx * band, true_y + jy * band))
    track = _track_with(points[:1])
    crossings: list[Crossing] = []
    for end in range(1, n + 1, chunk):
        track.points = points[:end]
        crossings += counter.update([track])
    track.points = points
    crossings += counter.update([track])
    assert [c.direction for c in crossings] == ["in"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.floats(150.0, 250.0), min_size=2, max_size=60), st.floats(0.0, 10.0))
def test_any_path_counts_at_most_once_per_direction(ys: list[float], band: float) -> None:
    line = CountingLine("l", (0.0, 200.0), (640.0, 200.0))
    counter = LineCounter(line, band_px=band)
    track = _track_with([(i * DT, 320.0, y) for i, y in enumerate(ys)])
    crossings = counter.update([track])
    directions = [c.direction for c in crossings]
    assert len(directions) == len(set(directions))
    committed = [y for y in ys if abs(y - 200.0) > band]
    if crossings:  # the first crossing leaves the first side the track committed to
        assert crossings[0].direction == ("in" if committed[0] < 200 else "out")
