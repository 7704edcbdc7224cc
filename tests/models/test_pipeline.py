"""The camera pipeline in-process: its settings, the street clip end to end, synthetic scenes.

The clip's ground truth is ``tests/data/street-2lane-labels.json`` (labelled by eye; see its
"method"). Classes are held to the labels by ``tests/models/test_analyze.py``; here the counts
are checked per direction, with every crossing matched to a labelled one in time, so a
plumbing fault (a lost or duplicated crossing, a summary in the wrong interval) shows up
on its own.
"""

from __future__ import annotations

import itertools
import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from helpers import street_geo
from helpers.paths import SHARED_DATA, TEST_DATA
from smartpole.agent.config.cameras import COCO_TRAFFIC, CameraConfig
from smartpole.models.counting import Crossing
from smartpole.models.detections import drop_parts, load_detector
from smartpole.models.detector import Detection
from smartpole.models.errors import AnalyticsConfigError, ModelError
from smartpole.models.frames import VideoFrame
from smartpole.models.pipeline import Pipeline
from smartpole.models.roadside_stage import NO_GEO, RoadsideSettings
from smartpole.models.scene import Scene
from smartpole.models.source import VideoSource
from smartpole.models.zones import ZoneEvent

SHARED = SHARED_DATA
CLIP = SHARED / "video" / "street-2lane-640x352.mp4"
MODEL = SHARED / "models" / "yolox-nano-coco-416.onnx"
LABELS = json.loads((TEST_DATA / "street-2lane-labels.json").read_text())
LINE = {"from": [150, 230], "to": [640, 230]}
INTERVAL_S = 12.0
#: The cars parked at the right edge (checked by eye): they stand there the whole clip.
PARKED = [[560, 140], [640, 140], [640, 200], [560, 200]]
needs_data = pytest.mark.skipif(
    not (CLIP.is_file() and MODEL.is_file()), reason=f"shared test data {SHARED} is absent"
)


def config(**extra: Any) -> CameraConfig:
    settings = {"source": str(CLIP), "model": str(MODEL), "lines": {"main": LINE}}
    return CameraConfig.model_validate({**settings, **extra})


@dataclass
class ClipRun:
    frames: int = 0
    detected: list[int] = field(default_factory=list)
    regions: list[list[tuple[int, int, int, int]]] = field(default_factory=list)
    qualities: Counter[str] = field(default_factory=Counter)
    crossings: list[Crossing] = field(default_factory=list)
    events: list[ZoneEvent] = field(default_factory=list)
    summaries: list[dict[str, Any]] = field(default_factory=list)
    pipeline: Pipeline | None = None


@pytest.fixture(scope="module")
def clip_run() -> ClipRun:
    """The whole clip once, with a no-stopping zone on the parked cars (2 s to an event)."""
    if not (CLIP.is_file() and MODEL.is_file()):
        pytest.skip(f"shared test data {SHARED} is absent")
    settings = config(
        interval_s=INTERVAL_S,
        zones={"parked": {"polygon": PARKED, "kind": "no_stopping"}},
        stopped_after_s=2.0,
    )
    run = ClipRun()
    for frame in VideoSource(str(CLIP)).frames():
        if run.pipeline is None:
            run.pipeline = Pipeline(settings, frame.width, frame.height)
        result = run.pipeline.process(frame)
        run.frames += 1
        run.qualities[result.quality] += 1
        if result.detected:
            run.detected.append(frame.index)
            run.regions.append(result.regions)
        run.crossings += result.crossings
        run.events += result.events
        run.summaries += result.summaries
    assert run.pipeline is not None
    run.summaries += run.pipeline.finish()
    return run


def labelled_times() -> list[tuple[float, str]]:
    fps = float(LABELS["fps"])
    return [(c["frame"] / fps, c["direction"]) for c in LABELS["crossings"]]


# --- the street clip ---------------------------------------------------------------------


