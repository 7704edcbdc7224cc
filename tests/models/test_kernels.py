"""Every Numba kernel against a plain numpy (or BFS) reference on random inputs.

Shapes include odd sizes, single rows and columns; masks include values other than 0/255
(the kernels must treat any non-zero byte as set) and densities from empty to full.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import deque
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from numpy.typing import NDArray

from smartpole.models import kernels
from smartpole.models.frames import yuv420_to_bgr

# No deadline: the first example of a session may still be loading kernels from the cache.
KERNEL_SETTINGS = settings(deadline=None, max_examples=80)


@pytest.fixture(scope="module", autouse=True)
def _compiled() -> None:
    """Compile (or load) once, so no example pays for it."""
    kernels.warm_up()


def u8_image(min_side: int = 1, max_side: int = 37) -> st.SearchStrategy[NDArray[np.uint8]]:
    shape = st.tuples(st.integers(min_side, max_side), st.integers(min_side, max_side))
    return shape.flatmap(lambda s: arrays(np.uint8, s))


@st.composite
def masks(draw: st.DrawFn, max_side: int = 40) -> NDArray[np.uint8]:
    """Random binary-ish masks: a density, then values from {0, 1, 128, 255}."""
    h = draw(st.integers(1, max_side))
    w = draw(st.integers(1, max_side))
    density = draw(st.sampled_from([0.0, 0.05, 0.3, 0.5, 0.7, 1.0]))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    on = rng.random((h, w)) < density
    values = rng.choice(np.array([1, 128, 255], np.uint8), size=(h, w))
    return np.where(on, values, 0).astype(np.uint8)


# --- downscale -------------------------------------------------------------------------


@KERNEL_SETTINGS
@given(data=st.data(), factor=st.integers(1, 7))
def test_downscale_box_is_the_rounded_block_mean(data: st.DataObject, factor: int) -> None:
    src = data.draw(u8_image(min_side=factor, max_side=60))
    h, w = src.shape[0] // factor, src.shape[1] // factor
    out = np.zeros((h, w), np.uint8)
    kernels.downscale_box(src, factor, out)
    blocks = src[: h * factor, : w * factor].reshape(h, factor, w, factor).astype(np.int64)
    n = factor * factor
    expected = (blocks.sum(axis=(1, 3)) + n // 2) // n
    np.testing.assert_array_equal(out, expected)


def test_downscale_box_rejects_a_wrong_output_shape() -> None:
    with pytest.raises(ValueError, match="downscale_box"):
        kernels.downscale_box(np.zeros((10, 10), np.uint8), 2, np.zeros((4, 5), np.uint8))


# --- background ------------------------------------------------------------------------


@st.composite
def background_case(
    draw: st.DrawFn,
) -> tuple[NDArray[np.float32], NDArray[np.uint8], float, int]:
    frame = draw(u8_image())
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    # Backgrounds near the frame (small differences) and far from it, both.
    noise = rng.normal(0, draw(st.sampled_from([3.0, 20.0, 80.0])), frame.shape)
    bg = np.clip(frame + noise, 0, 255).astype(np.float32)
    alpha = draw(st.floats(0.001, 1.0))
    threshold = draw(st.integers(0, 60))
    return bg, frame, alpha, threshold


@KERNEL_SETTINGS
@given(case=background_case())
def test_update_background_matches_numpy(
    case: tuple[NDArray[np.float32], NDArray[np.uint8], float, int],
) -> None:
    bg, frame, alpha, threshold = case
    d = frame.astype(np.float32) - bg
    fg = np.abs(d) > np.float32(threshold)
    rate = np.where(fg, np.float32(alpha * kernels.FOREGROUND_RATE), np.float32(alpha))
    expected_bg = (bg + rate.astype(np.float32) * d).astype(np.float32)
    mask = np.full(frame.shape, 7, np.uint8)
    count = kernels.update_background(bg, frame, alpha, threshold, mask)
    np.testing.assert_array_equal(mask, np.where(fg, 255, 0))
    assert count == int(fg.sum())
    np.testing.assert_allclose(bg, expected_bg, rtol=1e-6, atol=1e-4)


@KERNEL_SETTINGS
@given(case=background_case(), k_dev=st.floats(0.0, 4.0), data=st.data())
def test_update_background_adaptive_matches_numpy(
    case: tuple[NDArray[np.float32], NDArray[np.uint8], float, int],
    k_dev: float,
    data: st.DataObject,
) -> None:
    bg, frame, alpha, threshold = case
    dev = data.draw(arrays(np.float32, frame.shape, elements=st.floats(0, 40, width=32)))
    lo, hi = 0.4, 0.95
    f = frame.astype(np.float32)
    d = f - bg
    ad = np.abs(d)
    fg = ad > np.maximum(np.float32(threshold), np.float32(k_dev) * dev)
    shadow = (d < 0) & (f >= np.float32(lo) * bg) & (f <= np.float32(hi) * bg)
    expected_mask = np.where(fg, np.where(shadow, kernels.FG_SHADOW, kernels.FG_STRONG), 0)
    rate = np.where(fg, np.float32(alpha * kernels.FOREGROUND_RATE), np.float32(alpha))
    rate = rate.astype(np.float32)
    expected_bg = bg + rate * d
    expected_dev = dev + rate * (np.minimum(ad, np.float32(4 * threshold)) - dev)
    mask = np.zeros(frame.shape, np.uint8)
    count = kernels.update_background_adaptive(
        bg, dev, frame, alpha, threshold, k_dev, lo, hi, mask
    )
    np.testing.assert_array_equal(mask, expected_mask)
    assert count == int(fg.sum())
    np.testing.assert_allclose(bg, expected_bg, rtol=1e-6, atol=1e-4)
    np.testing.assert_allclose(dev, expected_dev, rtol=1e-6, atol=1e-4)


# --- morphology ------------------------------------------------------------------------


def reference_morph(mask: NDArray[np.uint8], dilate: bool) -> NDArray[np.uint8]:
    """3x3 max/min over the in-image neighbourhood (the border never votes)."""
    on = mask != 0
    pad = np.pad(on, 1, constant_values=not dilate)
    h, w = on.shape
    stack = [pad[dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3)]
    hit = np.any(stack, axis=0) if dilate else np.all(stack, axis=0)
    return np.where(hit, 255, 0).astype(np.uint8)


@KERNEL_SETTINGS
@given(mask=masks())
def test_dilate3x3_matches_numpy(mask: NDArray[np.uint8]) -> None:
    out = np.full(mask.shape, 9, np.uint8)
    kernels.dilate3x3(mask, out)
    np.testing.assert_array_equal(out, reference_morph(mask, dilate=True))


@KERNEL_SETTINGS
@given(mask=masks())
def test_erode3x3_matches_numpy(mask: NDArray[np.uint8]) -> None:
    out = np.full(mask.shape, 9, np.uint8)
    kernels.erode3x3(mask, out)
    np.testing.assert_array_equal(out, reference_morph(mask, dilate=False))


def test_erode_keeps_objects_touching_the_border() -> None:
    mask = np.zeros((6, 6), np.uint8)
    mask[:, :3] = 255  # a block along the left edge
    out = np.zeros_like(mask)
    kernels.erode3x3(mask, out)
    assert out[:, :2].all()  # the edge column survives; only the inner side shrinks
    assert not out[:, 2:].any()


# --- connected components --------------------------------------------------------------


def bfs_components(mask: NDArray[np.uint8]) -> tuple[NDArray[np.int32], list[list[int]]]:
    """Label 8-connected components by breadth-first search, numbered in raster order."""
    h, w = mask.shape
    labels = np.zeros((h, w), np.int32)
    stats: list[list[int]] = []
    for r in range(h):
        for c in range(w):
            if mask[r, c] == 0 or labels[r, c]:
                continue
            k = len(stats) + 1
            labels[r, c] = k
            x0, y0, x1, y1, area = c, r, c + 1, r + 1, 0
            queue = deque([(r, c)])
            while queue:
                y, x = queue.popleft()
                area += 1
                x0, y0, x1, y1 = min(x0, x), min(y0, y), max(x1, x + 1), max(y1, y + 1)
                for dy in (-1, 0, 1):
                    for dx in (-1, 0, 1):
                        ny, nx = y + dy, x + dx
                        if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not labels[ny, nx]:
                            labels[ny, nx] = k
                            queue.append((ny, nx))
            stats.append([x0, y0, x1, y1, area])
    return labels, stats


@KERNEL_SETTINGS
@given(mask=masks())
def test_connected_components_match_bfs(mask: NDArray[np.uint8]) -> None:
    labels = np.full(mask.shape, -1, np.int32)
    stats = kernels.connected_components(mask, labels)
    expected_labels, expected_stats = bfs_components(mask)
    np.testing.assert_array_equal(labels, expected_labels)
    assert stats.dtype == np.int32
    assert stats.shape == (len(expected_stats), 5)
    assert stats.tolist() == expected_stats


def test_connected_components_join_diagonals_and_u_shapes() -> None:
    # A "U" whose arms meet only at the bottom, and a diagonal chain: one component each.
    mask = np.zeros((6, 9), np.uint8)
    mask[0:5, 0] = 1
    mask[0:5, 3] = 1
    mask[4, 0:4] = 1
    for i in range(5):
        mask[i, 5 + min(i, 3)] = 1
    labels = np.zeros(mask.shape, np.int32)
    stats = kernels.connected_components(mask, labels)
    assert stats.tolist() == [[0, 0, 4, 5, 12], [5, 0, 9, 5, 5]]


@KERNEL_SETTINGS
@given(mask=masks())
def test_count_in_components_matches_numpy(mask: NDArray[np.uint8]) -> None:
    labels = np.zeros(mask.shape, np.int32)
    stats = kernels.connected_components(mask, labels)
    counts = kernels.count_in_components(mask, labels, stats, 128)
    expected = [int(((labels == k + 1) & (mask == 128)).sum()) for k in range(len(stats))]
    assert counts.tolist() == expected


# --- frame statistics and colour -------------------------------------------------------


@KERNEL_SETTINGS
@given(img=u8_image())
def test_luma_stats_match_numpy(img: NDArray[np.uint8]) -> None:
    mean, texture = kernels.luma_stats(img)
    rows = img[::2].astype(np.int64)
    assert mean == pytest.approx(rows.mean())
    parts = []
    if img.shape[1] > 1:
        parts.append(np.abs(np.diff(rows, axis=1)).mean())
    below = img[1::2].astype(np.int64)
    if len(below):
        parts.append(np.abs(below - rows[: len(below)]).mean())
    expected = (sum(parts) / len(parts)) if len(parts) == 2 else sum(parts)
    assert texture == pytest.approx(expected)


def reference_bgr(
    y: NDArray[np.uint8], u: NDArray[np.uint8], v: NDArray[np.uint8], full: bool
) -> NDArray[np.uint8]:
    """BT.601 in float64 with nearest chroma."""
    h, w = y.shape
    uu = u.repeat(2, 0).repeat(2, 1)[:h, :w].astype(np.float64) - 128
    vv = v.repeat(2, 0).repeat(2, 1)[:h, :w].astype(np.float64) - 128
    if full:
        lum, kc = y.astype(np.float64), 1.0
    else:
        lum, kc = (y.astype(np.float64) - 16) * 255 / 219, 255 / 224
    b = lum + 1.772 * kc * uu
    g = lum - 0.344136 * kc * uu - 0.714136 * kc * vv
    r = lum + 1.402 * kc * vv
    return np.clip(np.stack([b, g, r], axis=-1) + 0.5, 0, 255).astype(np.uint8)


@KERNEL_SETTINGS
@given(data=st.data(), full=st.booleans())
def test_yuv420_to_bgr_matches_the_formula_and_crops_consistently(
    data: st.DataObject, full: bool
) -> None:
    y = data.draw(u8_image(max_side=33))
    h, w = y.shape
    ch, cw = (h + 1) // 2, (w + 1) // 2
    u = data.draw(arrays(np.uint8, (ch, cw)))
    v = data.draw(arrays(np.uint8, (ch, cw)))
    whole = yuv420_to_bgr(y, u, v, 0, 0, w, h, full)
    diff = np.abs(whole.astype(int) - reference_bgr(y, u, v, full).astype(int))
    assert diff.max() <= 1  # float32 vs float64 rounding only
    x0 = data.draw(st.integers(0, w - 1))
    x1 = data.draw(st.integers(x0 + 1, w))
    y0 = data.draw(st.integers(0, h - 1))
    y1 = data.draw(st.integers(y0 + 1, h))
    crop = yuv420_to_bgr(y, u, v, x0, y0, x1, y1, full)
    np.testing.assert_array_equal(crop, whole[y0:y1, x0:x1])


def test_yuv420_to_bgr_rejects_regions_outside_the_frame() -> None:
    plane = np.zeros((4, 4), np.uint8)
    chroma = np.zeros((2, 2), np.uint8)
    with pytest.raises(ValueError, match="outside"):
        yuv420_to_bgr(plane, chroma, chroma, 0, 0, 5, 4, False)
    with pytest.raises(ValueError, match="outside"):
        yuv420_to_bgr(plane, chroma, chroma, 2, 0, 2, 4, False)


# --- compile cache ---------------------------------------------------------------------


def test_kernels_compile_once_then_load_from_the_cache(tmp_path: Path) -> None:
    """A fresh process with an empty cache compiles every kernel; the next one compiles none
    and loads them all from the cache, many times faster (a ratio: the machine may be busy)."""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba")}
    code = (
        "import json\n"
        "from smartpole.models import kernels\n"
        "seconds = kernels.warm_up()\n"
        "jitted = [f for n, f in vars(kernels).items() if hasattr(f, 'stats') and n[0] != '_']\n"
        "print(json.dumps({'s': seconds, 'functions': len(jitted),\n"
        "    'hits': sum(sum(f.stats.cache_hits.values()) for f in jitted),\n"
        "    'misses': sum(sum(f.stats.cache_misses.values()) for f in jitted)}))\n"
    )

    def run() -> dict[str, float]:
        done = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        result: dict[str, float] = json.loads(done.stdout)
        return result

    first = run()
    cached = run()
    assert any((tmp_path / "numba").rglob("*.nbi")), "no cache index written"
    assert first["functions"] >= 5
    assert (first["hits"], first["misses"]) == (0, first["functions"])
    assert (cached["hits"], cached["misses"]) == (first["functions"], 0)
    assert cached["s"] * 5 < first["s"], f"cached {cached['s']:.2f} s, first {first['s']:.2f} s"


WARM_UP_COVERAGE = """
import json
import numpy as np
from smartpole.models import frames, global_motion, kernels
from smartpole.models.motion import MotionDetector

