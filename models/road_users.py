"""The product's road-user classes: what a count reports, decided over a track's life.

The product counts ``car`` (light vehicles: cars, SUVs, pickups, small vans), ``truck``
(heavy goods vehicles, box trucks, large vans), ``bus``, ``motorcycle``, ``bicycle`` and
``person``. That is a traffic-engineering definition, not the detector's: COCO calls a
pickup a truck, and YOLOX-nano calls most buses and box trucks seen from an unusual angle a
car. So the detector's class is evidence, not the answer:

* **A life-long vote.** Every detection matched to a track votes for its class with weight
  ``score x box area``: a big, confident view of a vehicle near the camera outweighs a
  flicker of "truck" on a 20-pixel blob far away.
* **Riders are one road user.** A cyclist is often detected as a person *and* a bicycle;
  ``merge_riders`` makes the pair one detection of the vehicle's class before tracking, and
  a track whose vote is mostly person but carries a real share of bicycle/motorcycle is a
  rider (the bicycle is missed on some frames, the person on others).
* **Light versus heavy by length, not by the detector.** With a ground calibration the
  vehicle's ground-plane length decides, the way length-based vehicle-detection systems
  classify. Without one the camera calibrates itself: the box area of a vehicle as it
  crosses a line is compared with the median area of the light vehicles that crossed the
  same part of the same line in the same direction before it (the same image position, so
  perspective cancels out). A box truck or bus is more than twice a car there; a pickup or
  an SUV is within about 1.4 of the median. Until enough light vehicles have been seen (and
  when the length cannot be measured) the detector's vote is the fallback.

The class is decided when a crossing is emitted, from the whole life of the track up to
then, so the count, the summary, the outbox and ``analyze`` all carry the same class.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from smartpole.models.calibration import GroundCalibration
from smartpole.models.counting import CountingLine, Crossing
from smartpole.models.detector import Detection
from smartpole.models.tracker import Track

BoxF = tuple[float, float, float, float]

#: The product's classes, in report order (the summary schema lists the same).
PRODUCT_CLASSES = ("car", "truck", "bus", "motorcycle", "bicycle", "person")
VEHICLES = frozenset({"car", "truck", "bus"})
RIDDEN = frozenset({"bicycle", "motorcycle"})
#: A person box overlapping a bicycle/motorcycle box by this share of the narrower box's
#: width, standing on it, is its rider.
RIDER_OVERLAP = 0.5
#: A person track whose bicycle+motorcycle vote is this share of its person vote is a rider.
RIDER_SHARE = 0.25
#: A person/rider track this much inside another one (share of the smaller box) is the
#: same road user.
RIDER_TRACK_SHARE = 0.5
#: Area at the line, over the median of the light vehicles there, from which a vehicle is
#: heavy (measured: cars, SUVs and pickups 0.8-1.42, a box truck 3.3).
HEAVY_AREA_RATIO = 2.0
#: Ground-plane length from which a vehicle is heavy (a crew-cab long-bed pickup is ~6.2 m,
#: a cutaway box truck 6.5-8 m, a bus 10-13 m).
HEAVY_LENGTH_M = 6.5
#: Light vehicles needed at a line part before sizes are trusted; how many are kept.
MIN_REFERENCE = 5
REFERENCE_SIZE = 50
#: Each line is split into this many parts along its length (lanes at different depths).
LINE_PARTS = 3
#: The detections of this last stretch of time (at least ``RECENT_MIN`` of them) describe
#: a track's size as it crosses: near the line, whatever the frame rate and cadence.
RECENT_S = 0.6
RECENT_MIN = 3
_KEPT = 32
#: The travel direction must be within this angle (cosine) of the box's bottom edge on the
#: ground for the box to show the vehicle's length (a side or oblique view, not head-on).
MIN_LENGTH_COSINE = 0.7


def box_area(box: BoxF) -> float:
    return max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])


def merge_riders(detections: Sequence[Detection]) -> list[Detection]:
    """One detection per rider: a person on a bicycle/motorcycle becomes the vehicle.

    The merged box is the union (its bottom is the wheels, where the road user touches the
    road), its class the vehicle's and its score the better of the two. Each vehicle takes
    at most one rider: the person overlapping it most.
    """
    people = [i for i, d in enumerate(detections) if d.class_name == "person"]
    used: set[int] = set()
    out: list[Detection] = []
    for det in detections:
        if det.class_name not in RIDDEN:
            continue
        best, best_overlap = -1, 0.0
        for i in people:
            if i in used:
                continue
            overlap = _rider_overlap(detections[i].box, det.box)
            if overlap > best_overlap:
                best, best_overlap = i, overlap
        if best < 0:
            out.append(det)
            continue
        used.add(best)
        rider = detections[best]
        a, b = rider.box, det.box
        out.append(
            Detection(
                box=(min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])),
                score=max(rider.score, det.score),
                class_name=det.class_name,
            )
        )
    out.extend(d for i, d in enumerate(detections) if d.class_name not in RIDDEN and i not in used)
    return sorted(out, key=lambda d: -d.score)


def _rider_overlap(person: BoxF, vehicle: BoxF) -> float:
    """How much ``person`` rides ``vehicle`` (0 when it does not): their shared width."""
    shared = min(person[2], vehicle[2]) - max(person[0], vehicle[0])
    narrower = min(person[2] - person[0], vehicle[2] - vehicle[0])
    if shared <= 0 or narrower <= 0 or shared < RIDER_OVERLAP * narrower:
        return 0.0
    person_mid = (person[1] + person[3]) / 2.0
    vehicle_mid = (vehicle[1] + vehicle[3]) / 2.0
    height = person[3] - person[1]
    # the person sits above the vehicle's middle and reaches down into its box
    if person_mid >= vehicle_mid or person[3] < vehicle[1] - 0.1 * height:
        return 0.0
    return shared / narrower


def voted_class(weights: Mapping[str, float]) -> str | None:
    """The detector class a track's weighted vote elects (None for no vote).

    The heaviest class wins (ties: the name first in ``PRODUCT_CLASSES``, then by name);
    a person carrying a real share of bicycle or motorcycle is that rider.
    """
    live = {name: w for name, w in weights.items() if w > 0 and math.isfinite(w)}
    if not live:
        return None
    order = {name: i for i, name in enumerate(PRODUCT_CLASSES)}
    winner = min(live, key=lambda n: (-live[n], order.get(n, len(order)), n))
    if winner == "person":
        ridden = {n: live.get(n, 0.0) for n in RIDDEN}
        best = max(sorted(ridden), key=lambda n: ridden[n])
        if ridden[best] > 0 and sum(ridden.values()) >= RIDER_SHARE * live["person"]:
            return best
    return winner


def product_class(
    weights: Mapping[str, float],
    *,
    size_ratio: float | None = None,
    length_m: float | None = None,
) -> str | None:
    """The class counted for a track: its vote, with light/heavy decided by size.

    ``length_m`` (ground length, with a calibration) decides first, then ``size_ratio``
    (area against the light vehicles at the same place); with neither, the detector's vote
    stands. A heavy vehicle is a bus if the detector saw more bus than truck in it.
    """
    voted = voted_class(weights)
    if voted not in VEHICLES:
        return voted
    if length_m is not None and math.isfinite(length_m):
        heavy = length_m >= HEAVY_LENGTH_M
    elif size_ratio is not None and math.isfinite(size_ratio):
        heavy = size_ratio >= HEAVY_AREA_RATIO
    else:
        return voted
    if not heavy:
        return "car"
    return "bus" if weights.get("bus", 0.0) > weights.get("truck", 0.0) else "truck"


@dataclass
class _TrackVotes:
    weights: dict[str, float] = field(default_factory=dict)
    boxes: deque[tuple[float, BoxF]] = field(default_factory=lambda: deque(maxlen=_KEPT))
    #: (line, direction) pairs already counted for this road user through a partner track.
    counted: set[tuple[str, str]] = field(default_factory=set)


def _recent(boxes: Sequence[tuple[float, BoxF]]) -> list[BoxF]:
    """The boxes of the last ``RECENT_S`` (at least the last ``RECENT_MIN``), oldest first."""
    if not boxes:
        return []
    newest = boxes[-1][0]
    recent = [box for t, box in boxes if t >= newest - RECENT_S]
    if len(recent) < RECENT_MIN:
        recent = [box for _, box in list(boxes)[-RECENT_MIN:]]
    return recent


def _shared_share(a: BoxF, b: BoxF) -> float:
    """The share of the smaller box that lies inside the other."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    smaller = min(box_area(a), box_area(b))
    return iw * ih / smaller if iw > 0 and ih > 0 and smaller > 0 else 0.0


