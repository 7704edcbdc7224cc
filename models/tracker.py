"""Multi-object tracking by IoU and centroid distance, with constant-velocity prediction.

The detector runs only where there is motion and maybe not on every frame, and its boxes
flicker (a missed frame, a box that grows and shrinks, a car called truck for a frame). The
tracker turns that into stable identities so a counting line sees each road user once:

* every track predicts its box forward with a fitted velocity, so a fast object still
  overlaps its prediction on the next detection;
* detections are matched greedily, best first: IoU with the predicted box (same class
  preferred), then, for what is left, centre distance within a gate scaled by the object's
  size, so small fast objects whose boxes no longer overlap still match;
* a track survives ``max_missed_s`` of stream time without a matching detection (an
  occlusion, a flicker) before it ends; ``finished()`` hands ended tracks over once;
* a track is confirmed, and reported, after ``min_hits`` detections, so a one-frame false
  detection never becomes a count.

Time is the stream clock in seconds (``t_s``), never the wall clock, so the same video gives
the same tracks however fast it is processed.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from smartpole.models.detector import Detection

BoxF = tuple[float, float, float, float]

#: The velocity is fitted to at most this many recent box centres, within this window:
#: enough to average box jitter out, few enough to follow a car that brakes or turns.
VELOCITY_SAMPLES = 8
VELOCITY_WINDOW_S = 1.0
#: Matching score bonus for a detection of the track's own class (breaks IoU near-ties).
SAME_CLASS_BONUS = 0.1
#: ... and for a confirmed track over a tentative one (a duplicate that appeared beside it).
CONFIRMED_BONUS = 0.05
#: Centre-distance gates (see ``Tracker._gate``), in multiples of the track's long side,
#: plus a share of the distance the prediction extrapolated.
NEW_TRACK_GATE = 1.5
KNOWN_TRACK_GATE = 0.6
PREDICTION_SLACK = 0.5
#: Box areas more different than this factor never match by distance alone.
MAX_AREA_RATIO = 4.0
#: Points kept per track: ~20 s at 25 fps, plenty for speed (a 1 s window) and direction;
#: bounds the memory of a vehicle parked in view for an hour.
MAX_POINTS = 512


def iou(a: BoxF, b: BoxF) -> float:
    """Intersection over union of two ``x0, y0, x1, y1`` boxes (0 when either is empty)."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _centre(box: BoxF) -> tuple[float, float]:
    return ((box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0)


def _area(box: BoxF) -> float:
    return max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])


