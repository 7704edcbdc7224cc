"""MotionDetector on the real street clip and on synthetic scenes built to provoke it.

The clip's frame ranges were checked by eye (frames written to PNG): a car drives toward
the camera in each TRAFFIC range; in each QUIET range nothing moves on the road, while the
trees at the top and the bush at the bottom-left sway and their shadows flicker.
"""

from __future__ import annotations

import numpy as np
import pytest
from numpy.typing import NDArray

from helpers.paths import SHARED_DATA
from smartpole.models.motion import MotionDetector, MotionResult, quality
from smartpole.models.source import VideoSource

VIDEO_DIR = SHARED_DATA / "video"
CLIP = VIDEO_DIR / "street-2lane-640x352.mp4"
TRAFFIC = [(25, 30), (65, 85), (120, 135), (170, 190), (230, 250), (410, 425), (465, 480)]
TRAFFIC += [(700, 715)]
QUIET = [(275, 335), (600, 650), (750, 900)]
#: A car near enough to count covers far more; a far car at the intersection covers less.
CAR_BOX_AREA = 4000
SIGNIFICANT_AREA = 2000


def area(box: tuple[int, int, int, int]) -> int:
    return (box[2] - box[0]) * (box[3] - box[1])


@pytest.fixture(scope="module")
def clip_results() -> list[MotionResult]:
    if not VIDEO_DIR.is_dir():
        pytest.skip(f"shared test video folder {VIDEO_DIR} is absent")
    detector = MotionDetector(640, 352)
    return [detector.detect(frame.gray) for frame in VideoSource(str(CLIP)).frames()]


def test_every_passing_car_produces_a_large_box_in_the_road(
    clip_results: list[MotionResult],
) -> None:
    for lo, hi in TRAFFIC:
        hits = 0
        for result in clip_results[lo:hi]:
            cars = [b for b in result.boxes if area(b) >= CAR_BOX_AREA]
            # The road is the lower part of the frame, below the far intersection.
            hits += any((b[1] + b[3]) / 2 > 130 for b in cars)
        assert hits >= 0.9 * (hi - lo), f"frames {lo}-{hi}: a car in only {hits} frames"


def test_quiet_frames_give_no_box_of_significant_size(clip_results: list[MotionResult]) -> None:
    for lo, hi in QUIET:
        for i, result in enumerate(clip_results[lo:hi], lo):
            big = [b for b in result.boxes if area(b) >= SIGNIFICANT_AREA]
            assert not big, f"frame {i}: {big}"
            assert result.foreground_ratio < 0.05
            assert result.quality == "ok"


def test_trees_never_get_a_large_box(clip_results: list[MotionResult]) -> None:
    # The canopy fills the top of the frame above the far road (y < 80 at 352 rows).
    for i, result in enumerate(clip_results):
        canopy = [b for b in result.boxes if b[3] <= 80 and area(b) >= 500]
        assert not canopy, f"frame {i}: {canopy}"


def test_the_first_frames_are_a_warm_up_without_boxes(clip_results: list[MotionResult]) -> None:
    assert all(r.warming_up and not r.boxes for r in clip_results[:25])
    assert not any(r.warming_up for r in clip_results[25:])


# --- synthetic scenes ------------------------------------------------------------------


