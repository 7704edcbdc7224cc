"""The YOLOX family's arithmetic, kept apart from ONNX Runtime so it can be tested on its own.

Everything here is plain vectorised NumPy on arrays: the letterbox that turns a crop into the
model's square input, the check of a model's input/output shapes, the decoder of the raw
YOLOX head, and non-maximum suppression. ``models.detector`` wires these around an
inference session.

Why the raw head: the YOLOX exports in use (``decode_in_inference=False``, the official demo
export) end with the per-anchor ``[x, y, log w, log h, objectness, class probabilities]`` of
the three stride levels 8/16/32, with the sigmoids already applied to objectness and classes.
Decoding here is a few array operations, and the grid is built once per model size.

Why a Numba letterbox: OpenCV is a bench-only dependency, and the same resize in NumPy
(fancy-index gathers, then a transpose to CHW) cost 10 ms per 416 region, half an inference.
The kernel writes the CHW float32 input in one pass and is cached on disk like
``models.kernels`` (see there for where the cache lives).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from numpy.typing import NDArray

from smartpole.models.errors import ModelError
from smartpole.models.kernels import njit_cached

STRIDES = (8, 16, 32)
PAD_VALUE = 114  # YOLOX's letterbox grey; the model was trained with it
_MAX_LOG_WH = 12.0  # exp(12) * 32 px is far beyond any frame: clamps garbage, never real boxes

F32 = NDArray[np.float32]
I64 = NDArray[np.int64]
U8 = NDArray[np.uint8]
Bools = NDArray[np.bool_]


@dataclass(frozen=True)
class YoloxLayout:
    """What the model's shapes say: square input side, class count, anchors, batch support."""

    input_size: int
    num_classes: int
    anchors: int
    dynamic_batch: bool


