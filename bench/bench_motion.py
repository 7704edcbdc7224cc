"""Speed of the motion stage against OpenCV's MOG2, and the Numba compile/cache cost.

Both run side by side on one core (this process pinned to one CPU, ``NUMBA_NUM_THREADS=1``,
``cv2.setNumThreads(1)``) on the same gray frames at the same working resolution: the street
clip (../shared/data/video/street-2lane-640x352.mp4) decoded once into memory, luma box-
averaged to 320x176, which is what ``MotionDetector(640, 352)`` works on. Each pass starts a
fresh detector / subtractor and feeds every frame; the best of ``--passes`` counts.

The comparison is deliberately conservative: ours is the whole stage (background model,
shadow test, opening and closing, connected components, boxes), MOG2 only its ``apply``
(the foreground mask). For context it also prints the stage from full-resolution luma (with
the downscale) and MOG2 followed by OpenCV's own morphology and connected components.

Compile cost: a fresh interpreter with an empty ``NUMBA_CACHE_DIR`` runs
``kernels.warm_up()`` (first start on a new box), then a second one with that cache (every
later start).
"""

from __future__ import annotations

import argparse
import os

os.environ["NUMBA_NUM_THREADS"] = "1"  # before numba is imported, or it is ignored

import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray

from smartpole.models import kernels
from smartpole.models.motion import MotionDetector
from smartpole.models.source import VideoSource

REPO = Path(__file__).resolve().parent.parent
CLIP = REPO.parent / "shared" / "data" / "video" / "street-2lane-640x352.mp4"
FACTOR = 2

Frames = list[NDArray[np.uint8]]


def decode(path: Path) -> tuple[Frames, Frames]:
    """Full-resolution luma planes and their working-resolution box averages."""
    full: Frames = []
    small: Frames = []
    for frame in VideoSource(str(path)).frames():
        full.append(frame.gray)
        out = np.empty((frame.height // FACTOR, frame.width // FACTOR), np.uint8)
        kernels.downscale_box(frame.gray, FACTOR, out)
        small.append(out)
    return full, small


def best_fps(run: Callable[[], int], passes: int) -> float:
    best = float("inf")
    frames = 0
    for _ in range(passes):
        started = time.perf_counter()
        frames = run()
        best = min(best, time.perf_counter() - started)
    return frames / best


def ours(frames: Frames) -> Callable[[], int]:
    h, w = frames[0].shape

    def run() -> int:
        detector = MotionDetector(w, h, work_width=w // FACTOR if h > 200 else w)
        for gray in frames:
            detector.detect(gray)
        return len(frames)

    return run


def mog2(frames: Frames, stage: bool = False) -> Callable[[], int]:
    kernel = np.ones((3, 3), np.uint8)

    def run() -> int:
        subtractor = cv2.createBackgroundSubtractorMOG2()
        for gray in frames:
            mask = subtractor.apply(gray)
            if stage:
                _, mask = cv2.threshold(mask, 200, 255, cv2.THRESH_BINARY)  # drop shadows
                mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, kernel)
                mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, kernel, iterations=2)
                cv2.connectedComponentsWithStats(mask, connectivity=8)
        return len(frames)

    return run


def compile_times() -> tuple[float, float]:
    """warm_up() seconds in a fresh interpreter with an empty cache, then with that cache."""
    code = "from smartpole.models.kernels import warm_up; print(warm_up())"
    with tempfile.TemporaryDirectory(prefix="numba-cache-") as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache}
        runs = [
            subprocess.run(
                [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
            )
            for _ in range(2)
        ]
    first, cached = (float(run.stdout.strip()) for run in runs)
    return first, cached


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--passes", type=int, default=3)
    args = parser.parse_args()
    if not CLIP.is_file():
        raise SystemExit(f"the street clip is missing: {CLIP}")
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    cv2.setNumThreads(1)
    kernels.warm_up()

    full, small = decode(CLIP)
    h, w = small[0].shape
    runs = {
        "motion": ours(small),
        "mog2": mog2(small),
        "motion_fullres": ours(full),
        "mog2_stage": mog2(small, stage=True),
    }
    for run in runs.values():  # warm-up: caches, allocator, OpenCV's lazy init
        run()
    fps = {name: best_fps(run, args.passes) for name, run in runs.items()}
    first, cached = compile_times()

    print(f"# {len(small)} frames, {w}x{h} working resolution, one core, best of {args.passes}")
    print(f"BENCH motion_fps {fps['motion']:.0f} fps")
    print(f"BENCH mog2_fps {fps['mog2']:.0f} fps")
    print(f"BENCH motion_vs_mog2 {fps['motion'] / fps['mog2']:.2f} x")
    print("BENCH motion_vs_mog2_target 1.00 x")
    print(f"BENCH motion_fullres_fps {fps['motion_fullres']:.0f} fps")
    print(f"BENCH mog2_stage_fps {fps['mog2_stage']:.0f} fps")
    print(f"BENCH kernel_first_compile_s {first:.2f} s")
    print(f"BENCH kernel_cached_load_s {cached:.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
