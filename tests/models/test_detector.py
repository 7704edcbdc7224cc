"""YOLOX detection: shape checks at load, decode/NMS arithmetic, regions, and real frames."""

from __future__ import annotations

import itertools
import math
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from helpers.paths import SHARED_DATA
from smartpole.models.detector import Detection, YoloxDetector
from smartpole.models.errors import ModelError
from smartpole.models.regions import MIN_OBJECT_PX, detector_regions, square_regions
from smartpole.models.yolox import (
    anchors_for,
    check_layout,
    decode,
    grid_for,
    letterbox_into,
    nms,
)

DATA = SHARED_DATA
MODEL = DATA / "models" / "yolox-nano-coco-416.onnx"
VIDEO = DATA / "video" / "street-2lane-640x352.mp4"
COCO = {0: "person", 1: "bicycle", 2: "car", 3: "motorcycle", 5: "bus", 7: "truck"}
VEHICLES = {"car", "truck", "bus"}
F = "tensor(float)"

# Boxes read by eye off the frames (written to PNG and looked at): a white car with a roof
# rack coming toward the camera (20), a white pickup (180), a dark SUV (420).
SEEN = {
    20: (295.0, 160.0, 440.0, 256.0),
    180: (262.0, 146.0, 428.0, 258.0),
    420: (277.0, 141.0, 422.0, 247.0),
}

pytestmark = pytest.mark.skipif(not MODEL.is_file(), reason="the shared model is not here")


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.fixture(scope="module")
def detector() -> YoloxDetector:
    return YoloxDetector(MODEL, COCO)


@pytest.fixture(scope="module")
def frames() -> dict[int, NDArray[np.uint8]]:
    wanted = set(SEEN)
    found: dict[int, NDArray[np.uint8]] = {}
    with av.open(str(VIDEO)) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index in wanted:
                found[index] = np.asarray(frame.to_ndarray(format="bgr24"), dtype=np.uint8)
            if index >= max(wanted):
                break
    return found


# --- loading and shape verification -------------------------------------------------------


def test_the_real_model_passes_the_shape_check(detector: YoloxDetector) -> None:
    assert detector.input_size == 416
    assert detector.class_names == ("person", "bicycle", "car", "motorcycle", "bus", "truck")
    assert anchors_for(416) == 3549


def test_a_missing_model_file_is_a_model_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"missing\.onnx: model file not found"):
        YoloxDetector(tmp_path / "missing.onnx", COCO)


def test_a_random_bytes_file_is_a_model_error(tmp_path: Path) -> None:
    path = tmp_path / "random.onnx"
    path.write_bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(ModelError, match=r"random\.onnx: cannot load the model"):
        YoloxDetector(path, COCO)


