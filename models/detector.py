"""Object detection with a YOLOX model on ONNX Runtime, run on square regions of a frame.

The pipeline runs the detector only where the motion stage saw something, on a few square
crops (``models.regions``), because one 416x416 inference costs tens of milliseconds of one
core and a whole 1280x720 frame shrunk to 416 would lose the small road users. This module
letterboxes each crop, runs the model, decodes the raw head, maps the boxes back into
full-frame pixels and suppresses duplicates across regions, so an object seen by two
overlapping regions is reported once.

Why the shapes are checked at load: a model file from config that is not the YOLOX layout
(another input size, a decoded head, fewer classes than the class map names) would otherwise
give silent garbage or fail on the first frame with an opaque ONNX Runtime message. Every
failure to load becomes ``ModelError`` naming the file and what was found.

Why ``intra_op_num_threads=threads``, one inter-op thread, sequential execution and no
spinning: the worker is budgeted one core per camera; ONNX Runtime's default thread pool
takes every core and its idle spinning burns CPU that decoding and motion need.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort  # type: ignore[import-untyped]
from numpy.typing import NDArray
from onnxruntime.capi import onnxruntime_pybind11_state as _ort_state  # type: ignore[import-untyped]

from smartpole.models.errors import ModelError
from smartpole.models.yolox import (
    F32,
    check_layout,
    decode,
    drop_cut_boxes,
    is_cut,
    letterbox_into,
    nms,
)

#: Every exception ONNX Runtime raises (they derive from ``Exception`` directly), plus the
#: OS and value errors of reading a file, so no library error leaks past this module.
_ORT_ERRORS: tuple[type[Exception], ...] = (
    OSError,
    RuntimeError,
    ValueError,
    *(
        value
        for value in vars(_ort_state).values()
        if isinstance(value, type) and issubclass(value, Exception)
    ),
)


@dataclass(frozen=True)
class Detection:
    """One detected object: full-frame box ``(x0, y0, x1, y1)`` in pixels, score, class."""

    box: tuple[float, float, float, float]
    score: float
    class_name: str


@dataclass(frozen=True)
class DetectTiming:
    """Where the last ``detect_regions`` call spent its time (for the worker's health)."""

    regions: int
    preprocess_s: float
    inference_s: float
    postprocess_s: float


class YoloxDetector:
    """A YOLOX ONNX model on the CPU, restricted to the classes of ``class_map``.

    ``class_map`` maps the model's class ids to the names reported (COCO: 0 person,
    1 bicycle, 2 car, 3 motorcycle, 5 bus, 7 truck); several ids may share a name. Classes
    not in the map are never reported. ``cross_class_iou`` merges two boxes of different
    classes that are nearly the same box (YOLOX often calls a pickup both car and truck), so
    one vehicle never becomes two tracks; person-on-bicycle boxes overlap far less than this.

    Not thread-safe: one input buffer is reused by every call (no allocation per region).
    """

    def __init__(
        self,
        model_path: str | Path,
        class_map: Mapping[int, str],
        *,
        score_threshold: float = 0.35,
        nms_iou: float = 0.45,
        threads: int = 1,
        cross_class_iou: float = 0.7,
    ) -> None:
        path = Path(model_path)
        if not class_map:
            raise ModelError(f"{path}: the class map is empty; nothing could be reported")
        if min(class_map) < 0:
            raise ModelError(f"{path}: class ids must be >= 0, got {min(class_map)}")
        if not 0.0 < score_threshold <= 1.0 or not 0.0 < nms_iou <= 1.0 or threads < 1:
            raise ModelError(
                f"{path}: score_threshold and nms_iou must be in (0, 1] and threads >= 1"
            )
        if not path.is_file():
            raise ModelError(f"{path}: model file not found")
        self._path = path
        self._session = self._load(path, threads)
        inputs = self._session.get_inputs()
        outputs = self._session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ModelError(
                f"{path}: not a usable YOLOX model: expected one input and one output, "
                f"found {len(inputs)} inputs and {len(outputs)} outputs"
            )
        self._layout = check_layout(
            inputs[0].shape,
            inputs[0].type,
            outputs[0].shape,
            outputs[0].type,
            max(class_map),
            source=str(path),
        )
        self._input_name: str = inputs[0].name
        ids = sorted(class_map)
        self._class_ids = np.asarray(ids, dtype=np.int64)
        names = list(dict.fromkeys(class_map[i] for i in ids))
        self._names: tuple[str, ...] = tuple(names)
        self._name_index = np.asarray([names.index(class_map[i]) for i in ids], dtype=np.int64)
        self._score_threshold = score_threshold
        self._nms_iou = nms_iou
        self._cross_class_iou = cross_class_iou
        size = self._layout.input_size
        self._single = np.empty((1, 3, size, size), dtype=np.float32)
        self.last_timing = DetectTiming(0, 0.0, 0.0, 0.0)

    @staticmethod
    def _load(path: Path, threads: int) -> Any:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3  # errors only: load warnings would clutter the journal
        try:
            return ort.InferenceSession(
                str(path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except _ORT_ERRORS as exc:
            raise ModelError(f"{path}: cannot load the model: {exc}") from exc

    @property
    def input_size(self) -> int:
        """The model's square input side S, in pixels (416 for the COCO YOLOX-nano)."""
        return self._layout.input_size

    @property
    def class_names(self) -> tuple[str, ...]:
        """The names this detector can report, in class-id order, each once."""
        return self._names

    @property
    def model_path(self) -> Path:
        return self._path

    def _run(self, batch: F32) -> F32:
        try:
            result = self._session.run(None, {self._input_name: batch})
        except _ORT_ERRORS as exc:
            raise ModelError(f"{self._path}: inference failed: {exc}") from exc
        out: F32 = np.asarray(result[0], dtype=np.float32)
        return out

    def detect_regions(
        self,
        frame_bgr_crops: Sequence[tuple[NDArray[np.uint8], tuple[int, int]]],
        *,
        frame_size: tuple[int, int] | None = None,
    ) -> list[Detection]:
        """Detect objects in crops of one frame; boxes come back in full-frame pixels.

        Each item is ``(crop, (x_offset, y_offset))`` with the crop an HxWx3 BGR uint8 array
        cut from the frame at that offset. ``frame_size`` (width, height) tells which crop
        edges are the frame's own: a box touching any other crop edge is cut by the region
        and is dropped when another region sees the object whole. Results are sorted by
        score, best first.
        """
        started = time.perf_counter()
        inference_s = 0.0
        size = self._layout.input_size
        boxes_parts: list[F32] = []
        score_parts: list[F32] = []
        label_parts: list[NDArray[np.int64]] = []
        cut_parts: list[NDArray[np.bool_]] = []
        items = list(frame_bgr_crops)
        if self._layout.dynamic_batch and len(items) > 1:
            batch = np.empty((len(items), 3, size, size), dtype=np.float32)
            scales = [letterbox_into(batch[i], crop) for i, (crop, _) in enumerate(items)]
            t0 = time.perf_counter()
            raws = self._run(batch)
            inference_s += time.perf_counter() - t0
            outputs = [(raws[i], scales[i]) for i in range(len(items))]
        else:
            outputs = []
            for crop, _ in items:
                scale = letterbox_into(self._single[0], crop)
                t0 = time.perf_counter()
                outputs.append((self._run(self._single)[0], scale))
                inference_s += time.perf_counter() - t0
        for (crop, (ox, oy)), (raw, scale) in zip(items, outputs, strict=True):
            boxes, scores, labels = decode(raw, self._class_ids, self._score_threshold, size)
            height, width = crop.shape[:2]
            boxes /= scale
            np.clip(boxes[:, 0::2], 0, width, out=boxes[:, 0::2])
            np.clip(boxes[:, 1::2], 0, height, out=boxes[:, 1::2])
            boxes += np.asarray([ox, oy, ox, oy], dtype=np.float32)
            boxes_parts.append(boxes)
            score_parts.append(scores)
            label_parts.append(self._name_index[labels])
            cut_parts.append(is_cut(boxes, (ox, oy, ox + width, oy + height), frame_size))
        post_start = time.perf_counter()
        detections = self._merge(boxes_parts, score_parts, label_parts, cut_parts)
        finished = time.perf_counter()
        self.last_timing = DetectTiming(
            regions=len(items),
            preprocess_s=max(0.0, post_start - started - inference_s),
            inference_s=inference_s,
            postprocess_s=finished - post_start,
        )
        return detections

    def _merge(
        self,
        boxes_parts: list[F32],
        score_parts: list[F32],
        label_parts: list[NDArray[np.int64]],
        cut_parts: list[NDArray[np.bool_]],
    ) -> list[Detection]:
        if not boxes_parts:
            return []
        boxes = np.concatenate(boxes_parts)
        scores = np.concatenate(score_parts)
        labels = np.concatenate(label_parts)
        cut = np.concatenate(cut_parts)
        sized = (boxes[:, 2] - boxes[:, 0] >= 1.0) & (boxes[:, 3] - boxes[:, 1] >= 1.0)
        index = np.flatnonzero(sized)
        keep = index[
            nms(boxes[index], scores[index], labels[index], self._nms_iou, demote=cut[index])
        ]
        keep = drop_cut_boxes(boxes, labels, cut, keep)
        if self._cross_class_iou < 1.0:
            kept = nms(boxes[keep], scores[keep], None, self._cross_class_iou, demote=cut[keep])
            keep = keep[kept]
        return [
            Detection(
                box=(
                    float(boxes[i, 0]),
                    float(boxes[i, 1]),
                    float(boxes[i, 2]),
                    float(boxes[i, 3]),
                ),
                score=float(scores[i]),
                class_name=self._names[int(labels[i])],
            )
            for i in keep
        ]
