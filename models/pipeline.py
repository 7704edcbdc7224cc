"""One camera's analytics, frame by frame: motion, detection where needed, tracking, counting.

Why this order and these shortcuts (the issue's budget is a 1280x720, 25 fps stream on one
core with 1.5x headroom, about 27 ms a frame including decoding):

* motion runs on every frame, on the downscaled luma only (well under 1 ms);
* the detector (13.5-22 ms per 416x416 input on one core) runs only where there is motion
  and around the tracks it must keep alive, and while motion persists only every
  ``detect_interval_s`` of stream time (so a 10 fps camera is looked at on every frame and
  a 60 fps one on every 7th): the tracker predicts the frames between runs, so a car still
  leaves a dense enough trail of points to cross a line exactly once;
* it looks at the whole frame when the road users there are big enough to be seen in it
  shrunk to the detector's input, and at scaled-up square crops only for the small ones
  (``regions.detector_regions``); and at the whole frame every ``full_frame_s`` whatever
  motion says, so the motion gate never hides for long a road user the detector can see;
* with no motion at all the detector sleeps, except for a refresh of the live tracks every
  ``refresh_s`` (a queue standing at a red light makes no motion but must stay tracked);
* while the background model warms up (the first second, or after a shaken camera
  re-seeded it) motion says nothing, so the detector looks at the whole frame instead:
  a car passing in the first second would otherwise be missed;
* a track is shown to the counting lines only once its mean score reaches
  ``count_min_score`` and it has travelled half a box height: false boxes on a kerb,
  which grow and shrink in place at low scores, never count (``LineCounter`` replays a
  track's earlier points when it is first shown, so nothing real is lost by waiting).

Frames never leave this object: the outputs are crossings, events and summary dicts.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from smartpole.agent.config.cameras import CameraConfig
from smartpole.models.counting import Crossing, LineCounter
from smartpole.models.default_model import model_path
from smartpole.models.detector import Detection, YoloxDetector
from smartpole.models.errors import AnalyticsConfigError, ModelError
from smartpole.models.frames import VideoFrame
from smartpole.models.kernels import warm_up
from smartpole.models.motion import FrameQuality, MotionDetector
from smartpole.models.regions import Box, detector_regions
from smartpole.models.road_users import RoadUserClassifier, merge_riders
from smartpole.models.scene import Scene
from smartpole.models.shake_meter import ShakeMeter
from smartpole.models.summary import SummaryAggregator
from smartpole.models.tracker import Track, Tracker
from smartpole.models.zones import ZoneEvent, ZoneMonitor

#: A track slower than this many box heights a second is still (a parked car's box jitters
#: by a pixel or two; a car starting to move passes this within a few frames).
STILL_HEIGHTS_PER_S = 0.25
#: A track counts at a line only once it has travelled this many of its box heights: a
#: false detection on the kerb whose box grows and shrinks never gets that far, a road user
#: crossing a line does (the line counter then replays the points it was not shown).
MIN_TRAVEL_HEIGHTS = 0.5
#: Vehicle classes whose boxes are checked for parts detected as wholes (see ``drop_parts``).
_BODY_CLASSES = frozenset({"car", "truck", "bus"})
#: A body-class box this much inside a larger body-class box is a part of it (a pickup's
#: cab or bed called a car), not a second vehicle.
PART_INSIDE = 0.8


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


class Pipeline:
    """The analytics of one camera whose frames are ``width`` x ``height``; not thread-safe.

    Construction builds the ``scene`` unless given one (``AnalyticsConfigError``),
    validates its lines and zones against the frame size (``AnalyticsConfigError``), loads
    the model unless given a ``detector`` (``ModelError``) and warms up the Numba kernels
    and the detector, so the first frame costs what every frame costs; the warm-up times
    are in ``stats.compile_s`` and ``stats.model_load_s``. ``camera`` names the summaries.
    """

    def __init__(
        self,
        config: CameraConfig,
        width: int,
        height: int,
        *,
        camera: str = "camera",
        scene: Scene | None = None,
        detector: YoloxDetector | None = None,
    ) -> None:
        if width < 1 or height < 1:
            raise AnalyticsConfigError(f"bad frame size {width}x{height}")
        scene = scene if scene is not None else Scene.of(config)
        scene.validate_frame(width, height)
        self.config = config
        self.scene = scene
        self.width = width
        self.height = height
        self.stats = PipelineStats()
        self.stats.compile_s = warm_up()
        if detector is None:
            started = time.perf_counter()
            detector = load_detector(config)
            self.stats.model_load_s = time.perf_counter() - started
        self._detector = detector
        self._motion = MotionDetector(
            width,
            height,
            work_width=config.motion_work_width,
            threshold=config.motion_threshold,
            min_area=config.motion_min_area,
        )
        self._shake = ShakeMeter()
        self._tracker = Tracker(max_missed_s=config.max_missed_s, min_hits=config.min_hits)
        calibration = scene.calibration
        self._counters = [
            LineCounter(line, band_px=config.band_px, calibration=calibration)
            for line in scene.lines
        ]
        self._classes = RoadUserClassifier(
            scene.lines, calibration=calibration, classes=self._detector.class_names
        )
        self._zones = ZoneMonitor(
            scene.zones,
            calibration=calibration,
            stopped_after_s=config.stopped_after_s,
            pedestrian_after_s=config.pedestrian_after_s,
        )
        self._summary = SummaryAggregator(
            camera,
            config.interval_s,
            [line.name for line in scene.lines],
            [zone.name for zone in scene.zones],
            classes=self._detector.class_names,
            queues=[zone.name for zone in scene.zones if zone.kind == "queue"],
        )
        self._since_detect = 25  # the first motion frame is looked at
        self._last_full_t: float | None = None
        self._frame_dt = FrameInterval()
        self._last_refresh_t: float | None = None
        self._pending_skipped = 0
        self._last_t: float | None = None

    @property
    def class_names(self) -> tuple[str, ...]:
        """The classes the detector reports, each once, in class-id order."""
        return self._detector.class_names

    def note_skipped(self, frames: int) -> None:
        """Frames the source delivered but the caller dropped (it fell behind): reported in
        the stats and in the next summary's ``quality.dropped``."""
        self.stats.skipped += frames
        self._pending_skipped += frames

    def process(self, frame: VideoFrame) -> FrameResult:
        """Run every stage on one frame; ``frame.pts_s`` is the clock of all analytics."""
        if frame.width != self.width or frame.height != self.height:
            raise AnalyticsConfigError(
                f"frame {frame.index} is {frame.width}x{frame.height}, the pipeline was set "
                f"up for {self.width}x{self.height} (lines and zones are in those pixels)"
            )
        cpu0 = time.process_time()
        t_s = frame.pts_s
        self._frame_dt.update(t_s)
        t0 = time.perf_counter()
        motion = self._motion.detect(frame.gray)
        self.stats.motion_s += time.perf_counter() - t0
        self._shake.add(t_s, *motion.shift)
        self.stats.shake_px, self.stats.drift_px = self._shake.shake_px, self._shake.drift_px
        quality = motion.quality
        regions = self._plan(motion.boxes, motion.warming_up or motion.shaken, quality, t_s)
        detections: list[Detection] = []
        if regions:
            detections = self._detect(frame, regions)
            tracks = self._tracker.update(detections, t_s)
            self._classes.observe(tracks, detections)
            self._since_detect = 1
            if regions[0] == (0, 0, self.width, self.height):
                self._last_full_t = t_s
        else:
            tracks = self._tracker.predict_only(t_s)
            self._since_detect += 1
        min_score = self.config.count_min_score
        moved = [t for t in tracks if t.score >= min_score and _travelled(t)]
        by_id = {t.id: t for t in moved}
        classified = [
            self._classes.classify(c, by_id[c.track_id])
            for counter in self._counters
            for c in counter.update(moved)
        ]
        crossings = [c for c in classified if c is not None]
        ended = self._tracker.finished()
        events = self._zones.update(tracks, t_s)
        if ended:
            self._retire(ended)
        summaries = self._account(t_s, crossings, events, quality)
        self.stats.processed += 1
        self.stats.quality = quality
        self.stats.last_t_s = t_s
        self.stats.cpu_s += time.process_time() - cpu0
        return FrameResult(
            index=frame.index,
            t_s=t_s,
            quality=quality,
            motion_boxes=motion.boxes,
            regions=regions,
            detected=bool(regions),
            detections=detections,
            tracks=tracks,
            crossings=crossings,
            events=events,
            summaries=summaries,
        )

    def _plan(
        self, motion_boxes: list[Box], blind: bool, quality: FrameQuality, t_s: float
    ) -> list[Box]:
        """The regions the detector looks at on this frame; [] to skip it.

        ``blind``: the motion stage cannot tell (warm-up, a shaken camera), so the whole
        frame is looked at, at the detection cadence. A dark or blocked view has nothing
        to detect. Otherwise: motion and moving tracks at the cadence, and the still
        tracks that matter (``_watched``) every ``refresh_s``.
        """
        config = self.config
        if quality in ("dark", "blocked"):
            return []
        due = self._detect_due()
        if blind:
            return [(0, 0, self.width, self.height)] if due else []
        active = self._tracker.active()
        wanted: list[Box | None] = []
        if due:
            wanted += motion_boxes
            wanted += [self._clip_box(t.box) for t in active if self._moving(t)]
        last = self._last_refresh_t
        if last is None or t_s - last >= config.refresh_s:
            still = [self._clip_box(t.box) for t in active if self._watched(t)]
            if still:
                self._last_refresh_t = t_s
                wanted += still
        boxes = [b for b in wanted if b is not None]
        full = self._last_full_t is None or t_s - self._last_full_t >= config.full_frame_s
        if not boxes and not full:
            return []
        return detector_regions(
            boxes,
            self.width,
            self.height,
            native_side=self._detector.input_size,
            min_side=config.min_region_side,
            margin=config.region_margin,
            max_regions=config.max_regions,
            whole=full,
        )

    def _detect_due(self) -> bool:
        """Whether the detection cadence has come round: ``detect_every`` frames, or as many
        frames as make ``detect_interval_s`` at the measured frame interval (a quarter of a
        frame early rather than late: a 12.5 fps camera is looked at on every frame)."""
        config = self.config
        every = config.detect_every
        if every is None:
            dt = self._frame_dt.seconds
            every = max(1, int(config.detect_interval_s / dt + 0.25)) if dt else 1
        return self._since_detect >= every

    @staticmethod
    def _moving(track: Track) -> bool:
        """Faster than ``STILL_HEIGHTS_PER_S`` box heights a second (image motion)."""
        height = max(1.0, track.box[3] - track.box[1])
        return math.hypot(*track.velocity) > STILL_HEIGHTS_PER_S * height

    def _watched(self, track: Track) -> bool:
        """Whether a still track must be kept alive by re-detection without motion.

        Only where it matters: inside a zone (a stopped vehicle, a queue, a pedestrian on
        the road) or standing at a counting line (a car waiting on the line must keep its
        side, or a new track born inside the band would never count). A car parked
        elsewhere is let go: keeping it would cost a region twice a second, forever.
        """
        x, y = track.bottom_centre
        if any(zone.contains(x, y) for zone in self.scene.zones):
            return True
        reach = max(1.0, track.box[3] - track.box[1])
        for line in self.scene.lines:
            along = line.position(x, y)
            if abs(line.signed_distance(x, y)) <= reach and -reach <= along <= line.length + reach:
                return True
        return False

    def _clip_box(self, box: tuple[float, float, float, float]) -> Box | None:
        x0, y0 = max(0, int(box[0])), max(0, int(box[1]))
        x1, y1 = min(self.width, int(box[2]) + 1), min(self.height, int(box[3]) + 1)
        return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None

    def _detect(self, frame: VideoFrame, regions: list[Box]) -> list[Detection]:
        t0 = time.perf_counter()
        crops = [(frame.bgr_crop(*region), (region[0], region[1])) for region in regions]
        found = self._detector.detect_regions(crops, frame_size=(self.width, self.height))
        detections = merge_riders(drop_parts(found))
        self.stats.detect_s += time.perf_counter() - t0
        self.stats.inference_s += self._detector.last_timing.inference_s
        self.stats.detector_runs += 1
        self.stats.regions += len(regions)
        self.stats.detections += len(detections)
        return detections

    def _retire(self, ended: list[Track]) -> None:
        """Close the books of tracks that ended: dwell records, per-line state."""
        self._zones.finish(ended)
        ids = [t.id for t in ended]
        for counter in self._counters:
            counter.forget(ids)
        self._classes.forget(ids)

    def _account(
        self,
        t_s: float,
        crossings: list[Crossing],
        events: list[ZoneEvent],
        quality: FrameQuality,
    ) -> list[dict[str, Any]]:
        """File this frame's outputs with the summary; return the intervals it completed."""
        summary = self._summary
        for crossing in crossings:
            summary.add_crossing(crossing)
        for event in events:
            summary.add_event(event)
        for dwell in self._zones.take_dwells():
            summary.add_dwell(dwell)
        summary.sample(t_s, self._zones.occupied(), self._zones.queues())
        summary.add_quality(1 + self._pending_skipped, 1, self._pending_skipped, quality)
        self._pending_skipped = 0
        self.stats.crossings += len(crossings)
        self.stats.events += len(events)
        self._last_t = t_s
        done: list[dict[str, Any]] = []
        while summary.due(t_s):
            done.append(summary.flush(t_s))
        return done

    def finish(self) -> list[dict[str, Any]]:
        """End of the stream: end every track and return the remaining summaries.

        The last one covers an interval the stream did not complete and is flagged
        ``"partial": true``; nothing is returned if no frame was ever processed.
        """
        ended = self._tracker.finish_all()
        if ended:
            self._retire(ended)
        if self._last_t is None:
            return []
        t_s = self._last_t
        summary = self._summary
        for dwell in self._zones.take_dwells():
            summary.add_dwell(dwell)
        done: list[dict[str, Any]] = []
        while summary.due(t_s):
            done.append(summary.flush(t_s))
        last = summary.flush(t_s)
        last["partial"] = True
        done.append(last)
        self._last_t = None
        return done