@needs_data
def test_every_labelled_crossing_is_counted_once_in_its_direction(clip_run: ClipRun) -> None:
    truth = labelled_times()
    got = sorted((c.t_s, c.direction) for c in clip_run.crossings)
    assert Counter(d for _, d in got) == Counter(d for _, d in truth)
    for (t_got, d_got), (t_true, d_true) in zip(got, sorted(truth), strict=True):
        assert d_got == d_true
        assert abs(t_got - t_true) < 0.5, f"crossing at {t_got:.2f} s, labelled {t_true:.2f} s"
    assert len({c.track_id for c in clip_run.crossings}) == len(clip_run.crossings)


@needs_data
def test_summaries_cover_the_clip_by_interval_and_hold_every_crossing(clip_run: ClipRun) -> None:
    starts = [s["interval_start"] for s in clip_run.summaries]
    assert starts == [0.0, 12.0, 24.0, 36.0]
    assert [bool(s.get("partial")) for s in clip_run.summaries] == [False, False, False, True]
    assert sum(s["quality"]["frames"] for s in clip_run.summaries) == clip_run.frames == 905
    for summary in clip_run.summaries:
        start = summary["interval_start"]
        wanted = Counter(
            (c.direction, c.class_name)
            for c in clip_run.crossings
            if start <= c.t_s < start + INTERVAL_S
        )
        got = Counter(
            {
                (direction, name): n
                for direction, per_class in summary["lines"]["main"].items()
                for name, n in per_class.items()
                if n
            }
        )
        assert got == wanted, f"interval {start}"
        assert set(summary["lines"]["main"]["in"]) == set(COCO_TRAFFIC.values())
        assert summary["quality"]["state"] == "ok"


@needs_data
def test_the_detector_runs_on_motion_regions_not_on_every_frame(clip_run: ClipRun) -> None:
    assert clip_run.pipeline is not None
    settings = clip_run.pipeline.config
    runs = len(clip_run.detected)
    assert runs < 0.6 * clip_run.frames, f"detector ran on {runs} of {clip_run.frames} frames"
    whole = (0, 0, 640, 352)
    for index, regions in zip(clip_run.detected, clip_run.regions, strict=True):
        assert 1 <= len(regions) <= settings.max_regions
        if index < 24:  # warm-up, a second (24 frames): motion cannot tell, the whole frame is used
            assert regions == [whole]
        for x0, y0, x1, y1 in regions:
            assert (x1 - x0 == y1 - y0) or (x0, y0, x1, y1) == whole
    stats = clip_run.pipeline.stats
    assert stats.detector_runs == runs
    assert stats.inference_ms > 0
    assert stats.motion_ms > 0
    assert stats.cpu_s > 0
    assert stats.crossings == len(clip_run.crossings)


@needs_data
def test_a_car_parked_in_a_no_stopping_zone_raises_one_event(clip_run: ClipRun) -> None:
    kinds = Counter((e.kind, e.zone) for e in clip_run.events)
    assert kinds[("stopped_vehicle", "parked")] >= 1
    assert all(e.class_name in ("car", "truck") for e in clip_run.events)
    assert len({(e.kind, e.track_id) for e in clip_run.events}) == len(clip_run.events)
    in_summaries = [e for s in clip_run.summaries for e in s["events"]]
    assert len(in_summaries) == len(clip_run.events)
    occupancy = [s["zones"]["parked"]["occupancy"] for s in clip_run.summaries]
    assert max(occupancy) > 0.5


# --- synthetic scenes --------------------------------------------------------------------


