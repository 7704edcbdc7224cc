"""Cheap motion detection on a downscaled gray frame: where the detector needs to look.

Frigate's pattern: the ONNX detector costs ~15 ms a call, so it runs only on regions that
changed. This stage finds them for well under a millisecond a frame (see bench/bench_motion.py)
and is deliberately permissive: a box on a swaying branch costs one detector call, a missed
car costs a count. What it must not do is hand out large boxes for things that never stop
changing (trees, moving shadows), because those would make the detector run all the time.

Per frame, all in Numba kernels (models/kernels.py):

1. box-average the luma plane down by the integer factor that brings the width near
   ``work_width`` (noise averages out, and 4x fewer pixels for every later pass);
2. estimate the camera's translation against the background (sway of a pole in the wind,
   a drifting mount) and sample the frame back into the background's coordinates
   (``global_motion``): a few pixels of sway then make no motion and no re-seed;
3. one fused pass: per-pixel threshold against a running-average background, where the
   threshold is ``max(threshold, K_DEV * mean absolute deviation)`` of that pixel, so
   flickering leaves raise their own threshold; foreground pixels learn at a quarter of
   ``alpha`` so a waiting car is not absorbed at once; darker-by-a-ratio pixels are marked
   as shadow-like;
4. opening (erode, dilate) removes speckle, closing (dilate twice, erode once) joins the
   parts of one car (windows, body, wheels) and grows boxes by one working pixel;
5. 8-connected components with box statistics; components below ``min_area`` or made
   almost only of shadow-like pixels (cast shadows, ghosts of bright cars) are dropped.

The frame-level numbers for data quality (dark, blocked, shaken) come out of the same work.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

import numpy as np
from numpy.typing import NDArray

from smartpole.models import kernels
from smartpole.models.global_motion import GlobalMotion

FrameQuality = Literal["ok", "dark", "blocked", "shaken"]
#: Per-pixel threshold = max(threshold, K_DEV * mean absolute deviation of that pixel).
K_DEV: Final = 2.5
#: A pixel darker than the background by a ratio in this range is shadow-like.
SHADOW_RATIO: Final = (0.4, 0.95)
#: A component with fewer strong (non-shadow) pixels than this share is a shadow or a ghost.
MIN_STRONG_SHARE: Final = 0.05
#: Below this mean luma above black the camera is dark (night without light, lens cap).
DARK_LUMA: Final = 15.0
#: Below this texture (mean absolute neighbour difference) the view is blocked or defocused.
BLOCKED_TEXTURE: Final = 1.5
#: More than this share of foreground pixels in one frame, after the sway was compensated:
#: the camera moved further than ``global_motion.SEARCH_RADIUS`` or was shaken.
SHAKE_RATIO: Final = 0.5
#: That many such frames in a row is no shake but a new scene (camera turned, lights on):
#: the background restarts from the current frame.
RESEED_AFTER: Final = 3


@dataclass(slots=True)
class MotionResult:
    """What moved in one frame, in full-resolution pixels, plus frame-level quality numbers.

    ``boxes`` are ``(x0, y0, x1, y1)`` with exclusive ends. ``texture`` is the mean absolute
    difference between neighbouring working-resolution pixels. ``dark``, ``blocked`` and
    ``shaken`` are the quality flags (``quality()`` names the most important one).
    ``shift`` is the camera's offset (x, y) in full-resolution pixels since the background
    was (re)started, as estimated and compensated (sway and drift).
    """

    boxes: list[tuple[int, int, int, int]]
    foreground_ratio: float
    mean_luma: float
    warming_up: bool
    texture: float = 0.0
    dark: bool = False
    blocked: bool = False
    shaken: bool = False
    shift: tuple[float, float] = (0.0, 0.0)

    @property
    def quality(self) -> FrameQuality:
        """``"dark"``, ``"blocked"``, ``"shaken"`` or ``"ok"`` (see ``quality()``)."""
        return quality(self)


def quality(result: MotionResult) -> FrameQuality:
    """One word for the frame's data quality, the most fundamental problem first.

    A dark frame also lacks texture, and a blocked lens makes shake meaningless, hence the
    order. The pipeline counts these per interval for the summary's data-quality fields.
    """
    if result.dark:
        return "dark"
    if result.blocked:
        return "blocked"
    if result.shaken:
        return "shaken"
    return "ok"


#: The frame interval ``alpha`` and ``warmup_frames`` are given for (25 fps).
REFERENCE_FRAME_S = 0.04


class MotionDetector:
    """Background-subtraction motion detector for one camera; not thread-safe.

    ``black_level`` is the luma of black: 16 for limited-range video (yuv420p, most H.264)
    and 0 for full range (yuvj420p, ``VideoFrame.full_range``); the dark test measures from
    it. Every buffer is allocated here, once; ``detect`` allocates only its result.
    """

    def __init__(
        self,
        width: int,
        height: int,
        *,
        work_width: int = 320,
        alpha: float = 0.02,
        threshold: int = 18,
        min_area: int = 150,
        warmup_frames: int = 25,
        black_level: int = 16,
    ) -> None:
        if width < 1 or height < 1 or work_width < 1:
            raise ValueError(f"bad frame or working size: {width}x{height}, {work_width}")
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"alpha must be in (0, 1], not {alpha}")
        if not 0 <= threshold <= 255:
            raise ValueError(f"threshold must be in 0..255, not {threshold}")
        self.width = width
        self.height = height
        self.factor = max(1, min(round(width / work_width), width, height))
        self.work_height = height // self.factor
        self.work_width = width // self.factor
        # Plain Python numbers: a numpy scalar or a float threshold would make Numba compile
        # another specialisation of the kernels on the first frame (seconds, uncached).
        self.alpha = float(alpha)
        self.threshold = int(threshold)
        self.min_area = int(min_area)
        self.warmup_frames = int(warmup_frames)
        self.black_level = int(black_level)
        shape = (self.work_height, self.work_width)
        self._small = np.zeros(shape, np.uint8)
        self._bg = np.zeros(shape, np.float32)
        self._dev = np.zeros(shape, np.float32)
        self._raw = np.zeros(shape, np.uint8)
        self._warped = np.zeros(shape, np.uint8)
        self._global = GlobalMotion(shape)
        self._tmp = np.zeros(shape, np.uint8)
        self._mask = np.zeros(shape, np.uint8)
        self._labels = np.zeros(shape, np.int32)
        self._frames = 0
        self._big_run = 0
        self._alpha_per_reference = self.alpha
        self._warmup_reference = self.warmup_frames

    def pace(self, frame_s: float) -> None:
        """Keep the background's memory a span of time, not a number of frames.

        ``alpha`` and ``warmup_frames`` are given for a 25 fps camera (2 s of memory, 1 s of
        warm-up). At 5 fps the same per-frame rate would remember 10 s, so a car that
        parks takes five times as long to fade into the background; at 60 fps a waiting
        car would fade in under a second. Called with the measured frame interval.
        """
        if not frame_s > 0:
            return
        frames = frame_s / REFERENCE_FRAME_S
        self.alpha = float(min(1.0, 1.0 - (1.0 - self._alpha_per_reference) ** frames))
        self.warmup_frames = max(3, round(self._warmup_reference / frames))

    @property
    def frames(self) -> int:
        """Frames seen since the background was last (re)started."""
        return self._frames

    @property
    def mask(self) -> NDArray[np.uint8]:
        """The cleaned foreground mask (0/255, working resolution, read-only) of the last
        frame that was searched for boxes (not of warm-up, dark, blocked or shaken ones), in
        the background's coordinates (the frame's shifted by ``shift``)."""
        view = self._mask.view()
        view.flags.writeable = False
        return view

    @property
    def background(self) -> NDArray[np.float32]:
        """The current background estimate at working resolution (a read-only view)."""
        view = self._bg.view()
        view.flags.writeable = False
        return view

    def reset(self) -> None:
        """Forget the background; the next frame starts a new warm-up."""
        self._frames = 0
        self._big_run = 0
        self._global.reset()

    def detect(self, gray: NDArray[np.uint8]) -> MotionResult:
        """Feed one luma frame (``height`` x ``width`` uint8); return what moved in it.

        ``VideoFrame.gray`` is the intended input: C-contiguous and writable, the array type
        ``kernels.warm_up`` compiled for (another layout works but compiles once more).
        """
        if gray.shape != (self.height, self.width) or gray.dtype != np.uint8:
            raise ValueError(
                f"expected a {self.height}x{self.width} uint8 frame, got {gray.shape} {gray.dtype}"
            )
        small = self._small
        kernels.downscale_box(gray, self.factor, small)
        mean_luma, texture = kernels.luma_stats(small)
        dark = mean_luma - self.black_level < DARK_LUMA
        blocked = texture < BLOCKED_TEXTURE
        motion = self._global
        if self._frames == 0:
            self._bg[:] = small
            self._dev[:] = 0.0
        elif not (dark or blocked):
            motion.estimate(small, self._bg)
        shift = motion.shift
        seen = motion.compensate(small, self._bg, self._warped)
        self._frames += 1
        warming = self._frames <= self.warmup_frames
        # During warm-up the background is the running mean of the frames so far (1/n), so a
        # car that drives through the first frames leaves only a faint trace.
        alpha = max(self.alpha, 1.0 / self._frames) if warming else self.alpha
        count = kernels.update_background_adaptive(
            self._bg,
            self._dev,
            seen,
            alpha,
            self.threshold,
            K_DEV,
            SHADOW_RATIO[0],
            SHADOW_RATIO[1],
            self._raw,
        )
        ratio = count / small.size
        shaken = ratio > SHAKE_RATIO and not warming
        if shaken:
            self._big_run += 1
            if self._big_run >= RESEED_AFTER:
                self.reset()
        else:
            self._big_run = 0
        boxes: list[tuple[int, int, int, int]] = []
        if not (warming or shaken or dark or blocked):
            boxes = self._boxes(round(shift[0] * self.factor), round(shift[1] * self.factor))
        offset = motion.offset
        if not shaken:
            motion.follow_drift(small, self._bg, self._dev)
        return MotionResult(
            boxes=boxes,
            foreground_ratio=ratio,
            mean_luma=mean_luma,
            warming_up=warming,
            texture=texture,
            dark=dark,
            blocked=blocked,
            shaken=shaken,
            shift=(offset[0] * self.factor, offset[1] * self.factor),
        )

    def _boxes(self, ox: int, oy: int) -> list[tuple[int, int, int, int]]:
        """Clean the raw mask, label it and turn the components worth a look into boxes,
        moved by (``ox``, ``oy``) full-resolution pixels from the background's coordinates
        into the frame's and clipped to it."""
        raw, tmp, mask = self._raw, self._tmp, self._mask
        kernels.erode3x3(raw, tmp)  # opening: speckle goes
        kernels.dilate3x3(tmp, mask)
        kernels.dilate3x3(mask, tmp)  # closing: parts of one car join
        kernels.dilate3x3(tmp, mask)
        kernels.erode3x3(mask, tmp)
        self._mask, self._tmp = tmp, mask
        stats = kernels.connected_components(tmp, self._labels)
        if len(stats) == 0:
            return []
        f = self.factor
        keep = stats[:, 4] * (f * f) >= self.min_area
        if not keep.any():
            return []
        strong = kernels.count_in_components(raw, self._labels, stats, kernels.FG_STRONG)
        keep &= strong >= MIN_STRONG_SHARE * stats[:, 4]
        out: list[tuple[int, int, int, int]] = []
        wmax, hmax, width, height = self.work_width, self.work_height, self.width, self.height
        for x0, y0, x1, y1, _area in stats[keep].tolist():
            bx0 = min(max(x0 * f + ox, 0), width)
            by0 = min(max(y0 * f + oy, 0), height)
            bx1 = min(max(width if x1 == wmax else x1 * f + ox, 0), width)
            by1 = min(max(height if y1 == hmax else y1 * f + oy, 0), height)
            if bx1 > bx0 and by1 > by0:
                out.append((bx0, by0, bx1, by1))
        return out