def test_a_truncated_model_is_a_model_error(tmp_path: Path) -> None:
    path = tmp_path / "truncated.onnx"
    path.write_bytes(MODEL.read_bytes()[: MODEL.stat().st_size // 3])
    with pytest.raises(ModelError, match=r"truncated\.onnx: cannot load the model"):
        YoloxDetector(path, COCO)


def test_a_class_map_beyond_the_models_classes_is_a_model_error(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    shutil.copyfile(MODEL, path)
    with pytest.raises(ModelError) as caught:
        YoloxDetector(path, {2: "car", 85: "tram"})
    message = str(caught.value)
    assert "model.onnx" in message
    assert "class id 85" in message
    assert "80 classes" in message
    assert "[1, 3549, 85]" in message  # what was found


@pytest.mark.parametrize(
    ("input_shape", "input_type", "output_shape", "why"),
    [
        ([1, 3, 416, 416, "x"], F, [1, 3549, 85], "expected input"),
        ([1, 1, 416, 416], F, [1, 3549, 85], "expected input"),
        ([2, 3, 416, 416], F, [1, 3549, 85], "expected input"),
        ([1, 3, 416, 320], F, [1, 3549, 85], "expected input"),
        ([1, 3, 400, 400], F, [1, 2500, 85], "expected input"),
        ([1, 3, "h", "w"], F, [1, 3549, 85], "expected input"),
        ([1, 3, 416, 416], "tensor(uint8)", [1, 3549, 85], "expected input"),
        ([1, 3, 416, 416], F, [1, 3549], "expected output"),
        ([1, 3, 416, 416], F, [1, 8400, 85], "expected output [1, 3549, 5 + C]"),
        ([1, 3, 640, 640], F, [1, 3549, 85], "expected output [1, 8400, 5 + C]"),
        ([1, 3, 416, 416], F, [1, 3549, 5], "expected output"),
        ([1, 3, 416, 416], F, [1, 3549, 7], "the class map names class id 7"),
    ],
)
def test_the_shape_checker_rejects_other_layouts(
    input_shape: list[Any], input_type: str, output_shape: list[Any], why: str
) -> None:
    with pytest.raises(ModelError) as caught:
        check_layout(input_shape, input_type, output_shape, F, 7, source="cam.onnx")
    message = str(caught.value)
    assert message.startswith("cam.onnx: not a usable YOLOX model: ")
    assert why in message
    assert f"found input {input_shape} {input_type}, output {output_shape}" in message


def test_the_shape_checker_accepts_yolox_layouts() -> None:
    layout = check_layout([1, 3, 640, 640], F, [1, 8400, 85], F, 79, source="m")
    assert (layout.input_size, layout.num_classes, layout.anchors) == (640, 80, 8400)
    assert not layout.dynamic_batch
    dynamic = check_layout(["batch", 3, 416, 416], F, ["batch", 3549, 6], F, 0, source="m")
    assert dynamic.dynamic_batch
    assert dynamic.num_classes == 1


def test_an_empty_class_map_is_refused() -> None:
    with pytest.raises(ModelError, match="class map is empty"):
        YoloxDetector(MODEL, {})


# --- decode on synthetic raw outputs -------------------------------------------------------


def _raw(size: int = 416, classes: int = 80) -> NDArray[np.float32]:
    return np.zeros((anchors_for(size), 5 + classes), dtype=np.float32)


def _row(size: int, stride: int, gx: int, gy: int) -> int:
    offset = 0
    for s in (8, 16, 32):
        if s == stride:
            return offset + gy * (size // s) + gx
        offset += (size // s) ** 2
    raise AssertionError(stride)


def test_the_grid_matches_the_head_order() -> None:
    grid, stride = grid_for(416)
    assert grid.shape == (3549, 2)
    assert stride.shape == (3549, 1)
    row = _row(416, 16, 3, 7)
    assert tuple(grid[row]) == (3.0, 7.0)
    assert stride[row, 0] == 16.0
    assert tuple(grid[-1]) == (12.0, 12.0)
    assert stride[-1, 0] == 32.0


def test_decode_applies_grid_stride_and_exp() -> None:
    raw = _raw()
    a = _row(416, 8, 10, 5)
    raw[a, :5] = [0.5, 0.25, math.log(4.0), math.log(2.0), 0.9]
    raw[a, 5 + 2] = 0.8  # car
    b = _row(416, 32, 4, 9)
    raw[b, :5] = [0.0, 0.0, 0.0, 0.0, 0.5]
    raw[b, 5 + 7] = 0.9  # truck
    ids = np.asarray([0, 2, 7], dtype=np.int64)
    boxes, scores, labels = decode(raw, ids, 0.3, 416)
    order = np.argsort(-scores)
    np.testing.assert_allclose(boxes[order[0]], [68.0, 34.0, 100.0, 50.0], atol=1e-4)
    assert scores[order[0]] == pytest.approx(0.72, abs=1e-6)
    assert ids[labels[order[0]]] == 2
    # stride 32, cell (4, 9): centre (128, 288), exp(0) * 32 = 32 wide and tall.
    np.testing.assert_allclose(boxes[order[1]], [112.0, 272.0, 144.0, 304.0], atol=1e-4)
    assert ids[labels[order[1]]] == 7
    assert scores[order[1]] == pytest.approx(0.45)


def test_decode_keeps_only_mapped_classes_above_the_threshold() -> None:
    raw = _raw()
    raw[0, 4] = 0.95
    raw[0, 5 + 6] = 0.9  # train: not in the map
    raw[0, 5 + 5] = 0.5  # bus: in the map, so the anchor reports a bus
    raw[1, 4] = 0.95
    raw[1, 5 + 14] = 0.99  # bird only
    raw[2, 4] = 0.5
    raw[2, 5 + 2] = 0.5  # 0.25 < threshold
    ids = np.asarray(sorted(COCO), dtype=np.int64)
    boxes, scores, labels = decode(raw, ids, 0.35, 416)
    assert boxes.shape == (1, 4)
    assert ids[labels[0]] == 5
    assert scores[0] == pytest.approx(0.475)


# --- letterbox ----------------------------------------------------------------------------


def test_letterbox_keeps_aspect_pads_114_and_stays_bgr_0_255() -> None:
    crop = np.zeros((100, 200, 3), dtype=np.uint8)
    crop[..., 0], crop[..., 1], crop[..., 2] = 10, 20, 250  # B, G, R
    buffer = np.zeros((3, 416, 416), dtype=np.float32)
    scale = letterbox_into(buffer, crop)
    assert scale == pytest.approx(2.08)
    assert np.all(buffer[0, :208, :] == 10)
    assert np.all(buffer[2, :208, :] == 250)
    assert np.all(buffer[:, 208:, :] == 114)


def test_letterbox_resamples_like_half_pixel_bilinear() -> None:
    ramp = np.tile(np.arange(0, 256, 2, dtype=np.uint8), (128, 1))  # 128x128, 2 per pixel
    crop = np.repeat(ramp[:, :, None], 3, axis=2)
    buffer = np.zeros((3, 416, 416), dtype=np.float32)
    letterbox_into(buffer, crop)
    # out x samples source position (x + 0.5) * 128 / 416 - 0.5, clamped to the edges.
    xs = np.clip((np.arange(416) + 0.5) * 128 / 416 - 0.5, 0, 127)
    np.testing.assert_allclose(buffer[1, 200], 2 * xs, atol=1e-3)


def test_letterbox_averages_before_a_big_shrink() -> None:
    # A one-pixel checkerboard shrunk 4x must come out as its mean, not aliased to 0 or 255.
    board = ((np.indices((1664, 1664)).sum(axis=0) % 2) * 255).astype(np.uint8)
    buffer = np.zeros((3, 416, 416), dtype=np.float32)
    assert letterbox_into(buffer, np.repeat(board[:, :, None], 3, axis=2)) == 0.25
    assert np.all(np.abs(buffer - 127.5) <= 1.0)


# --- NMS ----------------------------------------------------------------------------------


def _iou64(a: NDArray[np.float64], b: NDArray[np.float64]) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


boxes_strategy = st.lists(
    st.tuples(
        st.integers(0, 200),
        st.integers(0, 200),
        st.integers(1, 80),
        st.integers(1, 80),
        st.integers(1, 100),
        st.integers(0, 2),
    ),
    max_size=30,
)


@settings(max_examples=200, deadline=None)
@given(boxes_strategy, st.sampled_from([0.3, 0.45, 0.7]), st.booleans())
def test_nms_invariants(
    spec: list[tuple[int, int, int, int, int, int]], threshold: float, aware: bool
) -> None:
    boxes = np.asarray([(x, y, x + w, y + h) for x, y, w, h, _, _ in spec], np.float32)
    boxes = boxes.reshape(-1, 4)
    scores = np.asarray([s / 100 for *_, s, _ in spec], np.float32)
    labels = np.asarray([c for *_, c in spec], np.int64)
    keep = nms(boxes, scores, labels if aware else None, threshold)
    kept = [int(i) for i in keep]
    same = (lambda i, j: labels[i] == labels[j]) if aware else (lambda i, j: True)
    b64 = boxes.astype(np.float64)
    assert len(set(kept)) == len(kept)
    assert all(0 <= i < len(spec) for i in kept)
    assert all(scores[a] >= scores[b] for a, b in itertools.pairwise(kept))
    for x, i in enumerate(kept):
        for j in kept[x + 1 :]:
            assert not (same(i, j) and _iou64(b64[i], b64[j]) > threshold)
    for i in set(range(len(spec))) - set(kept):
        assert any(
            same(i, k) and scores[k] >= scores[i] and _iou64(b64[i], b64[k]) > threshold
            for k in kept
        )
    if spec:
        again = nms(boxes[keep], scores[keep], labels[keep] if aware else None, threshold)
        assert list(again) == list(range(len(kept)))  # idempotent


def test_nms_demoted_boxes_lose_to_whole_ones() -> None:
    boxes = np.asarray([[0, 0, 50, 100], [0, 0, 100, 100]], np.float32)  # a slice and the whole
    scores = np.asarray([0.9, 0.8], np.float32)
    labels = np.zeros(2, np.int64)
    assert list(nms(boxes, scores, labels, 0.45)) == [0]
    demote = np.asarray([True, False])
    assert list(nms(boxes, scores, labels, 0.45, demote=demote)) == [1]


# --- regions ------------------------------------------------------------------------------

box_in_frame = st.integers(16, 1920).flatmap(
    lambda w: st.tuples(st.just(w), st.integers(16, 1080)).flatmap(
        lambda wh: st.tuples(
            st.just(wh),
            st.lists(
                st.tuples(
                    st.integers(0, wh[0] - 1),
                    st.integers(0, wh[1] - 1),
                    st.integers(1, wh[0]),
                    st.integers(1, wh[1]),
                ).map(lambda b: (b[0], b[1], min(wh[0], b[0] + b[2]), min(wh[1], b[1] + b[3]))),
                max_size=25,
            ),
        )
    )
)


@settings(max_examples=300, deadline=None)
@given(
    box_in_frame,
    st.integers(16, 400),
    st.sampled_from([0.0, 0.35, 1.0]),
    st.integers(1, 6),
    st.sampled_from([0, 416]),
)
def test_square_regions_cover_every_box_inside_the_frame(
    frame_and_boxes: tuple[tuple[int, int], list[tuple[int, int, int, int]]],
    min_side: int,
    margin: float,
    max_regions: int,
    native: int,
) -> None:
    (w, h), boxes = frame_and_boxes
    regions = square_regions(
        boxes, w, h, min_side=min_side, margin=margin, max_regions=max_regions, native_side=native
    )
    assert len(regions) <= max_regions
    assert bool(regions) == bool(boxes)
    for x0, y0, x1, y1 in regions:
        assert 0 <= x0 < x1 <= w
        assert 0 <= y0 < y1 <= h
        whole = (x0, y0, x1, y1) == (0, 0, w, h)
        assert whole or (x1 - x0 == y1 - y0 and min(min_side, w, h) <= x1 - x0 <= min(w, h))
    for b in boxes:
        assert any(r[0] <= b[0] and r[1] <= b[1] and b[2] <= r[2] and b[3] <= r[3] for r in regions)
    assert square_regions(list(reversed(boxes)), w, h, min_side=min_side, margin=margin,
                          max_regions=max_regions, native_side=native) == regions  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(box_in_frame, st.integers(1, 6), st.booleans())
def test_detector_regions_cover_every_box_and_small_ones_are_scaled_up(
    frame_and_boxes: tuple[tuple[int, int], list[tuple[int, int, int, int]]],
    max_regions: int,
    whole: bool,
) -> None:
    (w, h), boxes = frame_and_boxes
    regions = detector_regions(boxes, w, h, native_side=416, max_regions=max_regions, whole=whole)
    assert len(regions) <= max_regions
    assert len(set(regions)) == len(regions)
    frame = (0, 0, w, h)
    if whole:
        assert frame in regions
    if not boxes and not whole:
        assert regions == []
    for b in boxes:
        assert any(r[0] <= b[0] and r[1] <= b[1] and b[2] <= r[2] and b[3] <= r[3] for r in regions)
    # A lone box too small for the whole frame shrunk to 416 gets a crop (scaled up) unless
    # the one region allowed is the whole frame. (Among other boxes, it is sized with those
    # lying together with it: see the examples.)
    if len(boxes) == 1 and not (whole and max_regions == 1):
        b = boxes[0]
        small = max(b[2] - b[0], b[3] - b[1]) * 416 / max(w, h) < MIN_OBJECT_PX
        crops = [r for r in regions if r != frame or min(w, h) == max(w, h)]
        assert not small or any(
            r[0] <= b[0] and r[1] <= b[1] and b[2] <= r[2] and b[3] <= r[3] for r in crops
        )


def test_detector_regions_examples() -> None:
    # A car 200 px long on a 1280x720 frame is 65 px in the whole frame shrunk to 416.
    assert detector_regions([(100, 300, 300, 400)], 1280, 720, native_side=416) == [
        (0, 0, 1280, 720)
    ]
    # A car 40 px long there would be 13 px: it gets a crop of its own, scaled up.
    assert detector_regions([(100, 300, 140, 320)], 1280, 720, native_side=416) == [
        (40, 230, 200, 390)
    ]
    # Both: the whole frame and the crop; the pieces of one car are sized together.
    pieces = [(100, 300, 160, 340), (170, 300, 230, 340), (240, 300, 300, 340)]
    assert detector_regions(pieces, 1280, 720, native_side=416) == [(0, 0, 1280, 720)]
    assert detector_regions([], 640, 360, native_side=416) == []
    assert detector_regions([], 640, 360, native_side=416, whole=True) == [(0, 0, 640, 360)]


def test_square_regions_examples() -> None:
    # One small blob: a min_side square centred on it, shifted inside the frame.
    assert square_regions([(10, 10, 30, 30)], 1280, 720) == [(0, 0, 160, 160)]
    assert square_regions([(600, 300, 700, 380)], 1280, 720) == [(570, 260, 730, 420)]
    # A big blob: its long side plus 35 %.
    assert square_regions([(600, 300, 800, 380)], 1280, 720) == [(565, 205, 835, 475)]
    # Two blobs of one car (a gap smaller than the margin): one region.
    assert len(square_regions([(100, 100, 160, 150), (165, 100, 220, 150)], 1280, 720)) == 1
    # Far apart: two regions; merged when one native-size square holds both.
    apart = [(100, 100, 140, 140), (1100, 500, 1140, 540)]
    assert len(square_regions(apart, 1280, 720)) == 2
    near = [(100, 100, 140, 140), (300, 100, 340, 140)]
    assert len(square_regions(near, 1280, 720)) == 2
    assert len(square_regions(near, 1280, 720, native_side=416)) == 1
    # Too many separate blobs: merged pairwise down to max_regions.
    spread = [(x, 300, x + 20, 320) for x in range(0, 1280, 160)]
    assert len(square_regions(spread, 1280, 720, max_regions=4)) <= 4
    # A blob larger than the frame's short side: only the whole frame holds it.
    assert square_regions([(0, 100, 1000, 200)], 1280, 720) == [(0, 0, 1280, 720)]
    assert square_regions([], 1280, 720) == []
    assert square_regions([(2000, 2000, 2100, 2100)], 1280, 720) == []


# --- detect_regions with a stand-in session: coordinates and cross-region suppression ------


class _FakeSession:
    """Returns a prepared raw head output for each run; records the inputs it was given."""

    def __init__(self, outputs: list[NDArray[np.float32]]) -> None:
        self.outputs = outputs
        self.inputs: list[NDArray[np.float32]] = []

    def run(self, _names: object, feed: dict[str, NDArray[np.float32]]) -> list[Any]:
        (batch,) = feed.values()
        self.inputs.append(batch.copy())
        return [self.outputs[len(self.inputs) - 1][None]]


def _one_box(
    cx: float,
    cy: float,
    w: float,
    h: float,
    class_id: int,
    score: float,
    *,
    stride: int = 32,
    raw: NDArray[np.float32] | None = None,
) -> NDArray[np.float32]:
    """A raw head output with one anchor decoding to the given box (model-input px)."""
    raw = _raw() if raw is None else raw
    gx, gy = int(cx // stride), int(cy // stride)
    row = _row(416, stride, gx, gy)
    s = float(stride)
    raw[row, :5] = [cx / s - gx, cy / s - gy, math.log(w / s), math.log(h / s), 1.0]
    raw[row, 5 + class_id] = score
    return raw


def test_boxes_come_back_in_full_frame_pixels(detector: YoloxDetector) -> None:
    fake = _FakeSession([_one_box(208, 208, 104, 52, 2, 0.9)])
    original, detector._session = detector._session, fake
    try:
        crop = np.full((208, 208, 3), 50, dtype=np.uint8)  # scaled 2x into the input
        found = detector.detect_regions([(crop, (300, 100))])
    finally:
        detector._session = original
    assert len(found) == 1
    assert found[0].class_name == "car"
    assert found[0].score == pytest.approx(0.9)
    np.testing.assert_allclose(found[0].box, (300 + 78, 100 + 91, 300 + 130, 100 + 117), atol=1e-3)
    assert fake.inputs[0].shape == (1, 3, 416, 416)
    assert fake.inputs[0][0, 0, 0, 0] == 50.0


def test_one_object_seen_by_two_regions_is_reported_once(detector: YoloxDetector) -> None:
    # Region A (0..208) cuts the car at its right edge; region B (100..308) sees it whole.
    # The slice scores higher, but the whole view must win.
    cut_slice = _one_box(364, 208, 104, 104, 2, 0.95)  # crop px 156..208 -> x 0..1 scale 2
    whole = _one_box(208, 208, 208, 104, 2, 0.8)  # crop px 52..156 -> frame 152..256
    fake = _FakeSession([cut_slice, whole])
    original, detector._session = detector._session, fake
    try:
        crop = np.zeros((208, 208, 3), dtype=np.uint8)
        found = detector.detect_regions([(crop, (0, 0)), (crop, (100, 0))], frame_size=(640, 352))
    finally:
        detector._session = original
    assert [d.class_name for d in found] == ["car"]
    np.testing.assert_allclose(found[0].box, (152, 78, 256, 130), atol=1e-3)


def test_a_car_truck_double_is_reported_once(detector: YoloxDetector) -> None:
    raw = _one_box(208, 208, 200, 100, 2, 0.8)
    _one_box(210, 206, 196, 104, 7, 0.6, stride=16, raw=raw)  # another anchor: "truck"
    fake = _FakeSession([raw])
    original, detector._session = detector._session, fake
    try:
        found = detector.detect_regions([(np.zeros((416, 416, 3), np.uint8), (0, 0))])
    finally:
        detector._session = original
    assert [d.class_name for d in found] == ["car"]


# --- real frames of the street clip ----------------------------------------------------------


def _vehicles(found: list[Detection]) -> list[Detection]:
    return [d for d in found if d.class_name in VEHICLES]


@pytest.mark.parametrize("index", sorted(SEEN))
def test_the_car_in_the_street_clip_is_found_in_the_whole_frame(
    detector: YoloxDetector, frames: dict[int, NDArray[np.uint8]], index: int
) -> None:
    frame = frames[index]
    found = _vehicles(detector.detect_regions([(frame, (0, 0))], frame_size=(640, 352)))
    best = max(found, key=lambda d: box_iou(d.box, SEEN[index]))
    assert box_iou(best.box, SEEN[index]) > 0.8
    assert best.score > 0.6
    assert sum(box_iou(d.box, SEEN[index]) > 0.3 for d in found) == 1  # no duplicate


@pytest.mark.parametrize("index", sorted(SEEN))
def test_the_car_is_found_through_overlapping_square_regions(
    detector: YoloxDetector, frames: dict[int, NDArray[np.uint8]], index: int
) -> None:
    frame = frames[index]
    regions = [(0, 0, 352, 352), (200, 60, 492, 352), (288, 0, 640, 352)]
    crops = [(np.ascontiguousarray(frame[y0:y1, x0:x1]), (x0, y0)) for x0, y0, x1, y1 in regions]
    found = _vehicles(detector.detect_regions(crops, frame_size=(640, 352)))
    matches = [d for d in found if box_iou(d.box, SEEN[index]) > 0.3]
    assert len(matches) == 1, matches
    assert box_iou(matches[0].box, SEEN[index]) > 0.8
    timing = detector.last_timing
    assert timing.regions == 3
    assert timing.inference_s > 0


def test_no_regions_no_detections(detector: YoloxDetector) -> None:
    assert detector.detect_regions([]) == []
