"""The product's classes: the life-long vote, light/heavy by size or length, riders as one."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from smartpole.agent.config.cameras import CameraConfig
from smartpole.models.calibration import GroundCalibration
from smartpole.models.counting import CountingLine, Crossing, LineCounter
from smartpole.models.detector import Detection, DetectTiming
from smartpole.models.frames import VideoFrame
from smartpole.models.pipeline import Pipeline
from smartpole.models.road_users import (
    HEAVY_AREA_RATIO,
    HEAVY_LENGTH_M,
    MIN_REFERENCE,
    PRODUCT_CLASSES,
    RoadUserClassifier,
    merge_riders,
    product_class,
    voted_class,
)
from smartpole.models.tracker import Tracker

FPS = 25.0
LINE = CountingLine("main", (0.0, 200.0), (640.0, 200.0))


def box_at(cx: float, bottom: float, w: float, h: float) -> tuple[float, float, float, float]:
    return (cx - w / 2, bottom - h, cx + w / 2, bottom)


# --- riders ------------------------------------------------------------------------------


def test_a_person_on_a_bicycle_is_one_bicycle_with_both_boxes() -> None:
    person = Detection(box_at(100, 170, 30, 70), 0.7, "person")
    bicycle = Detection(box_at(102, 200, 50, 45), 0.6, "bicycle")
    walker = Detection(box_at(300, 200, 30, 70), 0.8, "person")
    merged = merge_riders([person, bicycle, walker])
    assert merged == [walker, Detection((77.0, 100.0, 127.0, 200.0), 0.7, "bicycle")]


def test_a_pedestrian_beside_a_parked_bicycle_stays_a_pedestrian() -> None:
    beside = Detection(box_at(160, 200, 30, 70), 0.7, "person")  # next to it, not on it
    below = Detection(box_at(100, 260, 30, 70), 0.7, "person")  # in front of it, lower
    bicycle = Detection(box_at(100, 200, 50, 45), 0.6, "bicycle")
    assert sorted(merge_riders([beside, below, bicycle]), key=lambda d: d.box) == sorted(
        [beside, below, bicycle], key=lambda d: d.box
    )


boxes = st.tuples(st.floats(0, 600), st.floats(0, 300), st.floats(2, 120), st.floats(2, 120)).map(
    lambda b: (b[0], b[1], b[0] + b[2], b[1] + b[3])
)
detections = st.lists(
    st.builds(Detection, boxes, st.floats(0.05, 1.0), st.sampled_from(PRODUCT_CLASSES)),
    max_size=8,
)


@settings(max_examples=200, deadline=None)
@given(detections)
def test_merging_riders_only_ever_folds_a_person_into_a_ridden_vehicle(
    dets: list[Detection],
) -> None:
    merged = merge_riders(dets)
    count = {c: sum(d.class_name == c for d in dets) for c in PRODUCT_CLASSES}
    after = {c: sum(d.class_name == c for d in merged) for c in PRODUCT_CLASSES}
    riders = count["person"] - after["person"]
    assert 0 <= riders <= count["bicycle"] + count["motorcycle"]
    assert len(merged) == len(dets) - riders
    for name in ("car", "truck", "bus", "bicycle", "motorcycle"):
        assert after[name] == count[name]
    assert [d.score for d in merged] == sorted((d.score for d in merged), reverse=True)


# --- the vote ------------------------------------------------------------------------------


def test_a_big_confident_view_outweighs_many_far_flickers() -> None:
    assert voted_class({"car": 0.8 * 3000, "truck": 5 * 0.4 * 300}) == "car"
    assert voted_class({}) is None


def test_a_person_with_a_real_share_of_bicycle_is_a_cyclist() -> None:
    assert voted_class({"person": 1000.0, "bicycle": 300.0}) == "bicycle"
    assert voted_class({"person": 1000.0, "motorcycle": 400.0, "bicycle": 10.0}) == "motorcycle"
    assert voted_class({"person": 1000.0, "bicycle": 100.0}) == "person"


weights = st.dictionaries(
    st.sampled_from(PRODUCT_CLASSES), st.just(0.0) | st.floats(1e-3, 1e6), max_size=6
)


@settings(max_examples=200, deadline=None)
@given(weights, st.floats(0.01, 100.0))
def test_the_vote_depends_on_shares_not_on_scale(votes: dict[str, float], k: float) -> None:
    won = voted_class(votes)
    assert won == voted_class({n: w * k for n, w in votes.items()})
    if won is not None and won not in ("bicycle", "motorcycle"):
        assert votes[won] == max(votes.values())


@settings(max_examples=200, deadline=None)
@given(weights, st.floats(0.0, 10.0), st.floats(0.0, 10.0))
def test_heavy_is_monotonic_in_size(votes: dict[str, float], a: float, b: float) -> None:
    """A vehicle heavy at one size is heavy at any larger size; light below."""
    small, large = sorted((a, b))
    light = product_class(votes, size_ratio=small)
    heavy = product_class(votes, size_ratio=large)
    if light in ("truck", "bus"):
        assert heavy == light
    if voted_class(votes) in ("car", "truck", "bus"):
        assert light in ("car", "truck", "bus")
        assert (heavy != "car") == (large >= HEAVY_AREA_RATIO)


def test_a_pickup_the_detector_calls_truck_is_a_car_at_car_size() -> None:
    pickup = {"truck": 3000.0, "car": 1000.0}
    assert product_class(pickup) == "truck"  # no size known: the detector stands
    assert product_class(pickup, size_ratio=1.3) == "car"


def test_a_bus_the_detector_calls_car_is_heavy_by_size() -> None:
    assert product_class({"car": 5000.0}, size_ratio=3.0) == "truck"
    assert product_class({"car": 5000.0, "bus": 900.0, "truck": 200.0}, size_ratio=3.0) == "bus"


def test_the_ground_length_decides_before_the_relative_size() -> None:
    assert product_class({"car": 1.0}, size_ratio=3.0, length_m=4.6) == "car"
    assert product_class({"car": 1.0}, size_ratio=1.0, length_m=HEAVY_LENGTH_M + 2) == "truck"
    assert product_class({"person": 1.0}, length_m=12.0) == "person"


# --- the classifier over tracks --------------------------------------------------------------


def drive(
    classifier: RoadUserClassifier,
    tracker: Tracker,
    counter: LineCounter,
    vehicle: list[list[Detection]],
    t0: float,
) -> list[Crossing]:
    """Feed one road user's frames; return its crossings as classified."""
    crossings: list[Crossing] = []
    for i, dets in enumerate(vehicle):
        tracks = tracker.update(dets, t0 + i / FPS)
        classifier.observe(tracks, dets)
        by_id = {t.id: t for t in tracks}
        classified = [classifier.classify(c, by_id[c.track_id]) for c in counter.update(tracks)]
        crossings += [c for c in classified if c is not None]
    return crossings