def anchors_for(size: int) -> int:
    """Number of output rows a YOLOX head has for a ``size`` x ``size`` input."""
    return sum((size // stride) ** 2 for stride in STRIDES)


def _dim(value: object) -> int | None:
    """A fixed dimension as an int; None for a symbolic (dynamic) one such as 'batch'."""
    if isinstance(value, int | np.integer) and not isinstance(value, bool):
        return int(value)
    return None


def check_layout(
    input_shape: Sequence[object],
    input_type: str,
    output_shape: Sequence[object],
    output_type: str,
    max_class_id: int,
    *,
    source: str,
) -> YoloxLayout:
    """Verify a YOLOX model's input/output shapes; raise ``ModelError`` naming what was found.

    Expected: input ``[1, 3, S, S]`` float32 with S a multiple of 32, output ``[1, N, 5 + C]``
    float32 with ``N = sum((S / s) ** 2 for s in 8, 16, 32)`` and ``C > max_class_id``. A
    symbolic batch dimension is accepted on both (a model exported with dynamic batch).
    """
    expected_in = "[1, 3, S, S] tensor(float) with S a multiple of 32"

    def fail(what: str) -> ModelError:
        return ModelError(
            f"{source}: not a usable YOLOX model: {what} "
            f"(found input {list(input_shape)} {input_type}, "
            f"output {list(output_shape)} {output_type})"
        )

    if len(input_shape) != 4 or input_type != "tensor(float)":
        raise fail(f"expected input {expected_in}")
    batch_in, channels, height, width = (_dim(d) for d in input_shape)
    if batch_in not in (1, None) or channels != 3:
        raise fail(f"expected input {expected_in}")
    if height is None or width is None or height != width or height % 32 or height <= 0:
        raise fail(f"expected input {expected_in}")
    size = height
    anchors = anchors_for(size)
    if len(output_shape) != 3 or output_type != "tensor(float)":
        raise fail(f"expected output [1, {anchors}, 5 + C] tensor(float)")
    batch_out, rows, columns = (_dim(d) for d in output_shape)
    if batch_out not in (1, None) or rows != anchors or columns is None or columns < 6:
        raise fail(f"expected output [1, {anchors}, 5 + C] tensor(float) for a {size} input")
    num_classes = columns - 5
    if max_class_id >= num_classes:
        raise fail(
            f"the class map names class id {max_class_id} but the model has only "
            f"{num_classes} classes (ids 0..{num_classes - 1})"
        )
    return YoloxLayout(size, num_classes, anchors, batch_in is None and batch_out is None)


@lru_cache(maxsize=4)
def grid_for(size: int) -> tuple[F32, F32]:
    """Per-anchor grid cell (x, y) and stride, in the head's row order (stride 8 first)."""
    grids: list[F32] = []
    strides: list[F32] = []
    for stride in STRIDES:
        cells = size // stride
        ys, xs = np.meshgrid(np.arange(cells), np.arange(cells), indexing="ij")
        grids.append(np.stack([xs, ys], axis=-1).reshape(-1, 2).astype(np.float32))
        strides.append(np.full((cells * cells, 1), stride, dtype=np.float32))
    grid = np.concatenate(grids)
    stride_col = np.concatenate(strides)
    grid.flags.writeable = False
    stride_col.flags.writeable = False
    return grid, stride_col


_njit = njit_cached  # one decorator, one set of cache rules for every kernel (kernels.py)


@_njit
def _letterbox_kernel(src: U8, out: F32, new_h: int, new_w: int, pad: float) -> None:
    """Bilinear resize of ``src`` (HxWx3 uint8) into ``out[:, :new_h, :new_w]`` (CHW float32).

    Half-pixel centred, as OpenCV's INTER_LINEAR; ``pad`` everywhere else in ``out``.
    """
    height, width = src.shape[0], src.shape[1]
    size_h, size_w = out.shape[1], out.shape[2]
    if out.shape[0] != 3 or src.shape[2] != 3 or new_h > size_h or new_w > size_w:
        raise ValueError("letterbox: src must be HxWx3 and out 3xSxS with the image inside")
    scale_y = height / new_h
    scale_x = width / new_w
    x_lo = np.empty(new_w, dtype=np.int64)
    x_hi = np.empty(new_w, dtype=np.int64)
    x_w = np.empty(new_w, dtype=np.float32)
    for x in range(new_w):
        pos = min(max((x + 0.5) * scale_x - 0.5, 0.0), width - 1.0)
        lo = int(pos)
        x_lo[x] = lo
        x_hi[x] = min(lo + 1, width - 1)
        x_w[x] = pos - lo
    for y in range(size_h):
        if y >= new_h:
            out[:, y, :] = pad
            continue
        pos = min(max((y + 0.5) * scale_y - 0.5, 0.0), height - 1.0)
        y0 = int(pos)
        y1 = min(y0 + 1, height - 1)
        wy = np.float32(pos - y0)
        for x in range(new_w):
            a = x_lo[x]
            b = x_hi[x]
            wx = x_w[x]
            for c in range(3):
                top = np.float32(src[y0, a, c])
                top += (np.float32(src[y0, b, c]) - top) * wx
                bottom = np.float32(src[y1, a, c])
                bottom += (np.float32(src[y1, b, c]) - bottom) * wx
                out[c, y, x] = top + (bottom - top) * wy
        out[:, y, new_w:] = pad


@_njit
def _block_mean_kernel(src: U8, factor: int, out: U8) -> None:
    """Average each ``factor`` x ``factor`` block of ``src`` (HxWx3) into ``out``, rounded."""
    count = factor * factor
    for y in range(out.shape[0]):
        for x in range(out.shape[1]):
            for c in range(3):
                total = 0
                for dy in range(factor):
                    for dx in range(factor):
                        total += src[y * factor + dy, x * factor + dx, c]
                out[y, x, c] = (total + count // 2) // count


def letterbox_into(buffer: F32, crop: U8) -> float:
    """Write ``crop`` (HxWx3 BGR uint8) into ``buffer`` (3xSxS) as YOLOX expects; return scale.

    The crop is scaled to fit with its aspect kept, placed at the top-left, and the rest is
    padded with 114 (YOLOX's own preprocessing). Values stay BGR 0..255, not normalised. A
    shrink by 2x or more first averages whole pixel blocks, so a large crop (a full-frame
    fallback region) is not aliased the way plain bilinear sampling would alias it.
    """
    if crop.ndim != 3 or crop.shape[2] != 3 or crop.shape[0] == 0 or crop.shape[1] == 0:
        raise ValueError(f"expected an HxWx3 BGR crop, got shape {crop.shape}")
    if crop.dtype != np.uint8:
        raise ValueError(f"expected a uint8 crop, got {crop.dtype}")
    size = buffer.shape[1]
    scale = min(size / crop.shape[0], size / crop.shape[1])
    new_h = max(1, min(size, int(crop.shape[0] * scale)))
    new_w = max(1, min(size, int(crop.shape[1] * scale)))
    # One memory layout for the kernels: a strided view would compile (and cache) a second
    # specialisation of each; the copy of a crop costs a fraction of a millisecond.
    crop = np.ascontiguousarray(crop)
    src = crop
    factor = min(crop.shape[0] // new_h, crop.shape[1] // new_w)
    if factor >= 2:
        src = np.empty((crop.shape[0] // factor, crop.shape[1] // factor, 3), dtype=np.uint8)
        _block_mean_kernel(crop, factor, src)
    _letterbox_kernel(src, buffer, new_h, new_w, float(PAD_VALUE))
    return float(scale)


def decode(
    raw: F32, class_ids: I64, score_threshold: float, input_size: int
) -> tuple[F32, NDArray[np.float32], I64]:
    """Decode one image's raw head output ``(N, 5 + C)`` into boxes in model-input pixels.

    Returns ``(boxes xyxy (K, 4), scores (K,), label (K,))`` for the anchors whose best score
    among ``class_ids`` reaches the threshold; ``label`` indexes into ``class_ids``. The score
    is objectness times class probability. Only the classes of the class map compete for an
    anchor's label: an anchor that is 0.5 "train" and 0.4 "bus" is reported as a bus, which is
    what a traffic count wants.
    """
    grid, stride = grid_for(input_size)
    if raw.shape[0] != grid.shape[0]:
        raise ValueError(f"expected {grid.shape[0]} anchors, got {raw.shape[0]}")
    class_scores = raw[:, 4:5] * raw[:, 5 + class_ids]
    label = class_scores.argmax(axis=1)
    score = class_scores[np.arange(raw.shape[0]), label]
    keep = np.flatnonzero(score >= score_threshold)
    rows = raw[keep]
    centre = (rows[:, 0:2] + grid[keep]) * stride[keep]
    half = np.exp(np.minimum(rows[:, 2:4], _MAX_LOG_WH)) * stride[keep] * 0.5
    boxes = np.concatenate([centre - half, centre + half], axis=1).astype(np.float32)
    return boxes, score[keep].astype(np.float32), label[keep].astype(np.int64)


def pairwise_iou(a: F32, b: F32) -> F32:
    """IoU of every box in ``a`` (K, 4) with every box in ``b`` (M, 4), xyxy."""
    ix0 = np.maximum(a[:, None, 0], b[None, :, 0])
    iy0 = np.maximum(a[:, None, 1], b[None, :, 1])
    ix1 = np.minimum(a[:, None, 2], b[None, :, 2])
    iy1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(ix1 - ix0, 0, None) * np.clip(iy1 - iy0, 0, None)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    out: F32 = np.where(union > 0, inter / np.where(union > 0, union, 1), 0).astype(np.float32)
    return out


def nms(
    boxes: F32,
    scores: F32,
    labels: I64 | None,
    iou_threshold: float,
    *,
    demote: Bools | None = None,
) -> I64:
    """Greedy non-maximum suppression; returns kept indices, best first.

    With ``labels``, boxes of different labels never suppress each other (class-aware); the
    boxes are shifted apart per label so one pass does all classes at once. Boxes flagged in
    ``demote`` (cut by a region edge) rank after all the others whatever their score: the
    whole view of an object must win over a higher-scored slice of it. Ties in score keep
    the lower index, so the result does not depend on the sort's stability.
    """
    if boxes.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    work = boxes.astype(np.float64)
    if labels is not None:
        span = float(np.abs(work).max()) * 2 + 1
        work = work + (labels.astype(np.float64) * span)[:, None]
    rank = np.zeros(len(scores), dtype=np.int64) if demote is None else demote.astype(np.int64)
    order = np.lexsort((np.arange(len(scores)), -scores.astype(np.float64), rank))
    x0, y0, x1, y1 = work[:, 0], work[:, 1], work[:, 2], work[:, 3]
    area = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    kept: list[int] = []
    while order.size:
        best = int(order[0])
        kept.append(best)
        rest = order[1:]
        iw = np.clip(np.minimum(x1[best], x1[rest]) - np.maximum(x0[best], x0[rest]), 0, None)
        ih = np.clip(np.minimum(y1[best], y1[rest]) - np.maximum(y0[best], y0[rest]), 0, None)
        inter = iw * ih
        union = area[best] + area[rest] - inter
        iou = np.where(union > 0, inter / np.where(union > 0, union, 1), 0)
        order = rest[iou <= iou_threshold]
    return np.asarray(kept, dtype=np.int64)


def drop_cut_boxes(
    boxes: F32, labels: I64, cut: Bools, order: I64, cover_threshold: float = 0.6
) -> I64:
    """Drop boxes cut by a region edge when another kept box of the label covers them.

    An object half inside one region and whole inside an overlapping one gives a cut box and a
    whole box whose IoU can be well below the NMS threshold; counting both would make two
    tracks of one vehicle. ``order`` is the NMS result (indices); returns the survivors in the
    same order.
    """
    if order.size < 2 or not cut[order].any():
        return order
    sel = boxes[order]
    ix0 = np.maximum(sel[:, None, 0], sel[None, :, 0])
    iy0 = np.maximum(sel[:, None, 1], sel[None, :, 1])
    ix1 = np.minimum(sel[:, None, 2], sel[None, :, 2])
    iy1 = np.minimum(sel[:, None, 3], sel[None, :, 3])
    inter = np.clip(ix1 - ix0, 0, None) * np.clip(iy1 - iy0, 0, None)
    area = np.clip(sel[:, 2] - sel[:, 0], 0, None) * np.clip(sel[:, 3] - sel[:, 1], 0, None)
    covered = inter / np.maximum(area, 1e-6)[:, None]  # row i: share of box i inside box j
    same = labels[order][:, None] == labels[order][None, :]
    np.fill_diagonal(same, False)
    bigger = area[None, :] > area[:, None]
    redundant = cut[order] & ((covered > cover_threshold) & same & bigger).any(axis=1)
    survivors: I64 = order[~redundant]
    return survivors


def is_cut(
    boxes: F32, region: tuple[int, int, int, int], frame_size: tuple[int, int] | None
) -> Bools:
    """Which boxes touch an edge of their region that is not also an edge of the frame."""
    x0, y0, x1, y1 = region
    margin = 2.0
    frame_w, frame_h = frame_size if frame_size is not None else (math.inf, math.inf)
    cut = np.zeros(boxes.shape[0], dtype=np.bool_)
    if x0 > 0:
        cut |= boxes[:, 0] <= x0 + margin
    if y0 > 0:
        cut |= boxes[:, 1] <= y0 + margin
    if x1 < frame_w:
        cut |= boxes[:, 2] >= x1 - margin
    if y1 < frame_h:
        cut |= boxes[:, 3] >= y1 - margin
    return cut
