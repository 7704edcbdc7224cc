"""Square detector regions around motion, so the detector looks only where something moves.

The detector's input is square (416x416 for YOLOX-nano). Feeding it square crops around the
motion keeps small road users at (or above) native resolution, where a whole 1280x720 frame
shrunk to 416 would lose them; and several motion blobs that sit close together share one
crop, because every crop costs one inference (tens of milliseconds of one core).

Boxes and regions are ``(x0, y0, x1, y1)`` integer pixels with exclusive ends, like slicing:
a region crops as ``frame[y0:y1, x0:x1]``. Every region is a square of side
``max(min_side, ceil(long_side * (1 + margin)))`` capped at ``min(frame_w, frame_h)``,
centred on its cluster and shifted (never shrunk) to lie inside the frame. When motion
cannot be covered by ``max_regions`` squares, or one blob is larger than the largest square
the frame holds, the one region returned is the whole (non-square) frame.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

Box = tuple[int, int, int, int]

#: Beyond this many motion boxes the clustering (quadratic) is not worth it: motion is
#: everywhere (rain, a shaking camera), and only the whole frame covers it.
MAX_BOXES = 256
#: Two squares overlapping by at least this share of the smaller one are merged.
OVERLAP_MERGE = 0.5


def _union(a: Box, b: Box) -> Box:
    return (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))


def _long_side(box: Box) -> int:
    return max(box[2] - box[0], box[3] - box[1])


class _Geometry:
    """The frame and sizing rules shared by the clustering steps."""

    def __init__(
        self, frame_w: int, frame_h: int, min_side: int, margin: float, native_side: int
    ) -> None:
        self.frame_w = frame_w
        self.frame_h = frame_h
        self.max_side = min(frame_w, frame_h)
        self.min_side = min_side
        self.margin = margin
        self.native_side = native_side

    def side(self, bbox: Box) -> int:
        wanted = max(self.min_side, math.ceil(_long_side(bbox) * (1.0 + self.margin)))
        return min(wanted, self.max_side)

    def fits(self, bbox: Box) -> bool:
        return _long_side(bbox) <= self.max_side

    def square(self, bbox: Box) -> Box:
        """The square for a cluster's bounding box: centred, then shifted inside the frame."""
        side = self.side(bbox)
        x0 = self._place(bbox[0], bbox[2], side, self.frame_w)
        y0 = self._place(bbox[1], bbox[3], side, self.frame_h)
        return (x0, y0, x0 + side, y0 + side)

    @staticmethod
    def _place(lo: int, hi: int, side: int, limit: int) -> int:
        start = round((lo + hi - side) / 2)
        # Any start in [hi - side, lo] covers the box; [0, limit - side] keeps it in the frame.
        return max(max(0, hi - side), min(start, limit - side, lo))

    def near(self, a: Box, b: Box) -> bool:
        """Blobs that overlap or nearly touch (within the margin) belong to one object."""
        reach = self.margin * max(_long_side(a), _long_side(b)) / 2.0
        gap_x = max(a[0], b[0]) - min(a[2], b[2])
        gap_y = max(a[1], b[1]) - min(a[3], b[3])
        return gap_x <= reach and gap_y <= reach

    def squares_overlap(self, a: Box, b: Box) -> bool:
        sa, sb = self.square(a), self.square(b)
        iw = min(sa[2], sb[2]) - max(sa[0], sb[0])
        ih = min(sa[3], sb[3]) - max(sa[1], sb[1])
        if iw <= 0 or ih <= 0:
            return False
        smaller = min(sa[2] - sa[0], sb[2] - sb[0]) ** 2
        return iw * ih >= OVERLAP_MERGE * smaller

    def should_merge(self, a: Box, b: Box) -> bool:
        union = _union(a, b)
        if not self.fits(union):
            return False
        if self.native_side and self.side(union) <= self.native_side:
            return True
        return self.near(a, b) or self.squares_overlap(a, b)


def _clip(box: Sequence[int], frame_w: int, frame_h: int) -> Box | None:
    x0, x1 = sorted((int(box[0]), int(box[2])))
    y0, y1 = sorted((int(box[1]), int(box[3])))
    x0, x1 = max(0, x0), min(frame_w, x1)
    y0, y1 = max(0, y0), min(frame_h, y1)
    if x1 <= x0 or y1 <= y0:
        return None
    return (x0, y0, x1, y1)


def _cluster(boxes: list[Box], geometry: _Geometry) -> list[Box]:
    """Merge clusters (as bounding boxes) until no pair should merge; order-independent."""
    clusters = sorted(boxes)
    changed = True
    while changed:
        changed = False
        i = 0
        while i < len(clusters):
            j = i + 1
            while j < len(clusters):
                if geometry.should_merge(clusters[i], clusters[j]):
                    clusters[i] = _union(clusters[i], clusters.pop(j))
                    changed = True
                    j = i + 1  # the grown cluster may now reach earlier rejects
                else:
                    j += 1
            i += 1
    return clusters


def _reduce(clusters: list[Box], geometry: _Geometry, max_regions: int) -> list[Box] | None:
    """Merge the pair with the smallest union until ``max_regions`` squares remain.

    Returns None when some pair that must merge cannot fit one square.
    """
    while len(clusters) > max_regions:
        best: tuple[int, int, int] | None = None
        for i in range(len(clusters)):
            for j in range(i + 1, len(clusters)):
                union = _union(clusters[i], clusters[j])
                if geometry.fits(union) and (best is None or _long_side(union) < best[0]):
                    best = (_long_side(union), i, j)
        if best is None:
            return None
        _, i, j = best
        clusters[i] = _union(clusters[i], clusters.pop(j))
    return clusters