def _references(key: tuple[str, str, int] | None) -> tuple[tuple[str, str, int], ...]:
    """The light-vehicle references a crossing is compared with, first to last: its part of
    the line, then the whole line in that direction, which a part falls back on until it has
    ``MIN_REFERENCE`` light vehicles of its own (a lorry in the lane few cars use would
    otherwise keep the detector's class, often "car", for a long time)."""
    return () if key is None else (key, (key[0], key[1], -1))


class RoadUserClassifier:
    """Per camera: collects each track's votes and decides the class of its crossings.

    Call ``observe`` after every tracker update with the frame's detections, ``classify``
    on each crossing as it is emitted, and ``forget`` with the ids of tracks that ended.

    A cyclist can still become two tracks (a person-only box on the frames the bicycle is
    missed drifts off into a track of its own): a crossing by a person or rider track that
    overlaps (``RIDER_TRACK_SHARE``) a live partner track of those classes, one of them with
    a ridden vote, counts once for the pair (``classify`` returns None for the second).
    """

    def __init__(
        self,
        lines: Iterable[CountingLine],
        *,
        calibration: GroundCalibration | None = None,
        classes: Iterable[str] = PRODUCT_CLASSES,
    ) -> None:
        self._lines = {line.name: line for line in lines}
        self._calibration = calibration
        self._classes = frozenset(classes)
        self._tracks: dict[int, _TrackVotes] = {}
        self._reference: dict[tuple[str, str, int], deque[float]] = {}
        self._live: list[Track] = []

    def observe(self, tracks: Iterable[Track], detections: Sequence[Detection]) -> None:
        """File the detections matched on this frame under their tracks.

        A track matched on this frame (``missed == 0``) has its detection's box as ``box``
        and that box's bottom-centre as its newest point (the tracker's contract); either
        identifies the detection.
        """
        by_box = {det.box: det for det in detections}
        by_point = {((d.box[0] + d.box[2]) / 2.0, d.box[3]): d for d in detections}
        tracks = list(tracks)
        self._live = tracks
        for track in tracks:
            if track.missed:
                continue
            det = by_box.get(track.box)
            if det is None and track.points:
                det = by_point.get((track.points[-1][1], track.points[-1][2]))
            if det is None:
                continue
            votes = self._tracks.setdefault(track.id, _TrackVotes())
            area = box_area(det.box)
            votes.weights[det.class_name] = (
                votes.weights.get(det.class_name, 0.0) + det.score * area
            )
            votes.boxes.append((track.last_seen_s, det.box))

    def classify(self, crossing: Crossing, track: Track) -> Crossing | None:
        """The crossing with the product class decided now, over the track's life so far;
        None when a partner track of the same rider already counted it."""
        votes = self._tracks.get(track.id)
        if votes is None or not votes.weights:
            return crossing
        rider = self._rider_pair(crossing, track, votes)
        if rider is not None:
            return None if rider == "" else dataclasses.replace(crossing, class_name=rider)
        line = self._lines.get(crossing.line)
        key = self._key(line, crossing, track)
        recent = _recent(votes.boxes)
        area = statistics.median(box_area(b) for b in recent)
        ratio = None
        for ref_key in _references(key):
            reference = self._reference.get(ref_key)
            if reference is not None and len(reference) >= MIN_REFERENCE:
                ratio = area / max(1e-9, statistics.median(reference))
                break
        length = self.ground_length(recent, track)
        decided = product_class(votes.weights, size_ratio=ratio, length_m=length)
        if decided is None or decided not in self._classes:
            return crossing
        if decided == "car":
            for ref_key in _references(key):
                self._reference.setdefault(ref_key, deque(maxlen=REFERENCE_SIZE)).append(area)
        if decided == crossing.class_name:
            return crossing
        return dataclasses.replace(crossing, class_name=decided)

    def _rider_pair(self, crossing: Crossing, track: Track, votes: _TrackVotes) -> str | None:
        """For a track with a live rider partner: "" if the pair already counted here,
        else the pair's class (now counted for both); None without a partner."""
        mine = voted_class(votes.weights)
        if mine not in RIDDEN and mine != "person":
            return None
        where = (crossing.line, crossing.direction)
        for other in self._live:
            theirs = self._tracks.get(other.id)
            if other is track or theirs is None:
                continue
            their_class = voted_class(theirs.weights)
            if their_class not in RIDDEN and their_class != "person":
                continue
            if mine not in RIDDEN and their_class not in RIDDEN:
                continue
            if _shared_share(track.box, other.box) < RIDER_TRACK_SHARE:
                continue
            if where in votes.counted:
                return ""
            votes.counted.add(where)
            theirs.counted.add(where)
            return mine if mine in RIDDEN else their_class
        return "" if where in votes.counted else None

    def forget(self, track_ids: Iterable[int]) -> None:
        for track_id in track_ids:
            self._tracks.pop(track_id, None)

    @staticmethod
    def _key(
        line: CountingLine | None, crossing: Crossing, track: Track
    ) -> tuple[str, str, int] | None:
        if line is None or not track.points:
            return None
        x, y = track.bottom_centre
        share = line.position(x, y) / line.length
        part = min(LINE_PARTS - 1, max(0, int(share * LINE_PARTS)))
        return (crossing.line, crossing.direction, part)

    def ground_length(self, boxes: Iterable[BoxF], track: Track) -> float | None:
        """Median ground length (m) of the recent boxes, or None when it cannot be seen.

        The bottom corners of a box seen from the side or obliquely lie near the ground
        under the vehicle's two ends; their ground distance along the direction of travel is
        its length. Head-on the bottom edge is the vehicle's width and says nothing of its
        length: None, and the relative size decides.
        """
        calibration = self._calibration
        if calibration is None:
            return None
        velocity = calibration.ground_velocity(track)
        if velocity is None or math.hypot(*velocity) <= 0:
            return None
        speed = math.hypot(*velocity)
        ux, uy = velocity[0] / speed, velocity[1] / speed
        lengths: list[float] = []
        for box in boxes:
            left = calibration.ground_point(box[0], box[3])
            right = calibration.ground_point(box[2], box[3])
            if left is None or right is None:
                continue
            dx, dy = right[0] - left[0], right[1] - left[1]
            extent = math.hypot(dx, dy)
            if extent <= 0:
                continue
            along = abs(dx * ux + dy * uy)
            if along < MIN_LENGTH_COSINE * extent:
                continue
            lengths.append(along)
        if not lengths:
            return None
        return statistics.median(lengths)
