"""The detector as the pipeline uses it: loaded and run once before the first frame, and its
boxes cleaned of vehicle parts detected as whole vehicles."""

from __future__ import annotations

import numpy as np

from smartpole.agent.config.cameras import CameraConfig
from smartpole.models.default_model import model_path
from smartpole.models.detector import Detection, YoloxDetector
from smartpole.models.errors import ModelError

#: Vehicle classes whose boxes are checked for parts detected as wholes (see ``drop_parts``).
_BODY_CLASSES = frozenset({"car", "truck", "bus"})
#: A body-class box this much inside a larger body-class box is a part of it (a pickup's
#: cab or bed called a car), not a second vehicle.
PART_INSIDE = 0.8


def load_detector(config: CameraConfig) -> YoloxDetector:
    """The configured detector, loaded and run once (``ModelError`` if it is unusable).

    The first inference is slow (ONNX Runtime plans its memory, the letterbox kernel loads
    from Numba's cache): it belongs to load time, not to the first frame. A worker calls
    this before it opens the camera, so a bad model is reported even when the camera is
    down, and passes the detector to ``Pipeline``.
    """
    path = model_path(config.model)
    detector = YoloxDetector(
        path,
        config.classes,
        score_threshold=config.score_threshold,
        nms_iou=config.nms_iou,
        threads=config.threads,
    )
    side = detector.input_size
    blank = np.full((side, side, 3), 114, dtype=np.uint8)
    try:
        detector.detect_regions([(blank, (0, 0))])
    except ValueError as exc:  # an output that does not decode as YOLOX
        raise ModelError(f"{path}: first inference failed: {exc}") from exc
    return detector


def drop_parts(detections: list[Detection]) -> list[Detection]:
    """Drop car/truck/bus boxes that lie inside a larger one of those classes.

    YOLOX-nano sometimes reports part of a large vehicle (the cab of a pickup, the rear of a
    bus) as a car of its own, with an IoU to the whole box far below any NMS threshold; as
    a track that part crosses the line too and counts a phantom vehicle. A real vehicle
    hidden that much behind another one is not countable on that frame anyway.
    """
    out: list[Detection] = []
    for det in detections:
        if det.class_name in _BODY_CLASSES and any(
            other is not det
            and other.class_name in _BODY_CLASSES
            and _area(other.box) > _area(det.box)
            and _inside_share(det.box, other.box) >= PART_INSIDE
            for other in detections
        ):
            continue
        out.append(det)
    return out


def _area(box: tuple[float, float, float, float]) -> float:
    return max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])


def _inside_share(
    inner: tuple[float, float, float, float], outer: tuple[float, float, float, float]
) -> float:
    """The share of ``inner``'s area that lies inside ``outer``."""
    iw = min(inner[2], outer[2]) - max(inner[0], outer[0])
    ih = min(inner[3], outer[3]) - max(inner[1], outer[1])
    area = _area(inner)
    return iw * ih / area if iw > 0 and ih > 0 and area > 0 else 0.0