@dataclass(eq=False)
class Track:
    """One tracked object.

    ``box`` is the predicted box at the latest time the tracker was told about (equal to the
    detection on a frame where it matched). ``points`` holds ``(t_s, x, y)`` of the
    bottom-centre of each matched detection (where the object touches the road), the input
    of counting lines, zones and speed; only the last ``MAX_POINTS`` are kept.
    ``velocity`` is the box-centre velocity in pixels per second, fitted to the last few
    detections. ``missed`` counts
    consecutive detector runs without a match; ``hits`` the matched detections.

    Equality is identity (a track is one object in the world, whatever its fields say), so
    tracks can key dicts and sets.
    """

    id: int
    box: BoxF
    class_name: str
    score: float
    hits: int
    missed: int
    first_seen_s: float
    last_seen_s: float
    points: list[tuple[float, float, float]] = field(default_factory=list)
    velocity: tuple[float, float] = (0.0, 0.0)
    class_votes: Counter[str] = field(default_factory=Counter, repr=False)
    confirmed: bool = False
    _measured: BoxF = field(default=(0.0, 0.0, 0.0, 0.0), repr=False)
    _speed_known: bool = field(default=False, repr=False)
    _centres: deque[tuple[float, float, float]] = field(
        default_factory=lambda: deque(maxlen=VELOCITY_SAMPLES), repr=False
    )

    @property
    def bottom_centre(self) -> tuple[float, float]:
        """The latest measured bottom-centre point (where the object stands on the road)."""
        return (self.points[-1][1], self.points[-1][2])

    @property
    def age_s(self) -> float:
        return self.last_seen_s - self.first_seen_s

    def predicted(self, t_s: float) -> BoxF:
        """The last measured box moved by the fitted velocity to time ``t_s``."""
        dt = max(0.0, t_s - self.last_seen_s)
        dx, dy = self.velocity[0] * dt, self.velocity[1] * dt
        m = self._measured
        return (m[0] + dx, m[1] + dy, m[2] + dx, m[3] + dy)

    def _update_velocity(self) -> None:
        """Least-squares slope of the recent centres: one jittered box barely moves it."""
        latest = self._centres[-1][0]
        recent = [c for c in self._centres if c[0] >= latest - VELOCITY_WINDOW_S]
        if len(recent) < 2:
            return
        n = len(recent)
        mean_t = sum(c[0] for c in recent) / n
        mean_x = sum(c[1] for c in recent) / n
        mean_y = sum(c[2] for c in recent) / n
        var_t = sum((c[0] - mean_t) ** 2 for c in recent)
        if var_t <= 0:
            return
        vx = sum((c[0] - mean_t) * (c[1] - mean_x) for c in recent) / var_t
        vy = sum((c[0] - mean_t) * (c[2] - mean_y) for c in recent) / var_t
        self.velocity = (vx, vy)
        self._speed_known = True

    def _observe(self, detection: Detection, t_s: float) -> None:
        box = detection.box
        if t_s > self.last_seen_s:
            self._centres.append((t_s, *_centre(box)))
            self._update_velocity()
        self._measured = box
        self.box = box
        self.last_seen_s = t_s
        self.hits += 1
        self.missed = 0
        self.score += (detection.score - self.score) / self.hits  # running mean
        self.class_votes[detection.class_name] += 1
        self.class_name = max(self.class_votes.items(), key=lambda kv: (kv[1], kv[0]))[0]
        self.points.append((t_s, (box[0] + box[2]) / 2.0, box[3]))
        if len(self.points) > MAX_POINTS:
            del self.points[: len(self.points) - MAX_POINTS]