def frames(luma: np.ndarray, count: int, fps: float = 25.0) -> list[VideoFrame]:
    h, w = luma.shape
    chroma = np.full(((h + 1) // 2, (w + 1) // 2), 128, np.uint8)
    return [VideoFrame(i, i / fps, luma, chroma, chroma) for i in range(count)]


@needs_data
def test_a_still_scene_wakes_the_detector_while_motion_warms_up_then_once_a_second() -> None:
    rng = np.random.default_rng(7)
    luma = rng.integers(40, 200, (352, 640), dtype=np.uint8)
    pipeline = Pipeline(config(), 640, 352)
    results = [pipeline.process(f) for f in frames(luma, 125)]
    detected = [r.index for r in results if r.detected]
    assert detected, "the warm-up looks at the whole frame"
    after = [i for i in detected if i >= 25]
    # The periodic whole-frame pass (full_frame_s 1 s at 25 fps), and nothing else.
    assert len(after) == 4
    assert all(b - a == 25 for a, b in itertools.pairwise(after))
    assert all(results[i].regions == [(0, 0, 640, 352)] for i in after)
    assert all(r.quality == "ok" and not r.crossings for r in results)
    assert pipeline.stats.detector_runs == len(detected)


@needs_data
@pytest.mark.parametrize(("fps", "every"), [(5.0, 1), (10.0, 1), (12.5, 2), (25.0, 4), (60.0, 9)])
def test_the_detection_cadence_is_in_stream_time_whatever_the_frame_rate(
    fps: float, every: int
) -> None:
    """Motion on every frame: the detector runs every ``detect_interval_s`` (0.16 s)."""
    rng = np.random.default_rng(3)
    still = rng.integers(40, 200, (352, 640), dtype=np.uint8)
    pipeline = Pipeline(config(full_frame_s=60.0), 640, 352)
    count = int(4 * fps)
    for frame in frames(still, count, fps):  # warm-up on a still scene
        pipeline.process(frame)
    detected = []
    for i in range(count):
        moving = still.copy()
        x = 100 + (i * 7) % 400
        moving[150:200, x : x + 60] = 255  # a bright block that moves every frame
        result = pipeline.process(VideoFrame(count + i, (count + i) / fps, moving, *_grey(still)))
        if result.detected:
            detected.append(i)
    gaps = {b - a for a, b in itertools.pairwise(detected)}
    assert gaps == {every}, (fps, detected)


def _grey(luma: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    h, w = luma.shape
    chroma = np.full(((h + 1) // 2, (w + 1) // 2), 128, np.uint8)
    return chroma, chroma


@needs_data
def test_a_dark_camera_is_reported_and_never_searched() -> None:
    pipeline = Pipeline(config(interval_s=1.0), 640, 352)
    results = [pipeline.process(f) for f in frames(np.full((352, 640), 16, np.uint8), 40)]
    assert {r.quality for r in results} == {"dark"}
    assert not any(r.detected for r in results)
    summaries = [s for r in results for s in r.summaries]
    assert summaries
    assert summaries[0]["quality"]["state"] == "dark"
    assert pipeline.stats.quality == "dark"


@needs_data
def test_a_frame_of_another_size_is_refused() -> None:
    pipeline = Pipeline(config(), 640, 352)
    with pytest.raises(AnalyticsConfigError, match="640x352"):
        pipeline.process(frames(np.zeros((360, 640), np.uint8), 1)[0])
    assert pipeline.finish() == []


@needs_data
def test_dropped_frames_reach_the_summary() -> None:
    pipeline = Pipeline(config(interval_s=1.0), 640, 352)
    pipeline.note_skipped(3)
    out = [
        s
        for f in frames(np.full((352, 640), 90, np.uint8), 30)
        for s in pipeline.process(f).summaries
    ]
    assert out[0]["quality"]["dropped"] == 3
    assert pipeline.stats.skipped == 3


# --- settings ----------------------------------------------------------------------------


def test_a_missing_model_file_is_a_model_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="model file not found"):
        load_detector(config(model=str(tmp_path / "nope.onnx")))


def test_a_calibration_that_is_no_quadrilateral_is_refused_before_any_frame() -> None:
    """The schema itself (pure Python, so the config check gives the line) refuses it; the
    numeric checks of ``GroundCalibration`` stay behind it for what only numerics see."""
    square = [[0, 0], [1, 0], [1, 1], [0, 1]]
    with pytest.raises(ValidationError, match="two of the 4 points are the same"):
        config(calibration={"image": [[0, 0]] * 4, "ground_m": square})


def test_geometry_outside_the_frame_is_refused_once_the_size_is_known() -> None:
    line = Scene.of(config(lines={"far": {"from": [150, 230], "to": [700, 230]}}))
    with pytest.raises(AnalyticsConfigError, match=r"outside the 640x352 frame"):
        line.validate_frame(640, 352)
    zone = Scene.of(config(zones={"z": {"polygon": [[0, 0], [10, 0], [10, 400]]}}))
    with pytest.raises(AnalyticsConfigError, match="outside"):
        zone.validate_frame(640, 352)
    zone.validate_frame(640, 400)


def test_the_pipeline_checks_the_frame_size_before_it_loads_anything() -> None:
    settings = config(lines={"far": {"from": [150, 230], "to": [700, 230]}})
    with pytest.raises(AnalyticsConfigError, match=r"outside the 640x352 frame"):
        Pipeline(settings, 640, 352)


def test_parts_of_a_vehicle_are_not_counted_as_vehicles() -> None:
    pickup = Detection((100.0, 100.0, 300.0, 220.0), 0.8, "car")
    cab = Detection((180.0, 110.0, 260.0, 180.0), 0.4, "car")
    rider = Detection((150.0, 90.0, 190.0, 200.0), 0.7, "person")
    neighbour = Detection((280.0, 100.0, 420.0, 220.0), 0.7, "car")
    kept = drop_parts([pickup, cab, rider, neighbour])
    assert kept == [pickup, rider, neighbour]
    assert math.isclose(pickup.score, 0.8)


@pytest.mark.soak
@needs_data
@pytest.mark.parametrize("detect_every", [1, 2, 4, 5])
def test_the_counts_do_not_hang_on_the_detection_cadence(detect_every: int) -> None:
    """The default cadence (3, in ``clip_run``) sits inside a range that counts exactly."""
    settings = config(detect_every=detect_every)
    pipeline: Pipeline | None = None
    crossings: list[Crossing] = []
    for frame in VideoSource(str(CLIP)).frames():
        if pipeline is None:
            pipeline = Pipeline(settings, frame.width, frame.height)
        crossings += pipeline.process(frame).crossings
    got = sorted(c.t_s for c in crossings if c.direction == "in")
    truth = sorted(t for t, d in labelled_times() if d == "in")
    assert len(got) == len(truth)
    assert all(abs(a - b) < 0.5 for a, b in zip(got, truth, strict=True))
    assert not [c for c in crossings if c.direction == "out"]


@needs_data
@pytest.mark.parametrize(("fps", "every"), [(10.0, 1), (25.0, 2), (60.0, 6)])
def test_a_camera_reporting_to_the_rsu_is_looked_at_every_message_period(
    fps: float, every: int
) -> None:
    """With roadside output the detector runs at least every 0.1 s (10 Hz), not every
    0.16 s: a road user's position is never measured longer ago than the RSU accepts."""
    rng = np.random.default_rng(3)
    still = rng.integers(40, 200, (352, 640), dtype=np.uint8)
    geo = config(full_frame_s=60.0, calibration=street_geo.calibration())
    pipeline = Pipeline(geo, 640, 352, roadside=RoadsideSettings(rate_hz=10.0))
    assert pipeline.roadside is not None
    count = int(4 * fps)
    for frame in frames(still, count, fps):
        pipeline.process(frame)
    detected = []
    for i in range(count):
        moving = still.copy()
        x = 100 + (i * 7) % 400
        moving[150:200, x : x + 60] = 255
        result = pipeline.process(VideoFrame(count + i, (count + i) / fps, moving, *_grey(still)))
        if result.detected:
            detected.append(i)
    assert {b - a for a, b in itertools.pairwise(detected)} == {every}, (fps, detected)


@needs_data
def test_roadside_output_without_a_geo_calibration_is_refused_and_says_why() -> None:
    with pytest.raises(AnalyticsConfigError) as refused:
        Pipeline(config(), 640, 352, roadside=RoadsideSettings())
    assert str(refused.value) == NO_GEO
    assert Pipeline(config(), 640, 352).roadside is None