class FrameInterval:
    """The stream's frame interval, measured from the timestamps (a median of the last few).

    Why measured: a container's declared rate is often wrong or missing, and a camera may
    drop to a lower rate at night; every time-scaled decision (the detection cadence) needs
    the rate the frames really come at.
    """

    SAMPLES = 15

    def __init__(self) -> None:
        self._last: float | None = None
        self._gaps: deque[float] = deque(maxlen=self.SAMPLES)

    def update(self, t_s: float) -> None:
        if self._last is not None and t_s > self._last:
            self._gaps.append(t_s - self._last)
        self._last = t_s

    @property
    def seconds(self) -> float | None:
        """The mean of the recent intervals near their median, or None before the second
        frame: a dropped frame (a doubled interval) is left out, and a camera whose stamps
        alternate 80 and 120 ms is read as 100 ms, not as whichever the median lands on."""
        if not self._gaps:
            return None
        median = statistics.median(self._gaps)
        usual = [gap for gap in self._gaps if 0.5 * median <= gap <= 1.5 * median]
        return sum(usual) / len(usual)


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


def _travelled(track: Track) -> bool:
    """Whether the track's ground point moved ``MIN_TRAVEL_HEIGHTS`` box heights so far."""
    (_, x0, y0), (_, x1, y1) = track.points[0], track.points[-1]
    height = max(1.0, track.box[3] - track.box[1])
    return math.hypot(x1 - x0, y1 - y0) >= MIN_TRAVEL_HEIGHTS * height


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
