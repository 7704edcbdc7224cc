"""A video with known ground truth: real road users pasted onto a real empty street.

``build(video_dir, out_dir)`` takes the median of the street clip's frames as the background
(traffic gone, parked cars and trees kept), cuts the road users of ``ground_truth_scene.CROPS``
out of their clips (the street clip's cars, the arterial clip's box truck), and drives them
along the scene's ground-plane trajectories: on every frame each crop is scaled to its box's
real width at its distance (the scene's perspective) and placed so that the middle of its
box's bottom edge lies on the image of its ground point, at sub-pixel precision. Farther
road users are pasted first, so nearer ones cover them. The result is a 1280x720, 25 fps
H.264 file, plus the truth of every frame: where each road user stands, how fast it goes,
and whether it is fully visible.

Crops keep only the road user: a pixel is its own where it differs from the background at
the same place in the clip (small specks opened away, each row and column filled between
its outermost pixels, edges softened by a pixel), so no rectangle of another street moves
with it. Everything is numpy and PyAV (no OpenCV in the product's test dependencies).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Final

import av
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from numpy.typing import NDArray

from helpers import ground_truth_scene as scene

U8 = NDArray[np.uint8]
F32 = NDArray[np.float32]

#: A clip pixel is the road user's own when it differs from the background by this much in
#: some channel (the street clip's noise is a few levels).
MASK_THRESHOLD: Final = 30
#: Every n-th clip frame goes into the median background.
MEDIAN_EVERY: Final = 20
#: x264's constant quality: fine enough that compression does not move box edges.
CRF: Final = 18


@dataclass(frozen=True)
class TruthSample:
    """One road user on one frame. ``fully_visible``: its whole box is in the frame, no
    nearer road user overlaps it, and it is no farther north than ``scene.FAR_M``."""

    participant: int
    class_name: str
    east_m: float
    north_m: float
    speed_ms: float
    heading_deg: float
    box: tuple[float, float, float, float]
    fully_visible: bool


@dataclass(frozen=True)
class GroundTruth:
    """The generated file and the truth of each of its frames (frame i at i / fps s)."""

    video: Path
    fps: int
    frames: list[list[TruthSample]]

    def write_json(self, path: Path) -> None:
        image, ground = scene.calibration_points()
        document = {
            "video": self.video.name,
            "fps": self.fps,
            "calibration": {"image": image, "ground_en_m": ground},
            "origin": {"latitude": scene.ORIGIN_LAT, "longitude": scene.ORIGIN_LON},
            "frames": [[asdict(s) for s in samples] for samples in self.frames],
        }
        path.write_text(json.dumps(document))


def _open_filter(mask: NDArray[np.bool_], radius: int) -> NDArray[np.bool_]:
    """Morphological opening (erode then dilate) with a square of side 2 * radius + 1."""
    side = 2 * radius + 1
    padded = np.pad(mask, radius, constant_values=False)
    eroded = np.asarray(sliding_window_view(padded, (side, side)).all(axis=(2, 3)))
    padded = np.pad(eroded, radius, constant_values=False)
    opened: NDArray[np.bool_] = np.asarray(
        sliding_window_view(padded, (side, side)).any(axis=(2, 3))
    )
    return opened


def _span_fill(mask: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """Each row filled between its first and last set pixel (holes where a car's paint
    matches the road)."""
    out = np.zeros_like(mask)
    for row, values in enumerate(mask):
        hits = np.flatnonzero(values)
        if hits.size:
            out[row, hits[0] : hits[-1] + 1] = True
    return out


def cut_out(crop: U8, background: U8) -> F32:
    """The crop as float RGBA (0-1 alpha): the road user opaque, its street transparent."""
    diff = np.abs(crop.astype(np.int16) - background.astype(np.int16)).max(axis=2)
    mask = _open_filter(diff > MASK_THRESHOLD, 1)
    mask = _span_fill(mask) & _span_fill(mask.T).T
    alpha = mask.astype(np.float32)
    padded = np.pad(alpha, 1, mode="edge")
    alpha = sliding_window_view(padded, (3, 3)).mean(axis=(2, 3))  # a one-pixel soft edge
    rgba: F32 = np.dstack([crop.astype(np.float32), alpha]).astype(np.float32)
    return rgba


def _sample(image: F32, xs: F32, ys: F32) -> F32:
    """Bilinear samples of ``image`` (H, W, C) at the grid ``ys`` x ``xs`` (pixel centres
    at integers); outside the image the edge repeats (callers mask alpha themselves)."""
    h, w = image.shape[:2]
    x0 = np.clip(np.floor(xs).astype(np.int64), 0, w - 2)
    y0 = np.clip(np.floor(ys).astype(np.int64), 0, h - 2)
    fx = np.clip(xs - x0, 0.0, 1.0)[None, :, None]
    fy = np.clip(ys - y0, 0.0, 1.0)[:, None, None]
    top = image[y0][:, x0] * (1 - fx) + image[y0][:, x0 + 1] * fx
    bottom = image[y0 + 1][:, x0] * (1 - fx) + image[y0 + 1][:, x0 + 1] * fx
    out: F32 = (top * (1 - fy) + bottom * fy).astype(np.float32)
    return out


def upscale(frame: U8) -> U8:
    """A clip frame at the output size (bilinear)."""
    sx, sy = scene.CLIP_SCALE
    xs = ((np.arange(scene.WIDTH) + 0.5) / sx - 0.5).astype(np.float32)
    ys = ((np.arange(scene.HEIGHT) + 0.5) / sy - 0.5).astype(np.float32)
    scaled = np.clip(_sample(frame.astype(np.float32), xs, ys) + 0.5, 0, 255)
    out: U8 = np.ascontiguousarray(scaled, dtype=np.uint8)
    return out


def paste(canvas: U8, rgba: F32, box: tuple[float, float, float, float]) -> None:
    """Alpha-blend ``rgba`` stretched onto the float ``box`` (x0, y0, x1, y1) of ``canvas``."""
    x0, y0, x1, y1 = box
    h, w = rgba.shape[:2]
    c0, c1 = max(0, int(np.floor(x0))), min(canvas.shape[1], int(np.ceil(x1)))
    r0, r1 = max(0, int(np.floor(y0))), min(canvas.shape[0], int(np.ceil(y1)))
    if c1 <= c0 or r1 <= r0:
        return
    # Destination pixel centres mapped into the crop (its pixel centres at integers).
    xs = ((np.arange(c0, c1) + 0.5 - x0) * w / (x1 - x0) - 0.5).astype(np.float32)
    ys = ((np.arange(r0, r1) + 0.5 - y0) * h / (y1 - y0) - 0.5).astype(np.float32)
    patch = _sample(rgba, xs, ys)
    inside = ((xs >= -0.5) & (xs <= w - 0.5))[None, :] & ((ys >= -0.5) & (ys <= h - 0.5))[:, None]
    alpha = patch[:, :, 3] * inside
    region = canvas[r0:r1, c0:c1].astype(np.float32)
    region += (patch[:, :, :3] - region) * alpha[:, :, None]
    canvas[r0:r1, c0:c1] = np.clip(region + 0.5, 0, 255).astype(np.uint8)


def _median_and_frames(clip: Path, wanted: set[int]) -> tuple[U8, dict[int, U8]]:
    """A clip's median frame (its traffic gone) and its frames ``wanted``."""
    samples: list[U8] = []
    frames: dict[int, U8] = {}
    with av.open(str(clip)) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index % MEDIAN_EVERY == 0 or index in wanted:
                image = np.asarray(frame.to_ndarray(format="bgr24"), dtype=np.uint8)
                if index % MEDIAN_EVERY == 0:
                    samples.append(image)
                if index in wanted:
                    frames[index] = image
    return np.median(np.stack(samples), axis=0).astype(np.uint8), frames


