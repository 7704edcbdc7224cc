"""Camera sway and drift: estimated against the background and compensated before it.

Real frames of the street clip are moved by known amounts (whole frame pixels, the edge
repeated where the shift uncovers it), the way a pole camera swaying in the wind sees the
scene move: a sinusoidal sway of a few pixels each way, plus a slow drift. The estimate
must recover the known offset, and the sway must not show up as motion.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from helpers.paths import SHARED_DATA
from smartpole.agent.config.cameras import CameraConfig
from smartpole.models import kernels
from smartpole.models.frames import VideoFrame
from smartpole.models.global_motion import GlobalMotion
from smartpole.models.motion import MotionDetector, MotionResult
from smartpole.models.pipeline import Pipeline
from smartpole.models.shake_meter import ShakeMeter
from smartpole.models.source import VideoSource

CLIP = SHARED_DATA / "video" / "street-2lane-640x352.mp4"
MODEL = SHARED_DATA / "models" / "yolox-nano-coco-416.onnx"
#: Frames checked by eye (tests/models/test_motion.py): nothing moves on the road.
QUIET = (275, 335)
SIGNIFICANT_AREA = 2000
PAD = 32

Sway = Callable[[int], tuple[int, int]]


def moved(img: NDArray[np.uint8], dx: int, dy: int) -> NDArray[np.uint8]:
    """``img`` with its content moved by (dx, dy) pixels, the edge repeated behind it."""
    h, w = img.shape
    padded = np.pad(img, PAD, mode="edge")
    return np.ascontiguousarray(padded[PAD - dy : PAD - dy + h, PAD - dx : PAD - dx + w])


def sway(i: int) -> tuple[int, int]:
    """A pole in the wind: +-3 px across, +-2 px up and down, at different periods."""
    return round(3 * math.sin(2 * math.pi * i / 40)), round(2 * math.sin(2 * math.pi * i / 55))


def sway_and_drift(i: int) -> tuple[int, int]:
    """The sway plus a mount that creeps 1 px every 2 s to the right, 1 px every 4 s down."""
    dx, dy = sway(i)
    return dx + i // 50, dy + i // 100


@pytest.fixture(scope="module")
def clip() -> list[NDArray[np.uint8]]:
    if not CLIP.is_file():
        pytest.skip(f"shared test video {CLIP} is absent")
    kernels.warm_up()
    frames = []
    for frame in VideoSource(str(CLIP)).frames():
        frames.append(frame.gray.copy())
        if len(frames) > QUIET[1]:
            break
    return frames


def run(frames: list[NDArray[np.uint8]], motion: Sway) -> list[MotionResult]:
    detector = MotionDetector(640, 352)
    return [detector.detect(moved(gray, *motion(i))) for i, gray in enumerate(frames)]


def area(box: tuple[int, int, int, int]) -> int:
    return (box[2] - box[0]) * (box[3] - box[1])


def iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(0, w) * max(0, h)
    return inter / (area(a) + area(b) - inter)


def big_boxes(result: MotionResult) -> list[tuple[int, int, int, int]]:
    return [b for b in result.boxes if area(b) >= SIGNIFICANT_AREA]


# --- the estimator ------------------------------------------------------------------------


def texture(seed: int, h: int, w: int, grain: int) -> NDArray[np.uint8]:
    """Smoothed noise: asphalt, kerbs and foliage at a scale of ``grain`` pixels."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(0.0, 1.0, (h + grain, w + grain)).cumsum(0).cumsum(1)
    box = noise[grain:, grain:] - noise[:-grain, grain:] - noise[grain:, :-grain]
    box += noise[:-grain, :-grain]
    box = (box - box.mean()) / (box.std() + 1e-9)
    return np.clip(128 + 40 * box, 0, 255).astype(np.uint8)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    steps=st.lists(st.tuples(st.integers(-2, 2), st.integers(-2, 2)), min_size=1, max_size=6),
    grain=st.sampled_from([3, 6, 10]),
)
def test_the_estimate_follows_a_known_shift_of_a_textured_image(
    seed: int, steps: list[tuple[int, int]], grain: int
) -> None:
    """A camera moving up to 2 px a frame (a fast sway at 25 fps, a slow one at 5 fps), to
    at most 8 px from the start (the search reaches 8 on a 640-wide camera): on the
    working image that is whole and half pixels, and every estimate of the offset lands
    within half a frame pixel."""
    native = texture(seed, 2 * 120, 2 * 160, grain)
    bg = np.empty((120, 160), np.uint8)
    kernels.downscale_box(native, 2, bg)
    small = np.empty_like(bg)
    estimator = GlobalMotion(small.shape)
    x = y = 0
    for sx, sy in steps:
        x, y = max(-7, min(7, x + sx)), max(-7, min(7, y + sy))
        kernels.downscale_box(moved(native, x, y), 2, small)
        ex, ey = estimator.estimate(small, bg.astype(np.float32))
        assert abs(2 * ex - x) <= 0.5, ((x, y), (2 * ex, 2 * ey))
        assert abs(2 * ey - y) <= 0.5, ((x, y), (2 * ex, 2 * ey))


def test_a_steady_camera_is_estimated_at_exactly_zero() -> None:
    """No resampling (and no blur) for a camera that does not move, noise or not."""
    rng = np.random.default_rng(3)
    scene = texture(3, 120, 160, 4)
    estimator = GlobalMotion(scene.shape)
    bg = scene.astype(np.float32)
    for _ in range(20):
        frame = np.clip(scene + rng.normal(0, 3, scene.shape), 0, 255).astype(np.uint8)
        assert estimator.estimate(frame, bg) == (0.0, 0.0)


# --- the motion stage on real frames ------------------------------------------------------


