"""Global motion of the camera (a pole swaying in the wind, a mount that drifts), measured
and taken out before background modelling.

A pole camera sways by a few pixels; to a background model every edge of the scene then
looks like motion, so it either boxes the whole frame or (over half the frame) calls the
camera shaken and re-learns the background, blind for a second each time. Instead the
motion stage estimates the translation of each working-resolution frame against its
background and samples the frame back into the background's coordinates
(``GlobalMotion``); only a jump beyond the search range or a new view still trips the
shaken/re-seed logic of ``motion``.

The estimate is a search, not phase correlation: an FFT of the working image costs more than
the whole motion stage. ``search_shift`` descends on a truncated sum of squared differences
over every seventh row, from the last frame's shift: a swaying camera moves a pixel or two
between frames, so 9 to 15 shifts are tried instead of all 81 within ``SEARCH_RADIUS``, and
what really moves (a car) is an outlier at every shift whose weight the truncation caps. A
parabola through the costs next to the minimum gives a sub-pixel start that a Gauss-Newton
round on the same rows refine (``refine_shift``). A slow drift is followed by re-anchoring
the background onto the camera's new rest position (an integer shift of the model, so no
blur), which keeps the search centred however far the camera wanders.

``shake_meter.ShakeMeter`` turns the per-frame camera offset into the numbers operators
see (``diag cameras``: ``shake_px``, ``drift_px``).
"""

from __future__ import annotations

import math
from typing import Final

import numpy as np
from numpy.typing import NDArray

from smartpole.models.kernels import njit_cached

#: Integer shifts searched each way, in working pixels (8 native pixels on a 640-wide
#: camera, 16 on 1280, 4 on 320): beyond that the frame is shaken, not swaying.
SEARCH_RADIUS: Final = 4
#: Every this many rows of the working image is sampled for the search (odd, so a texture
#: with an even period, such as pixel blocks, is sampled at all its phases).
SAMPLE_STEP: Final = 7
#: A squared difference counts at most this (grey levels, squared): a moving car or a
#: flickering leaf weighs no more than any other mismatched pixel.
TRUNCATE: Final = 40
#: Gauss-Newton rounds that refine the search's sub-pixel estimate (``refine_shift``).
REFINE_ROUNDS: Final = 1
#: A search result this close to no shift at all (working pixels, each axis) is taken as
#: none without refining it: most cameras do not sway most of the time.
STEADY: Final = 0.1
#: The best shift must beat the previous one by this share of its cost to replace it:
#: on a flat cost surface (little texture, noise) the estimate stays put instead of wandering.
KEEP_MARGIN: Final = 0.03
#: Shifts smaller than this (working pixels, each axis) are taken as none: a static camera's
#: estimate jitters by a tenth of a pixel, and resampling for it would only blur the frame.
DEADBAND: Final = 0.2
#: The rest position follows the offset with this weight per frame (a slow mean that sway
#: averages out of and drift moves); once it is a working pixel or more away, the
#: background is re-anchored onto it.
DRIFT_RATE: Final = 0.02