def _read_clips(video_dir: Path) -> tuple[U8, dict[str, F32]]:
    """The street clip's median (at the output size) and every crop cut out of its clip."""
    crops: dict[str, F32] = {}
    background: U8 | None = None
    for clip in sorted({c.clip for c in scene.CROPS.values()} | {scene.CLIP}):
        sources = [c for c in scene.CROPS.values() if c.clip == clip]
        median, frames = _median_and_frames(video_dir / clip, {c.frame for c in sources})
        if clip == scene.CLIP:
            background = upscale(median)
        for source in sources:
            x0, y0, x1, y1 = (round(v) for v in source.box)
            crops[source.name] = cut_out(frames[source.frame][y0:y1, x0:x1], median[y0:y1, x0:x1])
    assert background is not None
    return background, crops


def _place(
    trajectory: scene.Trajectory, rgba: F32, east: float, north: float
) -> tuple[float, float, float, float]:
    """The output box of a crop standing at (east, north): its width the crop's real width
    at that distance, its height by the crop's aspect (as the clip is shown), its
    bottom-centre on the ground point's pixel."""
    source = scene.CROPS[trajectory.crop]
    width = source.width_m * scene.pixels_per_metre_across(east, north)
    h, w = rgba.shape[:2]
    height = width * (h / w) * source.stretch
    u, v = scene.to_image(east, north)
    return (u - width / 2, v - height, u + width / 2, v)


