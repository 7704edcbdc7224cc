"""What one camera's pipeline hands out: a frame's outputs and its running counters."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from smartpole.models.counting import Crossing
from smartpole.models.detector import Detection
from smartpole.models.motion import FrameQuality
from smartpole.models.regions import Box
from smartpole.models.roadside import RoadsideEvent
from smartpole.models.tracker import Track
from smartpole.models.zones import ZoneEvent


@dataclass(frozen=True)
class FrameResult:
    """What one frame produced; ``summaries`` holds intervals that completed on it."""

    index: int
    t_s: float
    quality: FrameQuality
    motion_boxes: list[Box]
    regions: list[Box]
    detected: bool
    detections: list[Detection]
    tracks: list[Track]
    crossings: list[Crossing]
    events: list[ZoneEvent]
    summaries: list[dict[str, Any]]
    #: Roadside events that started, were re-sent or ended on this frame (``roadside_stage``).
    roadside_events: list[RoadsideEvent] = dataclasses.field(default_factory=list)


@dataclass
class PipelineStats:
    """Counters since the pipeline started (the worker turns them into health lines).

    ``skipped`` counts frames the source decoded but the worker dropped because the
    pipeline fell behind (see ``Pipeline.note_skipped``); ``detector_runs`` the frames on
    which the detector ran, ``regions`` the crops it looked at. ``cpu_s`` is the process
    CPU time (``time.process_time``) spent inside ``process``. ``shake_px`` and ``drift_px``
    are the camera's sway (RMS about its mean position over the last
    ``shake_meter.SHAKE_WINDOW_S``) and its offset from where the background started, in
    frame pixels, as the motion stage estimated and compensated them.
    """

    processed: int = 0
    skipped: int = 0
    detector_runs: int = 0
    regions: int = 0
    detections: int = 0
    crossings: int = 0
    events: int = 0
    motion_s: float = 0.0
    detect_s: float = 0.0
    inference_s: float = 0.0
    cpu_s: float = 0.0
    compile_s: float = 0.0
    model_load_s: float = 0.0
    quality: FrameQuality = "ok"
    last_t_s: float | None = None
    shake_px: float = 0.0
    drift_px: float = 0.0

    @property
    def motion_ms(self) -> float:
        """Mean motion-stage time per processed frame."""
        return 1000.0 * self.motion_s / self.processed if self.processed else 0.0

    @property
    def inference_ms(self) -> float:
        """Mean time of one detector run (crops, letterbox, inference, decoding, NMS)."""
        return 1000.0 * self.detect_s / self.detector_runs if self.detector_runs else 0.0

    @property
    def region_ms(self) -> float:
        """Mean ONNX Runtime time per region."""
        return 1000.0 * self.inference_s / self.regions if self.regions else 0.0

    @property
    def decoded(self) -> int:
        """Frames the source delivered: processed or skipped."""
        return self.processed + self.skipped

    def to_dict(self) -> dict[str, Any]:
        """The counters and mean times (ms), JSON-ready."""
        out = dataclasses.asdict(self)
        for name in ("decoded", "motion_ms", "inference_ms", "region_ms"):
            out[name] = round(getattr(self, name), 3)
        return out
