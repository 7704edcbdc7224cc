"""Zones on the image: occupancy, dwell time, queues at a stop line, and traffic events.

A zone is a polygon in the video's native pixels. A track is *in* a zone when its latest
bottom-centre (where it touches the road) is inside the polygon, so a tall vehicle beside a
zone does not occupy it by overhanging it in the picture.

Kinds and what they give:

* ``occupancy``: fraction of time with at least one object inside, and per-track dwell time
  (every zone gives these; the kind says the zone is there for nothing else);
* ``carriageway``: a "pedestrian on carriageway" event when a person stays inside for more
  than ``pedestrian_after_s`` (1 s: crossing at a run still takes longer; a box flickering
  across the kerb does not);
* ``no_stopping``: a "stopped vehicle" event when a vehicle stays stopped inside for more
  than ``stopped_after_s`` (30 s by default);
* ``queue``: with its ``stop_line``, the number of stopped vehicles inside and the distance
  from the stop line to the farthest of them (metres with a calibration, else pixels).

Any zone may have a ``direction`` (image dx, dy): the allowed direction of travel. A vehicle
moving inside it against that direction (more than 120 degrees off) for ``wrong_way_after_s``
raises a "wrong way" event. With a calibration, both the motion and the direction are
compared on the ground plane, where perspective does not bend angles.

"Stopped" is below 5 km/h with a calibration; without one, below half the box's height per
second (a car's box is about 1.5 m tall, so roughly 2.7 km/h). Each event is raised at most
once per track and kind.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from smartpole.models.calibration import (
    GroundCalibration,
    image_velocity,
    point_line_distance_px,
)
from smartpole.models.errors import AnalyticsConfigError
from smartpole.models.tracker import Track
from smartpole.models.zone_shapes import Point, Zone, ZoneKind, point_in_polygon, polygon_area

__all__ = [
    "Dwell",
    "EventKind",
    "Point",
    "QueueState",
    "Zone",
    "ZoneEvent",
    "ZoneKind",
    "ZoneMonitor",
    "point_in_polygon",
    "polygon_area",
]
EventKind = Literal["stopped_vehicle", "wrong_way", "pedestrian_on_carriageway"]

VEHICLE_CLASSES = frozenset({"car", "truck", "bus", "motorcycle"})
PEDESTRIAN_CLASSES = frozenset({"person"})
#: Uncalibrated "stopped": slower than this many box heights per second.
STOPPED_HEIGHTS_PER_S = 0.5
#: A track's velocity (a least-squares fit over its last second) is refreshed at this
#: period, not every frame: events and queues need no finer timing, and the fit costs tens
#: of microseconds per track.
MOTION_REFRESH_S = 0.2
#: Wrong way: the motion is more than 120 degrees off the allowed direction.
WRONG_WAY_COSINE = -0.5


@dataclass(frozen=True)
class ZoneEvent:
    """A traffic event; ``t_s`` is when its condition was met (stream clock)."""

    kind: EventKind
    zone: str
    track_id: int
    class_name: str
    t_s: float
    duration_s: float

    def to_dict(self) -> dict[str, object]:
        return {
            "type": self.kind,
            "zone": self.zone,
            "track_id": self.track_id,
            "class": self.class_name,
            "t_s": self.t_s,
            "duration_s": self.duration_s,
        }


@dataclass(frozen=True)
class Dwell:
    """How long one track stayed in one zone (closed when it left or the track ended)."""

    zone: str
    track_id: int
    class_name: str
    entered_s: float
    left_s: float

    @property
    def dwell_s(self) -> float:
        return self.left_s - self.entered_s


@dataclass(frozen=True)
class QueueState:
    """Stopped vehicles in a queue zone and the distance from the stop line to the last.

    ``tail`` is the image bottom-centre of that last vehicle (None for an empty queue): where
    an approaching vehicle meets the queue, the position a roadside event reports.
    """

    zone: str
    vehicles: int
    length: float
    unit: Literal["m", "px"]
    tail: Point | None = None


@dataclass
class _Presence:
    entered_s: float
    last_s: float
    still_since: float | None = None
    wrong_since: float | None = None


@dataclass
class _ZoneStats:
    occupied: bool = False
    occupied_s: float = 0.0
    observed_s: float = 0.0
    inside: dict[int, _Presence] = field(default_factory=dict)


class ZoneMonitor:
    """Follows confirmed tracks through zones; see the module docstring for what it gives.

    Per tracker step call ``update(tracks, t_s)`` (returns new events), then read
    ``occupied()`` and ``queues()`` for the summary; call ``finish(tracks)`` with the
    tracker's ended tracks, and ``take_dwells()`` to collect closed dwell records.
    """

    def __init__(
        self,
        zones: Sequence[Zone],
        *,
        calibration: GroundCalibration | None = None,
        stopped_after_s: float = 30.0,
        pedestrian_after_s: float = 1.0,
        wrong_way_after_s: float = 1.0,
        stop_speed_kmh: float = 5.0,
        vehicle_classes: Iterable[str] = VEHICLE_CLASSES,
        pedestrian_classes: Iterable[str] = PEDESTRIAN_CLASSES,
    ) -> None:
        names = [z.name for z in zones]
        if len(set(names)) != len(names):
            raise AnalyticsConfigError(f"zone names must be unique, got {names}")
        self.zones = list(zones)
        self.calibration = calibration
        self.stopped_after_s = stopped_after_s
        self.pedestrian_after_s = pedestrian_after_s
        self.wrong_way_after_s = wrong_way_after_s
        self.stop_speed_kmh = stop_speed_kmh
        self.vehicle_classes = frozenset(vehicle_classes)
        self.pedestrian_classes = frozenset(pedestrian_classes)
        self._stats = {z.name: _ZoneStats() for z in self.zones}
        self._fired: set[tuple[int, EventKind]] = set()
        self._dwells: list[Dwell] = []
        self._queues: dict[str, QueueState] = {}
        self._last_t: float | None = None
        self._velocities: dict[int, tuple[float, Point | None]] = {}  # id: (when, velocity)

    def update(self, tracks: Sequence[Track], t_s: float) -> list[ZoneEvent]:
        """Place the tracks in the zones at stream time ``t_s``; return the new events."""
        if self._last_t is not None and t_s > self._last_t:
            dt = t_s - self._last_t
            for stats in self._stats.values():
                stats.observed_s += dt
                stats.occupied_s += dt if stats.occupied else 0.0
        self._last_t = t_s if self._last_t is None else max(self._last_t, t_s)
        events: list[ZoneEvent] = []

        def motion(track: Track) -> Point | None:
            cached = self._velocities.get(track.id)
            if cached is None or not 0 <= t_s - cached[0] < MOTION_REFRESH_S:
                cached = (t_s, self._motion(track))
                self._velocities[track.id] = cached
            return cached[1]

        for zone in self.zones:
            stats = self._stats[zone.name]
            present = {t.id for t in tracks if t.points and zone.contains(*t.bottom_centre)}
            for track_id in [i for i in stats.inside if i not in present]:
                self._close(zone, stats, track_id, [t for t in tracks if t.id == track_id])
            for track in tracks:
                if track.id in present:
                    presence = stats.inside.setdefault(track.id, _Presence(t_s, t_s))
                    presence.last_s = t_s
                    events.extend(self._check(zone, track, presence, motion, t_s))
            stats.occupied = bool(present)
            if zone.kind == "queue":
                self._queues[zone.name] = self._queue(zone, tracks, present, motion)
        return events

    def finish(self, tracks: Iterable[Track]) -> None:
        """Close the dwell of tracks that ended (at their last sighting)."""
        for track in tracks:
            for zone in self.zones:
                stats = self._stats[zone.name]
                if track.id in stats.inside:
                    self._close(zone, stats, track.id, [track])
            self._fired = {key for key in self._fired if key[0] != track.id}
            self._velocities.pop(track.id, None)

    def occupied(self) -> dict[str, bool]:
        """Whether each zone holds at least one tracked object at the latest update."""
        return {name: stats.occupied for name, stats in self._stats.items()}

    def occupancy(self) -> dict[str, float]:
        """Fraction of the observed stream time each zone was occupied, since the start."""
        return {
            name: (s.occupied_s / s.observed_s if s.observed_s > 0 else 0.0)
            for name, s in self._stats.items()
        }

    def queues(self) -> dict[str, QueueState]:
        """The queue in each ``queue`` zone at the latest update."""
        return dict(self._queues)

    def holding(self, kind: EventKind, zone: str, track_id: int) -> bool:
        """Whether the condition of a ``kind`` event still holds for a track in ``zone`` at
        the latest update (see ``holding_since``)."""
        return self.holding_since(kind, zone, track_id) is not None

    def holding_since(self, kind: EventKind, zone: str, track_id: int) -> float | None:
        """Since when the condition of a ``kind`` event has held for a track in ``zone`` at
        the latest update, or None: inside the zone and, for a stopped vehicle, stopped; for
        a wrong-way driver, going against the zone's direction. Events are raised once per
        track and kind; this is how their end (and a second start) is seen."""
        if zone not in self._stats:
            raise ValueError(f"no zone named {zone!r}")
        presence = self._stats[zone].inside.get(track_id)
        if presence is None:
            return None
        if kind == "stopped_vehicle":
            return presence.still_since
        if kind == "wrong_way":
            return presence.wrong_since
        return presence.entered_s

    def event_after_s(self, kind: EventKind) -> float:
        """How long a condition must hold before its event is raised."""
        if kind == "stopped_vehicle":
            return self.stopped_after_s
        if kind == "wrong_way":
            return self.wrong_way_after_s
        return self.pedestrian_after_s

    def take_dwells(self) -> list[Dwell]:
        """Dwell records closed since the last call."""
        done, self._dwells = self._dwells, []
        return done

    def _close(self, zone: Zone, stats: _ZoneStats, track_id: int, found: list[Track]) -> None:
        presence = stats.inside.pop(track_id)
        class_name = found[0].class_name if found else ""
        self._dwells.append(
            Dwell(zone.name, track_id, class_name, presence.entered_s, presence.last_s)
        )

    def _stopped_limit(self, track: Track) -> float:
        """The speed under which a track counts as stopped, in the units of ``_motion``."""
        if self.calibration is not None:
            return self.stop_speed_kmh / 3.6
        return STOPPED_HEIGHTS_PER_S * max(1.0, track.box[3] - track.box[1])

    def _motion(self, track: Track) -> Point | None:
        """The track's velocity: ground m/s with a calibration, else image px/s."""
        if self.calibration is not None:
            return self.calibration.ground_velocity(track)
        return image_velocity(track)

    def _is_stopped(self, track: Track, velocity: Point | None) -> bool:
        return velocity is not None and math.hypot(*velocity) < self._stopped_limit(track)

    def _fire(
        self, kind: EventKind, zone: Zone, track: Track, t_s: float, since: float
    ) -> list[ZoneEvent]:
        if (track.id, kind) in self._fired:
            return []
        self._fired.add((track.id, kind))
        return [ZoneEvent(kind, zone.name, track.id, track.class_name, t_s, t_s - since)]

    def _check(
        self,
        zone: Zone,
        track: Track,
        presence: _Presence,
        motion: Callable[[Track], Point | None],
        t_s: float,
    ) -> list[ZoneEvent]:
        events: list[ZoneEvent] = []
        is_vehicle = track.class_name in self.vehicle_classes
        needs_motion = is_vehicle and (zone.kind == "no_stopping" or zone.direction is not None)
        velocity = motion(track) if needs_motion else None
        on_road = zone.kind == "carriageway" and track.class_name in self.pedestrian_classes
        if on_road and t_s - presence.entered_s > self.pedestrian_after_s:
            kind: EventKind = "pedestrian_on_carriageway"
            events += self._fire(kind, zone, track, t_s, presence.entered_s)
        if zone.kind == "no_stopping" and is_vehicle:
            if self._is_stopped(track, velocity):
                if presence.still_since is None:
                    presence.still_since = t_s
                if t_s - presence.still_since > self.stopped_after_s:
                    events += self._fire("stopped_vehicle", zone, track, t_s, presence.still_since)
            elif velocity is not None:
                presence.still_since = None
        if zone.direction is not None and is_vehicle:
            if self._against(zone, track, velocity):
                if presence.wrong_since is None:
                    presence.wrong_since = t_s
                if t_s - presence.wrong_since >= self.wrong_way_after_s:
                    events += self._fire("wrong_way", zone, track, t_s, presence.wrong_since)
            else:
                presence.wrong_since = None
        return events

    def _against(self, zone: Zone, track: Track, velocity: Point | None) -> bool:
        """Moving (not stopped) more than 120 degrees off the zone's allowed direction."""
        if velocity is None or zone.direction is None or self._is_stopped(track, velocity):
            return False
        direction: Point | None = zone.direction
        if self.calibration is not None:
            x, y = track.bottom_centre
            norm = math.hypot(*zone.direction)
            step = (zone.direction[0] / norm * 10.0, zone.direction[1] / norm * 10.0)
            here = self.calibration.ground_point(x, y)
            there = self.calibration.ground_point(x + step[0], y + step[1])
            direction = None
            if here is not None and there is not None:
                direction = (there[0] - here[0], there[1] - here[1])
        if direction is None:
            return False
        speed, length = math.hypot(*velocity), math.hypot(*direction)
        if speed == 0 or length == 0:
            return False
        cosine = (velocity[0] * direction[0] + velocity[1] * direction[1]) / (speed * length)
        return cosine < WRONG_WAY_COSINE

    def _queue(
        self,
        zone: Zone,
        tracks: Sequence[Track],
        present: set[int],
        motion: Callable[[Track], Point | None],
    ) -> QueueState:
        assert zone.stop_line is not None  # checked by Zone
        p1, p2 = zone.stop_line
        distances: list[float] = []
        tails: list[Point] = []
        for track in tracks:
            if track.id not in present or track.class_name not in self.vehicle_classes:
                continue
            if not self._is_stopped(track, motion(track)):
                continue
            point = track.bottom_centre
            if self.calibration is not None:
                metres = self.calibration.distance_to_line_m(point, p1, p2)
                if metres is not None:
                    distances.append(metres)
                    tails.append(point)
            else:
                distances.append(point_line_distance_px(point, p1, p2))
                tails.append(point)
        unit: Literal["m", "px"] = "m" if self.calibration is not None else "px"
        if not distances:
            return QueueState(zone.name, 0, 0.0, unit)
        last = max(range(len(distances)), key=distances.__getitem__)
        return QueueState(zone.name, len(distances), distances[last], unit, tails[last])