class Tracker:
    """Greedy IoU/centroid tracker over detections in full-frame pixels.

    ``update(detections, t_s)`` for a frame on which the detector ran (over the whole frame
    or over regions: the pipeline should include the predicted boxes of active tracks in
    its regions, or a stationary vehicle that stopped making motion is lost after
    ``max_missed_s``); ``predict_only(t_s)`` for a frame on which it did not. Both return
    the confirmed live tracks. Call ``finished()`` to take the confirmed tracks that ended.
    """

    def __init__(
        self, *, iou_threshold: float = 0.25, max_missed_s: float = 1.0, min_hits: int = 2
    ) -> None:
        if not 0.0 < iou_threshold <= 1.0 or max_missed_s < 0 or min_hits < 1:
            raise ValueError("iou_threshold in (0, 1], max_missed_s >= 0, min_hits >= 1")
        self._iou_threshold = iou_threshold
        self._max_missed_s = max_missed_s
        self._min_hits = min_hits
        self._tracks: list[Track] = []
        self._finished: list[Track] = []
        self._next_id = 1
        self._now = -math.inf

    def active(self) -> list[Track]:
        """Confirmed live tracks, oldest first (their ``box`` is the latest prediction)."""
        return [t for t in self._tracks if t.confirmed]

    def update(self, detections: Sequence[Detection], t_s: float) -> list[Track]:
        """Match a frame's detections at stream time ``t_s``; return confirmed live tracks."""
        self._advance(t_s)
        tracks = self._tracks
        predicted = [t.box for t in tracks]
        pairs: list[tuple[float, int, int]] = []
        for ti, (track, pbox) in enumerate(zip(tracks, predicted, strict=True)):
            for di, det in enumerate(detections):
                overlap = iou(pbox, det.box)
                if overlap >= self._iou_threshold:
                    bonus = SAME_CLASS_BONUS if det.class_name == track.class_name else 0.0
                    bonus += CONFIRMED_BONUS if track.confirmed else 0.0
                    pairs.append((overlap + bonus, ti, di))
        matched_t: set[int] = set()
        matched_d: set[int] = set()
        for _, ti, di in sorted(pairs, key=lambda p: (-p[0], p[1], p[2])):
            if ti not in matched_t and di not in matched_d:
                matched_t.add(ti)
                matched_d.add(di)
                tracks[ti]._observe(detections[di], t_s)
        self._match_by_distance(detections, t_s, matched_t, matched_d, predicted)
        for ti, track in enumerate(tracks):
            if ti not in matched_t:
                track.missed += 1
        for di, det in enumerate(detections):
            if di not in matched_d:
                self._start(det, t_s)
        for track in tracks:
            if not track.confirmed and track.hits >= self._min_hits:
                track.confirmed = True
        return self.active()

    def _match_by_distance(
        self,
        detections: Sequence[Detection],
        t_s: float,
        matched_t: set[int],
        matched_d: set[int],
        predicted: list[BoxF],
    ) -> None:
        """Second pass for what IoU left: nearest centres within a size-scaled gate."""
        pairs: list[tuple[float, int, int]] = []
        for ti, track in enumerate(self._tracks):
            if ti in matched_t:
                continue
            pbox = predicted[ti]
            pc = _centre(pbox)
            for di, det in enumerate(detections):
                if di in matched_d:
                    continue
                a_t, a_d = _area(pbox), _area(det.box)
                if min(a_t, a_d) <= 0 or max(a_t, a_d) > MAX_AREA_RATIO * min(a_t, a_d):
                    continue
                dc = _centre(det.box)
                distance = math.hypot(dc[0] - pc[0], dc[1] - pc[1])
                gate = self._gate(track, pbox, det.box, t_s)
                if distance <= gate and det.class_name == track.class_name:
                    pairs.append((distance / gate, ti, di))
        for _, ti, di in sorted(pairs):
            if ti not in matched_t and di not in matched_d:
                matched_t.add(ti)
                matched_d.add(di)
                self._tracks[ti]._observe(detections[di], t_s)

    @staticmethod
    def _gate(track: Track, pbox: BoxF, dbox: BoxF, t_s: float) -> float:
        """How far (px) a detection's centre may be from the track's predicted centre.

        A track with no velocity yet (one detection) may have moved anywhere nearby, so its
        gate is wider, but scaled by the smaller of the two boxes: a big box gives no licence
        to jump onto a small one far away. Once the velocity is known the prediction already
        follows the motion, and the gate covers only the prediction's error; a wide gate
        there lets a parked car, hidden for a moment behind a passing truck, jump onto it.
        """
        size = max(pbox[2] - pbox[0], pbox[3] - pbox[1])
        if not track._speed_known:
            return NEW_TRACK_GATE * min(size, max(dbox[2] - dbox[0], dbox[3] - dbox[1]))
        dt = max(0.0, t_s - track.last_seen_s)
        return KNOWN_TRACK_GATE * size + PREDICTION_SLACK * math.hypot(*track.velocity) * dt

    def predict_only(self, t_s: float) -> list[Track]:
        """Advance predictions to ``t_s`` on a frame without detection; return confirmed live."""
        self._advance(t_s)
        return self.active()

    def finished(self) -> list[Track]:
        """Confirmed tracks that ended since the last call (each is handed over once)."""
        done, self._finished = self._finished, []
        return done

    def finish_all(self) -> list[Track]:
        """End every track (end of a file, worker shutdown); return all unreported ended ones."""
        self._finished.extend(t for t in self._tracks if t.confirmed)
        self._tracks = []
        return self.finished()

    def _advance(self, t_s: float) -> None:
        """Move predictions to ``t_s`` and end the tracks unseen for more than max_missed_s."""
        self._now = max(self._now, t_s)
        alive: list[Track] = []
        for track in self._tracks:
            if self._now - track.last_seen_s > self._max_missed_s:
                if track.confirmed:
                    self._finished.append(track)
                continue
            track.box = track.predicted(self._now)
            alive.append(track)
        self._tracks = alive

    def _start(self, detection: Detection, t_s: float) -> None:
        box = detection.box
        track = Track(
            id=self._next_id,
            box=box,
            class_name=detection.class_name,
            score=detection.score,
            hits=1,
            missed=0,
            first_seen_s=t_s,
            last_seen_s=t_s,
            points=[(t_s, (box[0] + box[2]) / 2.0, box[3])],
            class_votes=Counter({detection.class_name: 1}),
            confirmed=self._min_hits <= 1,
            _measured=box,
        )
        track._centres.append((t_s, *_centre(box)))
        self._next_id += 1
        self._tracks.append(track)