def _visible(box: tuple[float, float, float, float], north: float) -> bool:
    x0, y0, x1, y1 = box
    inside = x0 >= 0 and y0 >= 0 and x1 <= scene.WIDTH and y1 <= scene.HEIGHT
    return inside and north <= scene.FAR_M


def _overlaps(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def frame_truth(t_s: float, crops: dict[str, F32]) -> list[TruthSample]:
    """Every road user on the road at ``t_s``, farthest first (the order they are pasted)."""
    placed: list[tuple[scene.Trajectory, float, float, tuple[float, float, float, float]]] = []
    for trajectory in scene.SCENARIO:
        where = trajectory.at(t_s)
        if where is not None:
            box = _place(trajectory, crops[trajectory.crop], *where)
            placed.append((trajectory, *where, box))
    placed.sort(key=lambda item: -item[2])
    out = []
    for i, (trajectory, east, north, box) in enumerate(placed):
        covered = any(_overlaps(box, nearer[3]) for nearer in placed[i + 1 :])
        out.append(
            TruthSample(
                participant=trajectory.participant,
                class_name=scene.CROPS[trajectory.crop].class_name,
                east_m=east,
                north_m=north,
                speed_ms=abs(trajectory.speed_ms),
                heading_deg=trajectory.heading_deg,
                box=box,
                fully_visible=_visible(box, north) and not covered,
            )
        )
    return out


def build(video_dir: Path, out_dir: Path, *, duration_s: float = scene.DURATION_S) -> GroundTruth:
    """Write ``out_dir/ground-truth.mp4`` and ``ground-truth.json`` from the clips in
    ``video_dir``; return the truth."""
    background, crops = _read_clips(video_dir)
    video = out_dir / "ground-truth.mp4"
    frames: list[list[TruthSample]] = []
    with av.open(str(video), mode="w") as container:
        stream = container.add_stream("libx264", rate=scene.FPS)
        stream.width, stream.height, stream.pix_fmt = scene.WIDTH, scene.HEIGHT, "yuv420p"
        stream.options = {"crf": str(CRF), "preset": "ultrafast"}
        stream.codec_context.time_base = Fraction(1, scene.FPS)
        for index in range(round(duration_s * scene.FPS)):
            samples = frame_truth(index / scene.FPS, crops)
            canvas = background.copy()
            for sample in samples:
                trajectory = next(t for t in scene.SCENARIO if t.participant == sample.participant)
                paste(canvas, crops[trajectory.crop], sample.box)
            frame = av.VideoFrame.from_ndarray(canvas, format="bgr24")
            frame.pts = index
            container.mux(stream.encode(frame))
            frames.append(samples)
        container.mux(stream.encode(None))
    truth = GroundTruth(video=video, fps=scene.FPS, frames=frames)
    truth.write_json(out_dir / "ground-truth.json")
    return truth