@pytest.mark.parametrize("motion", [sway, sway_and_drift], ids=["sway", "sway+drift"])
def test_the_camera_offset_is_recovered_within_a_pixel(
    clip: list[NDArray[np.uint8]], motion: Sway
) -> None:
    """``shift`` is the offset since the background started (with the first frame)."""
    x0, y0 = motion(0)
    for i, result in enumerate(run(clip, motion)):
        dx, dy = motion(i)
        ex, ey = result.shift
        assert math.hypot(ex - (dx - x0), ey - (dy - y0)) <= 0.75, (i, (dx, dy), result.shift)


@pytest.mark.parametrize("motion", [sway, sway_and_drift], ids=["sway", "sway+drift"])
def test_a_swaying_camera_sees_no_motion_where_nothing_moves(
    clip: list[NDArray[np.uint8]], motion: Sway
) -> None:
    results = run(clip, motion)
    assert not any(r.shaken for r in results), "the sway was taken for a shaken camera"
    for i in range(*QUIET):
        assert not big_boxes(results[i]), f"frame {i}: {big_boxes(results[i])}"
        assert results[i].foreground_ratio < 0.05, f"frame {i}: {results[i].foreground_ratio}"


def test_a_swaying_still_view_gives_no_motion_boxes(clip: list[NDArray[np.uint8]]) -> None:
    """One real frame, swayed and drifting, with sensor noise: nothing in it moves. (The
    per-pixel thresholds are still learning just after the warm-up: a box of a couple of
    hundred pixels may show there, as it may for a steady camera.)"""
    rng = np.random.default_rng(9)
    still = clip[QUIET[0]]
    detector = MotionDetector(640, 352)
    boxed = []
    for i in range(150):
        frame = moved(still, *sway_and_drift(i))
        noisy = np.clip(frame + rng.normal(0, 2, frame.shape), 0, 255).astype(np.uint8)
        result = detector.detect(noisy)
        assert not result.shaken, f"frame {i}"
        assert all((b[2] - b[0]) * (b[3] - b[1]) < 500 for b in result.boxes), f"frame {i}"
        if result.boxes:
            boxed.append(i)
    assert len(boxed) <= 2, f"boxes on frames {boxed}"


def test_cars_are_still_boxed_where_they_are_in_a_swaying_frame(
    clip: list[NDArray[np.uint8]],
) -> None:
    """Boxes come back in the frame's pixels: a car in the swayed frame is boxed where
    the same car is boxed without sway, give or take the sway and the box grid."""
    steady = run(clip, lambda i: (0, 0))
    swayed = run(clip, sway)
    x0, y0 = sway(0)
    for i in range(65, 85):  # a car driving toward the camera (test_motion's TRAFFIC)
        dx, dy = sway(i)
        car = max(steady[i].boxes, key=area)
        want = (car[0] + dx - x0, car[1] + dy - y0, car[2] + dx - x0, car[3] + dy - y0)
        assert max(iou(want, box) for box in swayed[i].boxes) >= 0.7, (i, want, swayed[i])


# --- what operators see ----------------------------------------------------------------------


def test_the_shake_meter_reports_the_sway_and_the_drift() -> None:
    meter = ShakeMeter(window_s=10.0)
    fps = 25.0
    for i in range(int(30 * fps)):
        t = i / fps
        meter.add(t, 4.0 * math.sin(2 * math.pi * t / 2.0), 0.0)
    assert meter.shake_px == pytest.approx(4.0 / math.sqrt(2), rel=0.02)
    for i in range(int(30 * fps), int(45 * fps)):  # the wind drops; the mount has crept
        meter.add(i / fps, 5.0, 1.0)
    assert meter.shake_px == pytest.approx(0.0, abs=1e-6)
    assert meter.drift_px == pytest.approx(math.hypot(5.0, 1.0))


# --- the pipeline: the detector sleeps, the shake level is reported --------------------------


@pytest.mark.skipif(not MODEL.is_file(), reason=f"shared model {MODEL} is absent")
def test_a_swaying_still_scene_lets_the_detector_sleep_and_reports_the_shake() -> None:
    """After the warm-up (whole-frame looks) a swaying view of a still scene gives the
    detector nothing to look at; the stats carry the sway (+-3 px across, +-2 px up and
    down: an RMS of about 2.5 px) and the drift ((2, 1) px by frame 100, plus the sway's
    position then)."""
    settings = CameraConfig.model_validate(
        # No periodic whole-frame pass: only motion may wake the detector here.
        {"source": str(CLIP), "model": str(MODEL), "lines": {"main": LINE}, "full_frame_s": 60}
    )
    pipeline = Pipeline(settings, 640, 352)
    rng = np.random.default_rng(11)
    still = texture(11, 352, 640, 6)
    chroma = np.full((176, 320), 128, np.uint8)
    detected = []
    count = 101
    for i in range(count):
        luma = moved(still, *sway_and_drift(i))
        luma = np.clip(luma + rng.normal(0, 2, luma.shape), 0, 255).astype(np.uint8)
        result = pipeline.process(VideoFrame(i, i / 25.0, luma, chroma, chroma.copy()))
        assert result.quality == "ok", f"frame {i}"
        if result.detected:
            detected.append(i)
    assert detected, "the warm-up looks at the whole frame"
    assert max(detected) < pipeline._motion.warmup_frames, detected
    stats = pipeline.stats
    assert 1.8 <= stats.shake_px <= 3.2, stats.shake_px
    dx, dy = sway_and_drift(count - 1)
    assert stats.drift_px == pytest.approx(math.hypot(dx, dy), abs=0.75)
    assert stats.to_dict()["shake_px"] == stats.shake_px


LINE = {"from": [150, 230], "to": [640, 230]}
