"""One camera's analytics, frame by frame: motion, detection where needed, tracking, counting.

Why this order and these shortcuts (the issue's budget is a 1280x720, 25 fps stream on one
core with 1.5x headroom, about 27 ms a frame including decoding):

* motion runs on every frame, on the downscaled luma only (well under 1 ms);
* the detector (13.5-22 ms per 416x416 input on one core) runs only where there is motion
  and around the tracks it must keep alive, and while motion persists only every
  ``detect_interval_s`` of stream time (so a 10 fps camera is looked at on every frame and
  a 60 fps one on every 9th): the tracker predicts the frames between runs, so a car still
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

import math
import time
from typing import Any

from smartpole.agent.config.cameras import CameraConfig
from smartpole.models.counting import Crossing, LineCounter
from smartpole.models.detections import drop_parts, load_detector
from smartpole.models.detector import Detection, YoloxDetector
from smartpole.models.errors import AnalyticsConfigError
from smartpole.models.frames import FrameInterval, VideoFrame
from smartpole.models.kernels import warm_up
from smartpole.models.motion import FrameQuality, MotionDetector
from smartpole.models.pipeline_results import FrameResult, PipelineStats
from smartpole.models.regions import Box, detector_regions
from smartpole.models.road_users import RoadUserClassifier, merge_riders
from smartpole.models.roadside import RoadsideEvent
from smartpole.models.roadside_stage import NO_GEO, RoadsideSettings, RoadsideStage
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
#: Frames since the last detection before the first one: more than any cadence.
FIRST_LOOK = 1 << 30


class Pipeline:
    """The analytics of one camera whose frames are ``width`` x ``height``; not thread-safe.

    Construction builds the ``scene`` unless given one (``AnalyticsConfigError``),
    validates its lines and zones against the frame size (``AnalyticsConfigError``), loads
    the model unless given a ``detector`` (``ModelError``) and warms up the Numba kernels
    and the detector, so the first frame costs what every frame costs; the warm-up times
    are in ``stats.compile_s`` and ``stats.model_load_s``. ``camera`` names the summaries.

    With ``roadside`` settings (a geo-calibrated scene only: ``AnalyticsConfigError``
    otherwise), ``roadside`` is the stage that gives the road users for the RSU at the
    snapshot rate, and every frame result carries the roadside events
    (``roadside_stage``); the detector then looks at least once a snapshot period, at
    every live track, moving or not, so no participant's measurement is older than the RSU
    accepts.
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
        roadside: RoadsideSettings | None = None,
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
        self.roadside: RoadsideStage | None = None
        if roadside is not None:
            if scene.geo is None or calibration is None:
                raise AnalyticsConfigError(NO_GEO)
            self.roadside = RoadsideStage(calibration, self._zones, roadside)
        self._summary = SummaryAggregator(
            camera,
            config.interval_s,
            [line.name for line in scene.lines],
            [zone.name for zone in scene.zones],
            classes=self._detector.class_names,
            queues=[zone.name for zone in scene.zones if zone.kind == "queue"],
        )
        self._since_detect = FIRST_LOOK  # the first motion frame is looked at
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
        if self._frame_dt.update(t_s) and self._frame_dt.seconds is not None:
            self._motion.pace(self._frame_dt.seconds)
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
        roadside_events: list[RoadsideEvent] = []
        if self.roadside is not None:
            roadside_events = self.roadside.step(tracks, events, t_s)
        if ended:
            roadside_events += self._retire(ended)
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
            roadside_events=roadside_events,
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
        refresh_s = config.refresh_s
        if self.roadside is not None:
            refresh_s = min(refresh_s, self.roadside.settings.period_s)
        if last is None or t_s - last >= refresh_s:
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
        frames as make ``detect_interval_s`` at the measured frame interval, rounded down,
        or up when within a quarter of a frame of the next (0.16 s: every frame at 10 fps,
        every 2nd at 12.5, every 4th at 25, every 9th at 60)."""
        config = self.config
        every = config.detect_every
        if every is None:
            dt = self._frame_dt.seconds
            interval = config.detect_interval_s
            if self.roadside is not None:
                interval = min(interval, self.roadside.settings.period_s)
            every = max(1, int(interval / dt + 0.25)) if dt else 1
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
        elsewhere is let go: keeping it would cost a region twice a second, forever; but
        not on a camera that reports to the RSU, where a parked car is a road user too.
        """
        if self.roadside is not None:
            return True
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

    def _retire(self, ended: list[Track]) -> list[RoadsideEvent]:
        """Close the books of tracks that ended: dwell records, per-line state; returns
        the cancellations of their roadside events."""
        self._zones.finish(ended)
        ids = [t.id for t in ended]
        for counter in self._counters:
            counter.forget(ids)
        self._classes.forget(ids)
        return self.roadside.retire(ended) if self.roadside is not None else []

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


def _travelled(track: Track) -> bool:
    """Whether the track's ground point moved ``MIN_TRAVEL_HEIGHTS`` box heights so far."""
    (_, x0, y0), (_, x1, y1) = track.points[0], track.points[-1]
    height = max(1.0, track.box[3] - track.box[1])
    return math.hypot(x1 - x0, y1 - y0) >= MIN_TRAVEL_HEIGHTS * height