kernels.warm_up()
jitted = {
    n: f
    for module in (kernels, global_motion)
    for n, f in vars(module).items()
    if hasattr(f, "signatures") and n[0] != "_"
}
jitted["yuv420_to_bgr"] = frames.yuv420_to_bgr
before = {n: len(f.signatures) for n, f in jitted.items()}
rng = np.random.default_rng(0)
for w, h in [(640, 352), (1280, 720), (333, 211)]:
    detector = MotionDetector(w, h)
    scene = rng.integers(40, 200, (h, w), dtype=np.uint8)
    for i in range(40):
        frame = scene.copy()
        frame[h // 3 : h // 2, 4 * i : 4 * i + w // 5] = 250  # a bright car moving right
        result = detector.detect(frame)
    assert result.boxes, "the moving block was not seen"
    y = scene
    u = np.full(((h + 1) // 2, (w + 1) // 2), 128, np.uint8)
    frames.VideoFrame(0, 0.0, y, u, u.copy()).bgr_crop(1, 1, w // 2, h // 2)
after = {n: len(f.signatures) for n, f in jitted.items()}
print(json.dumps({"before": before, "after": after}))
"""


def test_warm_up_compiles_every_specialisation_the_motion_stage_uses() -> None:
    """After ``warm_up`` no frame may trigger a compile (a multi-second stall at run time)."""
    done = subprocess.run(
        [sys.executable, "-c", WARM_UP_COVERAGE], capture_output=True, text=True, check=True
    )
    counts = json.loads(done.stdout)
    assert all(n >= 1 for n in counts["before"].values()), counts["before"]
    assert counts["after"] == counts["before"]


DETECTOR_INPUT = """
import json
import numpy as np
from smartpole.models import kernel_cache, kernels, worker  # everything a worker imports
from smartpole.models.yolox import letterbox_into

kernels.warm_up()
before = {k.__qualname__: len(k.signatures) for k in kernel_cache.KERNELS}
buffer = np.empty((3, 416, 416), np.float32)
for h, w in [(720, 1280), (900, 900), (416, 416), (120, 200)]:  # shrunk by 3x, 2x, 1x, grown
    letterbox_into(buffer, np.zeros((h, w, 3), np.uint8))
after = {k.__qualname__: len(k.signatures) for k in kernel_cache.KERNELS}
print(json.dumps({k: n for k, n in after.items() if n != before[k]}))
"""


def test_after_warm_up_no_detector_input_loads_a_kernel() -> None:
    """A kernel first loaded mid-stream runs LLVM after the worker gave LLVM's pages back
    (``models.resident``): ~25 MB more at its peak, besides the stall. The letterbox of a
    full-frame region (shrunk by a block mean first) and of a small one must be loaded by
    ``warm_up`` already."""
    done = subprocess.run(
        [sys.executable, "-c", DETECTOR_INPUT], capture_output=True, text=True, check=True
    )
    assert json.loads(done.stdout) == {}