def passing(
    w: float, h: float, cls: str, score: float = 0.8, cx: float = 320
) -> list[list[Detection]]:
    """A vehicle driving down the image across ``LINE``, 8 px a frame."""
    return [[Detection(box_at(cx, 120 + 8 * i, w, h), score, cls)] for i in range(22)]


def test_each_detection_votes_with_its_score_times_its_area() -> None:
    """Far away the detector flickers "truck" on a small box; close up it is sure: car."""
    classifier = RoadUserClassifier([LINE])
    tracker = Tracker()
    frames = [
        [
            Detection(
                box_at(320, 120 + 8 * i, 20 + 4 * i, 15 + 3 * i),
                0.4 if i < 8 else 0.8,
                "truck" if i < 8 else "car",
            )
        ]
        for i in range(22)
    ]
    crossings = drive(classifier, tracker, LineCounter(LINE), frames, 0.0)
    assert [c.class_name for c in crossings] == ["car"]


def test_size_at_the_line_overrides_the_detector_once_light_vehicles_were_seen() -> None:
    classifier = RoadUserClassifier([LINE])
    tracker = Tracker(max_missed_s=0.1)
    counter = LineCounter(LINE)
    seen: list[str] = []
    t = 0.0
    cars = [passing(60 + 3 * k, 45, "car") for k in range(MIN_REFERENCE)]
    for vehicle in [passing(130, 80, "car"), *cars, passing(130, 80, "car")]:
        seen += [c.class_name for c in drive(classifier, tracker, counter, vehicle, t)]
        t += 5.0
    pickup = [
        [Detection(d.box, d.score, "truck" if i % 3 else "car") for d in f]
        for i, f in enumerate(passing(70, 50, "car"))
    ]
    seen += [c.class_name for c in drive(classifier, tracker, counter, pickup, t)]
    # the first big one has nothing to compare with; the last is 3.5 cars: heavy
    assert seen == ["car", *["car"] * MIN_REFERENCE, "truck", "car"]


def test_a_part_of_the_line_without_light_vehicles_of_its_own_uses_the_whole_lines() -> None:
    """The cars keep to the left third; a lorry the detector calls car comes in the middle."""
    classifier = RoadUserClassifier([LINE])
    tracker = Tracker(max_missed_s=0.1)
    counter = LineCounter(LINE)
    seen: list[str] = []
    t = 0.0
    cars = [passing(60 + 3 * k, 45, "car", cx=100) for k in range(MIN_REFERENCE)]
    for vehicle in [*cars, passing(130, 80, "car", cx=320)]:
        seen += [c.class_name for c in drive(classifier, tracker, counter, vehicle, t)]
        t += 5.0
    assert seen == [*["car"] * MIN_REFERENCE, "truck"]