def _inside(inner: Box, outer: Box) -> bool:
    return (
        outer[0] <= inner[0]
        and outer[1] <= inner[1]
        and inner[2] <= outer[2]
        and inner[3] <= outer[3]
    )


def square_regions(
    boxes: Sequence[Sequence[int]],
    frame_w: int,
    frame_h: int,
    *,
    min_side: int = 160,
    margin: float = 0.35,
    max_regions: int = 4,
    native_side: int = 0,
) -> list[Box]:
    """Square regions covering every motion box (``x0, y0, x1, y1``, exclusive ends).

    Nearby or overlapping boxes are clustered; each cluster becomes a square enlarged by
    ``margin`` (35 % on its long side by default), at least ``min_side``, at most the frame's
    short side, inside the frame. Squares overlapping by half of the smaller one are merged.
    With ``native_side`` (pass the detector's input size) two clusters that fit together in
    a square no larger than that are merged too: one inference instead of two, at no loss
    of resolution, since the crop is scaled up to the model's input anyway.

    More than ``max_regions`` squares are first merged pairwise (smallest union first); if
    that is impossible, or one box is larger than the biggest square, the single region
    returned is the whole frame ``(0, 0, frame_w, frame_h)``. Boxes are clipped to the
    frame; boxes entirely outside it are ignored. Sorted top to bottom, then left to right.
    """
    if frame_w <= 0 or frame_h <= 0:
        raise ValueError(f"frame size must be positive, got {frame_w}x{frame_h}")
    if min_side <= 0 or margin < 0 or max_regions < 1 or native_side < 0:
        raise ValueError("min_side and max_regions must be >= 1; margin and native_side >= 0")
    whole = [(0, 0, frame_w, frame_h)]
    clipped = [c for c in (_clip(b, frame_w, frame_h) for b in boxes) if c is not None]
    if not clipped:
        return []
    geometry = _Geometry(frame_w, frame_h, min_side, margin, native_side)
    if len(clipped) > MAX_BOXES or not all(geometry.fits(b) for b in clipped):
        return whole
    clusters = _reduce(_cluster(clipped, geometry), geometry, max_regions)
    if clusters is None:
        return whole
    squares = sorted({geometry.square(c) for c in clusters}, key=lambda s: (s[1], s[0], s[2]))
    # A square inside another adds an inference and nothing else: its boxes are covered.
    return [
        s
        for i, s in enumerate(squares)
        if not any(i != j and _inside(s, o) for j, o in enumerate(squares))
    ]


#: A road user smaller than this in the detector's input (pixels of its long side) is poorly
#: detected by a COCO-trained model: it gets a crop of its own, scaled up.
MIN_OBJECT_PX = 24


def detector_regions(
    boxes: Sequence[Sequence[int]],
    frame_w: int,
    frame_h: int,
    *,
    native_side: int,
    min_side: int = 160,
    margin: float = 0.35,
    max_regions: int = 4,
    whole: bool = False,
) -> list[Box]:
    """The crops the detector looks at to see every box at a size it was trained on.

    Why not always crops: a COCO-trained detector finds a vehicle best when it fills tens of
    pixels of its input, not hundreds. A crop of a small frame is scaled *up* to the input
    (a 360-pixel square of a 640x360 frame by 1.16), and a car already 110 pixels long then
    fills 130 of the input's 416: YOLOX-nano misses such cars that it finds at once in the
    whole frame shrunk to 416 (measured on the oblique 10 fps street clip: 3 of 8 counted
    with crops, 6 of 8 whole). So every box that would still be ``MIN_OBJECT_PX`` long in
    the whole frame shrunk to ``native_side`` is looked at in the whole frame (one
    inference, whatever the number of such boxes); only the boxes too small for that get
    square crops (``square_regions``), scaled up so they reach a useful size. ``whole``
    asks for the whole frame regardless (a periodic pass that catches what motion missed).

    At most ``max_regions`` crops in all, the whole frame counting as one; boxes are
    ``x0, y0, x1, y1`` (exclusive ends) and clipped to the frame.
    """
    if native_side < 1:
        raise ValueError(f"native_side must be >= 1, got {native_side}")
    if frame_w <= 0 or frame_h <= 0:
        raise ValueError(f"frame size must be positive, got {frame_w}x{frame_h}")
    clipped = [c for c in (_clip(b, frame_w, frame_h) for b in boxes) if c is not None]
    if len(clipped) > MAX_BOXES:
        return [(0, 0, frame_w, frame_h)]
    # One road user often moves as several blobs (roof, wheels, shadow): its size is that of
    # the blobs that lie together, not of each piece.
    geometry = _Geometry(frame_w, frame_h, min_side, margin, 0)
    clipped = _cluster(clipped, geometry)
    scale = native_side / max(frame_w, frame_h)
    small = [b for b in clipped if _long_side(b) * scale < MIN_OBJECT_PX]
    frame: Box = (0, 0, frame_w, frame_h)
    out: list[Box] = [frame] if whole or len(small) < len(clipped) else []
    budget = max_regions - len(out)
    if small and budget >= 1:
        crops = square_regions(
            small,
            frame_w,
            frame_h,
            min_side=min_side,
            margin=margin,
            max_regions=budget,
            native_side=native_side,
        )
        out += [c for c in crops if c not in out]
    return out