@njit_cached
def search_shift(
    frame: NDArray[np.uint8],
    bg: NDArray[np.float32],
    step: int,
    truncate: int,
    keep: float,
    start_x: int,
    start_y: int,
    costs: NDArray[np.int64],
) -> tuple[int, int]:
    """The integer shift (dx, dy) of ``frame`` against ``bg`` with the least truncated SSD,
    found by descent from (``start_x``, ``start_y``); ``costs`` (a (2r+1)^2 grid for shifts
    within r = ``SEARCH_RADIUS``-like bounds) receives every cost computed, -1 elsewhere.

    The cost of a shift d: the sum over sampled pixels p of
    ``min((frame[p + d] - round(bg[p]))^2, truncate^2)``; sampled are every ``step``-th row,
    all its columns that every shift keeps inside the frame (whole rows: the inner loop is
    a contiguous integer reduction, which LLVM vectorises). Descent: compute the 3x3 shifts
    around the current one, move to the best if it beats the current by ``keep`` of its
    cost, repeat; a swaying camera moves a pixel or two between frames, so one or two
    rounds (9-15 shifts) replace a search of all (2r+1)^2. It ends next to the minimum,
    with the neighbours the sub-pixel fit needs already computed.
    """
    h, w = frame.shape
    n = costs.shape[0]
    radius = (n - 1) // 2
    if bg.shape != frame.shape or costs.shape != (n, n) or n % 2 == 0 or step < 1:
        raise ValueError("search_shift: bg must match frame, costs must be (2r+1, 2r+1)")
    costs[:, :] = -1
    cap = np.int32(truncate * truncate)
    first = radius + step // 2
    rows = max(0, (h - radius - first + step - 1) // step)
    ref = np.empty((rows, w), np.int32)
    for k in range(rows):
        brow = bg[first + k * step]
        for x in range(w):
            ref[k, x] = np.int32(brow[x] + np.float32(0.5))
    cx = min(max(start_x, -radius), radius)
    cy = min(max(start_y, -radius), radius)
    while True:
        for j in range(max(cy - 1, -radius), min(cy + 1, radius) + 1):
            for i in range(max(cx - 1, -radius), min(cx + 1, radius) + 1):
                if costs[j + radius, i + radius] >= 0:
                    continue
                total = 0
                for k in range(rows):
                    frow = frame[first + k * step + j]
                    rrow = ref[k]
                    for x in range(radius, w - radius):
                        d = np.int32(frow[x + i]) - rrow[x]
                        total += min(d * d, cap)
                costs[j + radius, i + radius] = total
        here = costs[cy + radius, cx + radius]
        bx, by, best = cx, cy, here
        for j in range(max(cy - 1, -radius), min(cy + 1, radius) + 1):
            for i in range(max(cx - 1, -radius), min(cx + 1, radius) + 1):
                c = costs[j + radius, i + radius]
                if c < best:
                    bx, by, best = i, j, c
        if (bx == cx and by == cy) or best >= (1.0 - keep) * here:
            return cx, cy
        cx, cy = bx, by


@njit_cached
def warp_translate(
    src: NDArray[np.uint8],
    dx: float,
    dy: float,
    fill: NDArray[np.float32],
    out: NDArray[np.uint8],
) -> None:
    """``out[y, x] = src[y + dy, x + dx]`` (bilinear), or the rounded ``fill[y, x]`` where
    that point (or its right or lower neighbour) lies outside ``src``: pixels the camera
    does not see now read as unchanged background, neither motion nor something to learn.

    The inside is a rectangle for a translation and the weights are the same everywhere,
    so each row is two source rows converted to float once, then one loop without edge
    cases or aliasing that LLVM vectorises (five times faster than gathering the four
    neighbours per pixel from the uint8 rows).
    """
    h, w = src.shape
    if fill.shape != src.shape or out.shape != src.shape:
        raise ValueError("warp_translate: src, fill and out must have the same shape")
    fx0 = math.floor(dx)
    fy0 = math.floor(dy)
    ax = np.float32(dx - fx0)
    ay = np.float32(dy - fy0)
    one, half = np.float32(1.0), np.float32(0.5)
    bx, by = one - ax, one - ay
    # Inside: 0 <= x + fx0 and x + fx0 + 1 <= w - 1 (the same for y).
    xlo, xhi = min(max(-fx0, 0), w), max(min(w - 1 - fx0, w), 0)
    ylo, yhi = min(max(-fy0, 0), h), max(min(h - 1 - fy0, h), 0)
    n = xhi - xlo
    top = np.empty(w + 1, np.float32)
    bottom = np.empty(w + 1, np.float32)
    for y in range(h):
        orow = out[y]
        frow = fill[y]
        if y < ylo or y >= yhi or n <= 0:
            for x in range(w):
                orow[x] = np.uint8(frow[x] + half)
            continue
        for x in range(xlo):
            orow[x] = np.uint8(frow[x] + half)
        for x in range(xhi, w):
            orow[x] = np.uint8(frow[x] + half)
        r0 = src[y + fy0, xlo + fx0 : xhi + fx0 + 1]
        r1 = src[y + fy0 + 1, xlo + fx0 : xhi + fx0 + 1]
        for i in range(n + 1):
            top[i] = np.float32(r0[i])
            bottom[i] = np.float32(r1[i])
        dst = orow[xlo:xhi]
        for i in range(n):
            v = by * (bx * top[i] + ax * top[i + 1]) + ay * (bx * bottom[i] + ax * bottom[i + 1])
            dst[i] = np.uint8(np.int32(v + half))  # v >= 0: truncation is the floor


@njit_cached
def refine_shift(
    frame: NDArray[np.uint8],
    bg: NDArray[np.float32],
    step: int,
    radius: int,
    truncate: int,
    dx: float,
    dy: float,
    rounds: int,
) -> tuple[float, float]:
    """(dx, dy) refined by Gauss-Newton (Lucas-Kanade for one translation): ``rounds`` times,
    solve ``sum(g g^T) delta = sum(g (bg - frame(p + d)))`` over the sampled rows, where g is
    the background's gradient and ``frame(p + d)`` is bilinear.

    Why not the parabola through the search costs alone: it is biased toward whole pixels
    (off by a third of a pixel here), and a background learned from frames placed that far
    off keeps a smeared copy of every strong edge, which then shows up as motion. Pixels
    that differ by more than ``truncate`` (a car, a leaf) are left out, as in the search.
    Returns the input unchanged when the view has no gradient to go by.
    """
    h, w = frame.shape
    if bg.shape != frame.shape or step < 1 or radius < 1:
        raise ValueError("refine_shift: bg must match frame")
    cut = np.float32(truncate)
    for _ in range(rounds):
        fx0 = math.floor(dx)
        fy0 = math.floor(dy)
        ax = np.float32(dx - fx0)
        ay = np.float32(dy - fy0)
        one = np.float32(1.0)
        w00, w01 = (one - ax) * (one - ay), ax * (one - ay)
        w10, w11 = (one - ax) * ay, ax * ay
        # Sampled pixels whose four source pixels are inside the frame.
        xlo = max(1, -fx0)
        xhi = min(w - 1, w - 1 - fx0)
        sxx = sxy = syy = bx = by = 0.0
        for y in range(radius + step // 2, h - radius, step):
            sy = y + fy0
            if y < 1 or y >= h - 1 or sy < 0 or sy + 1 >= h:
                continue
            r0, r1 = frame[sy], frame[sy + 1]
            up, here, down = bg[y - 1], bg[y], bg[y + 1]
            for x in range(xlo, xhi):
                sx = x + fx0
                f = (
                    w00 * np.float32(r0[sx])
                    + w01 * np.float32(r0[sx + 1])
                    + w10 * np.float32(r1[sx])
                    + w11 * np.float32(r1[sx + 1])
                )
                e = here[x] - f
                if abs(e) > cut:
                    continue
                gx = np.float32(0.5) * (here[x + 1] - here[x - 1])
                gy = np.float32(0.5) * (down[x] - up[x])
                sxx += gx * gx
                sxy += gx * gy
                syy += gy * gy
                bx += gx * e
                by += gy * e
        det = sxx * syy - sxy * sxy
        if det <= 1e-6 * (sxx + syy) * (sxx + syy) or det <= 0.0:
            return dx, dy
        # frame(p + d + delta) ~ frame(p + d) + g . delta = bg(p): solve for delta.
        ddx = (syy * bx - sxy * by) / det
        ddy = (sxx * by - sxy * bx) / det
        dx += max(-1.0, min(1.0, ddx))
        dy += max(-1.0, min(1.0, ddy))
    return dx, dy


def subpixel(costs: NDArray[np.int64], row: int, col: int) -> tuple[float, float]:
    """The offset of the true minimum from the grid minimum at (row, col), per axis, from
    a parabola through it and its two neighbours (0 at the edge of the search)."""
    n = costs.shape[0]

    def vertex(lo: float, mid: float, hi: float) -> float:
        curve = lo - 2.0 * mid + hi
        return 0.0 if curve <= 0.0 else max(-0.5, min(0.5, 0.5 * (lo - hi) / curve))

    ox = 0.0
    oy = 0.0
    if 0 < col < n - 1:
        ox = vertex(float(costs[row, col - 1]), float(costs[row, col]), float(costs[row, col + 1]))
    if 0 < row < n - 1:
        oy = vertex(float(costs[row - 1, col]), float(costs[row, col]), float(costs[row + 1, col]))
    return ox, oy


class GlobalMotion:
    """The camera's translation against one background model, at working resolution.

    ``estimate`` measures where the frame's content sits relative to the background's
    coordinates; ``compensate`` samples the frame into them; ``follow_drift`` re-anchors
    the background when the rest position has moved. ``offset`` (working pixels) is the
    total since ``reset``: re-anchoring moves the model, not the camera's offset.
    """

    def __init__(self, shape: tuple[int, int]) -> None:
        n = 2 * SEARCH_RADIUS + 1
        self._costs = np.zeros((n, n), np.int64)
        self._spare = np.zeros(shape, np.float32)
        self.shift = (0.0, 0.0)  # of the current frame against the background, working px
        self.anchor = (0, 0)  # integer re-anchoring applied to the background since reset
        self._rest = (0.0, 0.0)  # slow mean of ``shift``

    def reset(self) -> None:
        """A new background: it is anchored where the camera is now."""
        self.shift = (0.0, 0.0)
        self.anchor = (0, 0)
        self._rest = (0.0, 0.0)

    @property
    def offset(self) -> tuple[float, float]:
        """The camera's offset (x, y) since ``reset``, in working pixels."""
        return (self.anchor[0] + self.shift[0], self.anchor[1] + self.shift[1])

    def estimate(self, small: NDArray[np.uint8], bg: NDArray[np.float32]) -> tuple[float, float]:
        """The shift of ``small`` against ``bg``: descent from the last one (which it keeps
        unless another is clearly better: a flat, noisy texture does not make it wander),
        refined to sub-pixel, zero within ``DEADBAND``."""
        h, w = small.shape
        r = SEARCH_RADIUS
        if h <= 2 * r + SAMPLE_STEP or w <= 4 * r:
            return self.shift  # too small an image to search: no compensation
        costs = self._costs
        col, row = search_shift(
            small,
            bg,
            SAMPLE_STEP,
            TRUNCATE,
            KEEP_MARGIN,
            round(self.shift[0]),
            round(self.shift[1]),
            costs,
        )
        col += r
        row += r
        ox, oy = subpixel(costs, row, col)
        dx, dy = col - r + ox, row - r + oy
        if abs(dx) >= STEADY or abs(dy) >= STEADY:  # a steady camera skips the refinement
            dx, dy = refine_shift(small, bg, SAMPLE_STEP, r, TRUNCATE, dx, dy, REFINE_ROUNDS)
        dx = min(max(dx, -r), r)
        dy = min(max(dy, -r), r)
        if abs(dx) < DEADBAND and abs(dy) < DEADBAND:
            dx = dy = 0.0
        self.shift = (dx, dy)
        return self.shift

    def compensate(
        self, small: NDArray[np.uint8], bg: NDArray[np.float32], out: NDArray[np.uint8]
    ) -> NDArray[np.uint8]:
        """``small`` in the background's coordinates: ``out``, or ``small`` itself when the
        shift is none (no resampling, no blur for a steady camera)."""
        dx, dy = self.shift
        if dx == 0.0 and dy == 0.0:
            return small
        warp_translate(small, dx, dy, bg, out)
        return out

    def follow_drift(
        self, small: NDArray[np.uint8], bg: NDArray[np.float32], dev: NDArray[np.float32]
    ) -> None:
        """Move the background onto the camera's new rest position once it drifted a whole
        working pixel: an integer shift of the model (lossless inside; the strip that comes
        into view is taken from the frame), so the search stays centred."""
        rx, ry = self._rest
        dx, dy = self.shift
        rx += DRIFT_RATE * (dx - rx)
        ry += DRIFT_RATE * (dy - ry)
        # Whole pixels only, truncated: after a move the rest sits within a pixel of the
        # new anchor, so sway about a half-pixel point does not flap it back and forth.
        kx, ky = int(rx), int(ry)
        if kx == 0 and ky == 0:
            self._rest = (rx, ry)
            return
        # bg'(p) = bg(p - k): the content the camera now sees at p + shift - k.
        roll(bg, kx, ky, small.astype(np.float32), self._spare)
        roll(dev, kx, ky, np.zeros_like(dev), self._spare)
        self.anchor = (self.anchor[0] + kx, self.anchor[1] + ky)
        self.shift = (dx - kx, dy - ky)
        self._rest = (rx - kx, ry - ky)


def roll(
    img: NDArray[np.float32],
    kx: int,
    ky: int,
    fill: NDArray[np.float32],
    spare: NDArray[np.float32],
) -> None:
    """``img[p] = img[p - (kx, ky)]`` in place; what has no source comes from ``fill``."""
    h, w = img.shape
    spare[:] = fill
    ys, yd = (slice(0, h - ky), slice(ky, h)) if ky >= 0 else (slice(-ky, h), slice(0, h + ky))
    xs, xd = (slice(0, w - kx), slice(kx, w)) if kx >= 0 else (slice(-kx, w), slice(0, w + kx))
    spare[yd, xd] = img[ys, xs]
    img[:] = spare