def test_length_on_the_ground_decides_with_a_calibration() -> None:
    """A side view: 10 px of image are 1 m of road; vehicles drive along x."""
    calibration = GroundCalibration(
        [[0, 0], [640, 0], [640, 352], [0, 352]], [[0, 0], [64, 0], [64, 35.2], [0, 35.2]]
    )
    line = CountingLine("across", (320.0, 0.0), (320.0, 352.0))
    classes: list[str] = []
    for length_px in (45.0, 90.0):
        classifier = RoadUserClassifier([line], calibration=calibration)
        tracker = Tracker()
        counter = LineCounter(line)
        frames = [
            [Detection(box_at(100 + 10 * i, 250, length_px, 40), 0.8, "car")] for i in range(40)
        ]
        for i, dets in enumerate(frames):
            tracks = tracker.update(dets, i / FPS)
            classifier.observe(tracks, dets)
            by_id = {tr.id: tr for tr in tracks}
            for crossing in counter.update(tracks):
                classified = classifier.classify(crossing, by_id[crossing.track_id])
                assert classified is not None
                classes.append(classified.class_name)
    assert classes == ["car", "truck"]  # 4.5 m and 9 m


# --- a cyclist through the whole pipeline ------------------------------------------------


@dataclass
class ScriptedDetector:
    """Stands in for the model: returns the script's detections for the current frame."""

    script: dict[int, list[Detection]]
    frame: int = 0
    class_names: tuple[str, ...] = PRODUCT_CLASSES
    input_size: int = 416
    last_timing: DetectTiming = field(default_factory=lambda: DetectTiming(0, 0.0, 0.0, 0.0))

    def detect_regions(self, crops: Any, *, frame_size: Any = None) -> list[Detection]:
        return list(self.script.get(self.frame, []))


def test_a_cyclist_seen_as_person_and_bicycle_counts_once_as_a_bicycle(tmp_path: Path) -> None:
    """The bicycle is missed on some frames, the person on others: still one bicycle."""
    width, height = 640, 352
    script: dict[int, list[Detection]] = {}
    frames: list[VideoFrame] = []
    chroma = np.full((height // 2, width // 2), 128, np.uint8)
    texture = np.random.default_rng(7).integers(40, 200, (height, width), dtype=np.uint8)
    for i in range(40):
        bottom = 110.0 + 6.0 * i
        person = Detection(box_at(320, bottom - 30, 30, 70), 0.75, "person")
        bicycle = Detection(box_at(322, bottom, 50, 45), 0.65, "bicycle")
        script[i] = [
            d
            for d in (person, bicycle)
            if not ((d is bicycle and i % 5 == 3) or (d is person and i % 7 == 4))
        ]
        luma = texture.copy()
        x0, y0, x1, y1 = (int(v) for v in box_at(320, bottom, 50, 100))
        luma[max(0, y0) : y1, x0:x1] = 220
        frames.append(VideoFrame(i, i / FPS, luma, chroma, chroma))
    model = tmp_path / "unused.onnx"
    settings_ = CameraConfig.model_validate(
        {
            "source": "x.mp4",
            "model": str(model),
            "detect_every": 1,
            "lines": {"main": {"from": [100, 200], "to": [540, 200]}},
        }
    )
    detector = ScriptedDetector(script)
    pipeline = Pipeline(settings_, width, height, detector=detector)  # type: ignore[arg-type]
    crossings: list[Crossing] = []
    for frame in frames:
        detector.frame = frame.index
        crossings += pipeline.process(frame).crossings
    assert [(c.direction, c.class_name) for c in crossings] == [("in", "bicycle")]


def test_a_head_on_view_shows_no_length_and_the_vote_stands() -> None:
    """Driving down the image the box's bottom edge is the vehicle's width, not its length."""
    calibration = GroundCalibration(
        [[0, 0], [640, 0], [640, 352], [0, 352]], [[0, 0], [64, 0], [64, 35.2], [0, 35.2]]
    )
    classifier = RoadUserClassifier([LINE], calibration=calibration)
    tracker = Tracker()
    wide = [[Detection(box_at(320, 40 + 8 * i, 90, 60), 0.8, "car")] for i in range(40)]
    crossings = drive(classifier, tracker, LineCounter(LINE), wide, 0.0)
    assert [c.class_name for c in crossings] == ["car"]
    track = tracker.active()[0]
    assert classifier.ground_length([d.box for (d,) in wide], track) is None