def scene(seed: int = 1, h: int = 240, w: int = 320) -> NDArray[np.uint8]:
    """A textured static background (smoothed noise), like asphalt and kerbs."""
    rng = np.random.default_rng(seed)
    base = rng.integers(60, 160, (h // 8, w // 8)).astype(np.uint8)
    return np.repeat(np.repeat(base, 8, 0), 8, 1)


def noisy(img: NDArray[np.uint8], rng: np.random.Generator) -> NDArray[np.uint8]:
    return np.clip(img + rng.normal(0, 2, img.shape), 0, 255).astype(np.uint8)


def warm(detector: MotionDetector, img: NDArray[np.uint8], rng: np.random.Generator) -> None:
    for _ in range(detector.warmup_frames + 5):
        detector.detect(noisy(img, rng))


def test_a_moving_block_is_boxed_where_it_is() -> None:
    rng = np.random.default_rng(0)
    bg = scene()
    detector = MotionDetector(320, 240, work_width=160)
    assert detector.factor == 2
    warm(detector, bg, rng)
    for step in range(10):
        frame = bg.copy()
        x = 40 + 12 * step
        frame[100:140, x : x + 50] = 230
        result = detector.detect(noisy(frame, rng))
        assert not result.warming_up
        assert len(result.boxes) == 1
        assert np.abs(np.subtract(result.boxes[0], (x, 100, x + 50, 140))).max() <= 4


def test_static_noise_and_small_specks_give_no_boxes() -> None:
    rng = np.random.default_rng(1)
    bg = scene()
    detector = MotionDetector(320, 240, work_width=160, min_area=150)
    warm(detector, bg, rng)
    frame = bg.copy()
    frame[50:56, 50:56] = 255  # 36 pixels: below min_area even after closing grows it
    for _ in range(5):
        assert detector.detect(noisy(frame, rng)).boxes == []


def test_a_cast_shadow_is_not_foreground_but_a_dark_car_is() -> None:
    rng = np.random.default_rng(2)
    bg = scene()
    detector = MotionDetector(320, 240, work_width=160)
    warm(detector, bg, rng)
    shadowed = bg.copy()
    shadowed[60:160, 60:200] = (shadowed[60:160, 60:200] * 0.6).astype(np.uint8)
    assert detector.detect(noisy(shadowed, rng)).boxes == []
    dark_car = bg.copy()
    dark_car[60:160, 60:200] = 20
    assert len(detector.detect(noisy(dark_car, rng)).boxes) == 1


def test_a_stopped_car_is_not_absorbed_at_once() -> None:
    rng = np.random.default_rng(3)
    bg = scene()
    detector = MotionDetector(320, 240, work_width=160, alpha=0.02)
    warm(detector, bg, rng)
    frame = bg.copy()
    frame[100:150, 100:180] = 240
    # 1 / alpha = 50 frames would absorb it at the background rate; it lasts 2.5x that.
    for i in range(125):
        result = detector.detect(noisy(frame, rng))
        assert result.boxes, f"stopped car lost after {i} frames"


def test_swaying_branches_raise_their_own_threshold() -> None:
    rng = np.random.default_rng(4)
    bg = scene()
    detector = MotionDetector(320, 240, work_width=160)
    sway = [bg.copy() for _ in range(2)]
    sway[1][0:60, :] = np.roll(bg[0:60, :], 8, axis=1)  # leaves shift back and forth
    for _ in range(300):
        result = detector.detect(noisy(sway[rng.integers(0, 2)], rng))
    big = [b for b in result.boxes if area(b) >= 1500]
    assert not big, f"still boxing the branches after 300 frames: {big}"


def test_quality_flags_dark_blocked_and_shaken() -> None:
    rng = np.random.default_rng(5)
    bg = scene()
    detector = MotionDetector(320, 240, work_width=160)
    warm(detector, bg, rng)
    shaken = detector.detect(np.roll(bg, 24, axis=1))
    assert (shaken.shaken, shaken.boxes, quality(shaken)) == (True, [], "shaken")
    assert shaken.foreground_ratio > 0.5
    assert detector.detect(noisy(bg, rng)).quality == "ok"
    dark = detector.detect(np.full((240, 320), 18, np.uint8))
    assert (dark.dark, dark.quality, dark.boxes) == (True, "dark", [])
    blocked = detector.detect(np.full((240, 320), 120, np.uint8))
    assert (blocked.blocked, blocked.quality, blocked.boxes) == (True, "blocked", [])
    full_range = MotionDetector(320, 240, black_level=0)
    assert not full_range.detect(np.full((240, 320), 18, np.uint8)).dark


def test_a_new_scene_restarts_the_background_after_a_few_frames() -> None:
    rng = np.random.default_rng(6)
    detector = MotionDetector(320, 240, work_width=160)
    warm(detector, scene(6), rng)
    other = scene(7)
    results = [detector.detect(noisy(other, rng)) for _ in range(4)]
    assert [r.shaken for r in results[:3]] == [True, True, True]
    assert results[3].warming_up  # camera turned: learning the new view
    for _ in range(detector.warmup_frames):
        last = detector.detect(noisy(other, rng))
    assert (last.warming_up, last.boxes) == (False, [])


def test_working_resolution_and_input_checks() -> None:
    assert MotionDetector(1280, 720).factor == 4
    assert (MotionDetector(1920, 1080).work_width, MotionDetector(1920, 1080).work_height) == (
        320,
        180,
    )
    assert MotionDetector(640, 352).factor == 2
    assert MotionDetector(200, 100).factor == 1
    detector = MotionDetector(320, 240)
    with pytest.raises(ValueError, match="320"):
        detector.detect(np.zeros((240, 321), np.uint8))
    with pytest.raises(ValueError, match="alpha"):
        MotionDetector(320, 240, alpha=0.0)


def _seconds_until_absorbed(fps: float, paced: bool) -> float:
    """Stream seconds from a block appearing in a still scene (a car that parks) until the
    background has taken it in and it gives no box any more."""
    rng = np.random.default_rng(11)
    still = rng.integers(60, 120, (240, 320), dtype=np.uint8)
    parked = still.copy()
    parked[100:140, 120:200] = 220
    detector = MotionDetector(320, 240)
    if paced:
        detector.pace(1.0 / fps)
    for _ in range(int(3 * fps)):
        detector.detect(still)
    for i in range(int(120 * fps)):
        if not detector.detect(parked).boxes:
            return i / fps
    raise AssertionError("the parked block was never absorbed")


@pytest.mark.parametrize("fps", [5.0, 60.0])
def test_a_parked_car_fades_into_the_background_after_the_same_time_at_any_frame_rate(
    fps: float,
) -> None:
    reference = _seconds_until_absorbed(25.0, paced=True)
    assert reference > 1.0
    assert _seconds_until_absorbed(fps, paced=True) == pytest.approx(reference, rel=0.2)
    # Per frame, unpaced, the same memory would be 5x or 0.4x as long in time.
    assert _seconds_until_absorbed(fps, paced=False) != pytest.approx(reference, rel=0.5)


def test_pacing_keeps_the_warm_up_a_second() -> None:
    detector = MotionDetector(320, 240)
    for fps, frames in ((5.0, 5), (25.0, 25), (60.0, 60)):
        detector.pace(1.0 / fps)
        assert detector.warmup_frames == frames
    detector.pace(0.0)  # an unknown interval changes nothing
    assert detector.warmup_frames == 60
