"""Numba kernels for the per-pixel work of the motion stage (colour is in ``frames``).

Every kernel is ``@njit(cache=True, nogil=True)``: ``nogil`` lets a worker run a kernel in a
thread while another thread decodes, and ``cache`` writes the compiled machine code to disk
so a restarted worker loads it instead of recompiling (about five seconds for these kernels
on a cold start, a quarter of a second from the cache; ``warm_up`` measures it).

Where the cache lives: Numba's own rules. ``NUMBA_CACHE_DIR``, when set before numba is first
imported, wins; otherwise the ``__pycache__`` folder next to this file when it is writable
(an editable install: ``models/__pycache__/kernels.*.nbi|nbc``), else the user's cache folder
(``~/.cache/numba``). A packaged install on a read-only root file system should set
``NUMBA_CACHE_DIR`` to a persistent, writable folder: the systemd unit sets
``/var/lib/smartpole/numba-cache``, and the daemon checks it is writable before it starts a
worker (``smartpole.agent.cameras``).
The cache is keyed by this file's path and modification time and the CPU, so an upgrade
recompiles once and a stale entry is never used.

Conventions: kernels write into caller-owned output arrays (no allocation per frame), treat
any non-zero mask byte as set and write 0/255, and boxes use exclusive ends (``x1 = last
column + 1``), like slicing. Shapes are checked inside the kernels, which raise ValueError.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Final, TypeVar, cast

import numpy as np
from numpy.typing import NDArray

from smartpole.models import kernel_cache

_F = TypeVar("_F", bound=Callable[..., Any])

#: Foreground pixels update the background at this fraction of ``alpha``: a car waiting at a
#: light stays foreground for ~1/(alpha * 0.25) frames instead of melting in after ~1/alpha.
FOREGROUND_RATE: Final = 0.25

#: Shadow classes written by ``update_background_adaptive`` (all count as set for morphology).
FG_STRONG: Final = 255
FG_SHADOW: Final = 128


def njit_cached(fn: _F) -> _F:
    """``numba.njit(cache=True, nogil=True)``, typed so mypy keeps the Python signature.

    Every kernel of ``models/`` should use it, so all of them share the cache rules above
    and ``warm_up`` can check their cache files (``kernel_cache``).
    """
    return cast(_F, kernel_cache.njit(fn))


@njit_cached
def downscale_box(src: NDArray[np.uint8], factor: int, out: NDArray[np.uint8]) -> None:
    """Average each ``factor`` x ``factor`` block of ``src`` into ``out`` (rounded half up).

    Trailing rows/columns that do not fill a block are ignored. Factors 1 (a copy), 2
    (640-wide cameras) and 4 (1280) have unrolled loops that vectorise, ten times faster
    than the general one, which sums whole rows vertically
    first (contiguous, vectorised), then each block's columns; it divides by a shift when
    ``factor`` is a power of two (1280 -> 320), else by multiplying with the reciprocal: a
    block sum's true quotient is a multiple of 1/n, so the small epsilon never changes the
    floor but covers the rounding of the product.
    """
    h, w = out.shape
    if factor < 1 or src.shape[0] // factor != h or src.shape[1] // factor != w:
        raise ValueError("downscale_box: out must be (H // factor, W // factor)")
    if factor == 1:
        out[:, :] = src
        return
    if factor == 2:
        for r in range(h):
            top = src[2 * r]
            bottom = src[2 * r + 1]
            dst = out[r]
            for c in range(w):
                s = (
                    np.uint16(top[2 * c])
                    + np.uint16(top[2 * c + 1])
                    + np.uint16(bottom[2 * c])
                    + np.uint16(bottom[2 * c + 1])
                )
                dst[c] = (s + 2) >> 2
        return
    if factor == 4:
        for r in range(h):
            dst = out[r]
            for c in range(w):
                s = np.uint16(8)
                for dr in range(4):
                    row = src[4 * r + dr]
                    s += (
                        np.uint16(row[4 * c])
                        + np.uint16(row[4 * c + 1])
                        + np.uint16(row[4 * c + 2])
                        + np.uint16(row[4 * c + 3])
                    )
                dst[c] = s >> 4
        return
    n = factor * factor
    half = n // 2
    shift = 0
    while (1 << (shift + 1)) <= n:
        shift += 1
    pow2 = (1 << shift) == n
    inv = 1.0 / n
    span = w * factor
    acc = np.empty(span, np.uint32)
    for r in range(h):
        # Vertical sums first: a contiguous loop over whole rows, which vectorises.
        acc[:] = 0
        for dr in range(factor):
            row = src[r * factor + dr]
            for x in range(span):
                acc[x] += row[x]
        dst = out[r]
        for c in range(w):
            s32 = np.uint32(0)
            for dc in range(factor):
                s32 += acc[c * factor + dc]
            if pow2:
                dst[c] = (s32 + half) >> shift
            else:
                dst[c] = np.uint8((s32 + half) * inv + 1e-6)


@njit_cached
def update_background(
    bg: NDArray[np.float32],
    frame: NDArray[np.uint8],
    alpha: float,
    threshold: int,
    mask: NDArray[np.uint8],
) -> int:
    """Threshold ``|frame - bg|`` into ``mask`` and update the running average, in one pass.

    Fused because both halves read the same two arrays: one pass instead of three (absdiff,
    threshold, accumulateWeighted). Foreground pixels learn at ``alpha * FOREGROUND_RATE``
    so a stopped car is not absorbed at once. Returns the foreground pixel count.
    """
    h, w = frame.shape
    if bg.shape != frame.shape or mask.shape != frame.shape:
        raise ValueError("update_background: bg, frame and mask must have the same shape")
    a_bg = np.float32(alpha)
    a_fg = np.float32(alpha * FOREGROUND_RATE)
    thr = np.float32(threshold)
    count = 0
    for r in range(h):
        brow, frow, mrow = bg[r], frame[r], mask[r]
        for c in range(w):
            b = brow[c]
            d = np.float32(frow[c]) - b
            fg = abs(d) > thr
            mrow[c] = np.uint8(255) if fg else np.uint8(0)
            count += fg
            brow[c] = b + (a_fg if fg else a_bg) * d
    return count


@njit_cached
def update_background_adaptive(
    bg: NDArray[np.float32],
    dev: NDArray[np.float32],
    frame: NDArray[np.uint8],
    alpha: float,
    threshold: int,
    k_dev: float,
    shadow_lo: float,
    shadow_hi: float,
    mask: NDArray[np.uint8],
) -> int:
    """``update_background`` with a per-pixel threshold and a shadow class; what motion uses.

    ``dev`` is a running mean absolute deviation of each pixel from its background, so the
    threshold is ``max(threshold, k_dev * dev)``: leaves that flicker all day raise their own
    threshold while the smooth road keeps the global one. The deviation fed in is capped at
    four thresholds so one passing car barely moves it. A pixel darker than its background
    by a ratio within [shadow_lo, shadow_hi] is written as FG_SHADOW (cast shadows keep the
    ratio; a car usually has some pixels outside it), anything else over the threshold as
    FG_STRONG. Returns the count of both.
    """
    h, w = frame.shape
    if bg.shape != frame.shape or dev.shape != frame.shape or mask.shape != frame.shape:
        raise ValueError("update_background_adaptive: all arrays must have the same shape")
    a_bg, a_fg = np.float32(alpha), np.float32(alpha * FOREGROUND_RATE)
    thr0, k, cap = np.float32(threshold), np.float32(k_dev), np.float32(4 * threshold)
    lo, hi = np.float32(shadow_lo), np.float32(shadow_hi)
    strong, shadow, zero = np.uint8(FG_STRONG), np.uint8(FG_SHADOW), np.uint8(0)
    count = 0
    # Branch-free body (selects only) so LLVM vectorises the inner loop.
    for r in range(h):
        brow, drow, frow, mrow = bg[r], dev[r], frame[r], mask[r]
        for c in range(w):
            b = brow[c]
            p = np.float32(frow[c])
            d = p - b
            ad = abs(d)
            dv = drow[c]
            fg = ad > max(thr0, k * dv)
            is_shadow = (d < 0) & (p >= lo * b) & (p <= hi * b)
            mrow[c] = (shadow if is_shadow else strong) if fg else zero
            count += fg
            rate = a_fg if fg else a_bg
            brow[c] = b + rate * d
            drow[c] = dv + rate * (min(ad, cap) - dv)
    return count


@njit_cached
def _morph3x3(src: NDArray[np.uint8], out: NDArray[np.uint8], dilate: bool) -> None:
    """Shared body of ``dilate3x3`` / ``erode3x3``: separable 3-max (3-min) on any non-zero.

    A vertical pass into a row buffer, then a horizontal one: six reads a pixel, not nine.
    Outside the image is neutral (unset for the max, set for the min): the clamped row
    indices repeat an edge row, and the buffer's two extra cells hold the neutral value, so
    the loops have no edge cases and LLVM vectorises them.
    """
    h, w = src.shape
    if out.shape != src.shape:
        raise ValueError("dilate3x3/erode3x3: out must have the shape of src")
    col = np.empty(w + 2, np.uint8)
    col[0] = col[w + 1] = 0 if dilate else 255
    on = np.uint8(255)
    off = np.uint8(0)
    for r in range(h):
        above = src[max(r - 1, 0)]
        here = src[r]
        below = src[min(r + 1, h - 1)]
        dst = out[r]
        if dilate:
            for c in range(w):
                col[c + 1] = max(max(above[c], here[c]), below[c])
            for c in range(w):
                dst[c] = on if max(max(col[c], col[c + 1]), col[c + 2]) else off
        else:
            for c in range(w):
                col[c + 1] = min(min(above[c], here[c]), below[c])
            for c in range(w):
                dst[c] = on if min(min(col[c], col[c + 1]), col[c + 2]) else off


@njit_cached
def dilate3x3(src: NDArray[np.uint8], out: NDArray[np.uint8]) -> None:
    """Binary 3x3 dilation: set where any 8-neighbour or the pixel is set; outside is unset.

    ``out`` must not alias ``src``; it receives 0/255.
    """
    _morph3x3(src, out, True)


@njit_cached
def erode3x3(src: NDArray[np.uint8], out: NDArray[np.uint8]) -> None:
    """Binary 3x3 erosion: set where the pixel and all in-image neighbours are set.

    Counting the outside as set keeps objects that touch the frame edge from being eaten
    from that side (OpenCV's default border for erosion). ``out`` must not alias ``src``;
    it receives 0/255.
    """
    _morph3x3(src, out, False)


@njit_cached
def _find(parent: NDArray[np.int32], x: int) -> int:
    """Root of ``x`` with path halving (every other node on the path skips a level)."""
    while parent[x] != x:
        parent[x] = parent[parent[x]]
        x = parent[x]
    return x


@njit_cached
def connected_components(mask: NDArray[np.uint8], labels: NDArray[np.int32]) -> NDArray[np.int32]:
    """Label 8-connected set pixels; return one ``[x0, y0, x1, y1, area]`` row per component.

    Two passes with union-find over horizontal runs rather than pixels: a motion mask is
    mostly empty, so the first pass is a scan for non-zero bytes, and a run touches a run of
    the previous row (8-connectivity) when their column spans overlap once widened by one.
    Unions keep the smaller run index as root, so resolving runs in increasing order makes
    every root final in one sweep. Pass two writes consecutive labels 1..n into ``labels``
    (0 = unset) and gathers the box stats per run. Components are numbered in raster order
    of their first pixel.
    """
    h, w = mask.shape
    if labels.shape != mask.shape:
        raise ValueError("connected_components: labels must have the shape of mask")
    cap = h * ((w + 1) // 2) + 1
    run_row, run_x0, run_x1 = (
        np.empty(cap, np.int32),
        np.empty(cap, np.int32),
        np.empty(cap, np.int32),
    )
    parent = np.empty(cap, np.int32)
    n = prev_lo = prev_hi = 0
    for r in range(h):
        row = mask[r]
        row_lo = n
        p = prev_lo
        c = 0
        while c < w:
            if row[c] == 0:
                c += 1
                continue
            x0 = c
            while c < w and row[c] != 0:
                c += 1
            run_row[n], run_x0[n], run_x1[n] = r, x0, c
            root = parent[n] = n
            # Previous-row runs ending left of x0 - 1 cannot touch this run or any later one.
            while p < prev_hi and run_x1[p] < x0:
                p += 1
            q = p
            while q < prev_hi and run_x0[q] <= c:
                other = _find(parent, q)
                if other < root:
                    parent[root] = other
                    root = other
                elif other > root:
                    parent[other] = root
                q += 1
            n += 1
        prev_lo = row_lo
        prev_hi = n
    final = np.empty(n, np.int32)
    n_comp = 0
    for i in range(n):
        j = parent[i]
        if j == i:
            final[i] = n_comp
            n_comp += 1
        else:
            final[i] = final[j]
    stats = np.zeros((n_comp, 5), np.int32)
    stats[:, 0] = w
    stats[:, 1] = h
    labels[:] = 0
    for i in range(n):
        k, r, x0, x1 = final[i], run_row[i], run_x0[i], run_x1[i]
        labels[r, x0:x1] = k + 1
        stats[k, 0] = min(stats[k, 0], x0)
        stats[k, 1] = min(stats[k, 1], r)
        stats[k, 2] = max(stats[k, 2], x1)
        stats[k, 3] = max(stats[k, 3], r + 1)
        stats[k, 4] += x1 - x0
    return stats


@njit_cached
def count_in_components(
    mask: NDArray[np.uint8], labels: NDArray[np.int32], stats: NDArray[np.int32], value: int
) -> NDArray[np.int32]:
    """For each component ``k`` of ``stats``, how many of its pixels have ``mask == value``.

    Used with the raw (pre-morphology) mask of ``update_background_adaptive`` to tell a
    component made only of shadow-class pixels from one with real foreground in it. Reads
    only inside each component's box, so the cost follows the motion, not the frame.
    """
    if labels.shape != mask.shape:
        raise ValueError("count_in_components: labels must have the shape of mask")
    n = stats.shape[0]
    out = np.zeros(n, np.int32)
    v = np.uint8(value)
    for k in range(n):
        lab = k + 1
        total = 0
        for r in range(stats[k, 1], stats[k, 3]):
            lrow = labels[r]
            mrow = mask[r]
            for c in range(stats[k, 0], stats[k, 2]):
                total += (lrow[c] == lab) & (mrow[c] == v)
        out[k] = total
    return out


@njit_cached
def luma_stats(img: NDArray[np.uint8]) -> tuple[float, float]:
    """Mean luma and texture (mean absolute difference between neighbouring pixels).

    Texture averages the horizontal and the vertical neighbour differences. A covered or
    defocused lens has almost no texture whatever its brightness; every other row is
    enough for a scene-level number and halves the cost.
    """
    h, w = img.shape
    total, horiz, vert = np.int64(0), np.int64(0), np.int64(0)
    rows = vrows = 0
    for r in range(0, h, 2):
        row = img[r]
        rows += 1
        for c in range(w):
            total += np.int64(row[c])
        for c in range(w - 1):
            horiz += abs(np.int64(row[c + 1]) - np.int64(row[c]))
        if r + 1 < h:
            below = img[r + 1]
            vrows += 1
            for c in range(w):
                vert += abs(np.int64(below[c]) - np.int64(row[c]))
    if rows == 0 or w == 0:
        return 0.0, 0.0
    parts = 0
    texture = 0.0
    if w > 1:
        texture += horiz / (rows * (w - 1))
        parts += 1
    if vrows > 0:
        texture += vert / (vrows * w)
        parts += 1
    return total / (rows * w), texture / max(parts, 1)


def warm_up() -> float:
    """Compile (or load from the cache) every kernel on tiny inputs; return the seconds taken.

    A worker calls this before its first frame and reports the figure, so a cold start
    (compile, ~5 s) is visible in health rather than looking like a stalled camera. The
    inputs have the types the motion stage and ``bgr_crop`` pass (C-contiguous, writable
    arrays; Python ints and floats), so no frame ever waits for a compile. A damaged cache
    file is emptied first (``kernel_cache.check``): it costs a compile, never a start.
    """
    started = time.perf_counter()
    kernel_cache.check()
    gray = np.zeros((8, 10), np.uint8)
    small = np.zeros((4, 5), np.uint8)
    downscale_box(gray, 2, small)
    bg, dev = np.zeros((4, 5), np.float32), np.zeros((4, 5), np.float32)
    mask, tmp = np.zeros((4, 5), np.uint8), np.zeros((4, 5), np.uint8)
    update_background(bg, small, 0.02, 18, mask)
    update_background_adaptive(bg, dev, small, 0.02, 18, 2.5, 0.4, 0.95, mask)
    dilate3x3(mask, tmp)
    erode3x3(tmp, mask)
    labels = np.zeros((4, 5), np.int32)
    stats = connected_components(mask, labels)
    count_in_components(mask, labels, stats, FG_STRONG)
    luma_stats(small)
    # These modules import this one: their kernels are compiled from here, not at import.
    from smartpole.models import frames, global_motion

    global_motion.search_shift(small, bg, 1, 40, 0.03, 0, 0, np.zeros((3, 3), np.int64))
    global_motion.warp_translate(small, 0.5, -0.5, bg, tmp)
    global_motion.refine_shift(small, bg, 1, 1, 40, 0.5, -0.5, 2)

    chroma = np.zeros((4, 5), np.uint8)
    frames.yuv420_to_bgr(gray, chroma, chroma, 0, 0, 2, 2, False)
    from smartpole.models import yolox  # yolox imports this module too

    # A crop twice the model's side: the block mean (a full-frame region) and the letterbox.
    yolox.letterbox_into(np.empty((3, 4, 4), np.float32), np.zeros((8, 8, 3), np.uint8))
    return time.perf_counter() - started
