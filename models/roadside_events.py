"""Traffic events as the roadside unit must hear them: started, repeated, and cancelled.

The zone monitor raises a stopped vehicle, a wrong-way driver or a pedestrian on the
carriageway once, when its condition is first met; a vehicle approaching the pole needs
more than that. It must learn that the hazard is still there if it tunes in late, and that
it is gone when it is gone, or it brakes for a car that left a minute ago. So every event
here has a lifecycle:

* ``active`` when it starts, and again every ``resend_s`` while it lasts (with the current
  position: a wrong-way driver moves);
* ``cancelled`` exactly once when it ends: the track's condition has not held for
  ``release_s`` (the vehicle moves again, the pedestrian left the road), the track ended,
  or the camera stops (``close``).

``release_s`` keeps a pedestrian whose feet flicker across the kerb for a frame from
cancelling and restarting. A track that ends is cancelled at once; there is nothing left to
wait for. The monitor raises each kind once per track (its summaries count road users, not
episodes); here a condition that comes back on the same track and zone after its event was
cancelled (a wrong-way driver who paused, then went on) starts a new event once it has
held as long as the monitor's threshold again, so a hazard is never left unannounced.

A queue is an event of its zone: active when the zone holds at least ``queue_vehicles``
stopped vehicles, cancelled when it has held fewer than ``queue_vehicles -
queue_hysteresis`` (at least one) for ``release_s``, so a queue of five that counts four
for a moment does not flap. Its position is its tail (the stopped vehicle farthest from the
stop line, where an approaching vehicle meets it), ``queue_length_m`` the distance from
the stop line to there.

Positions are the ground point under the track's bottom-centre in the calibration's
frame, which is metres east/north of the pole when the camera is geo-calibrated. Without a
calibration (or for a point at or above the horizon) ``east_m``/``north_m`` are NaN: the
lifecycle still runs, so counts and logs work, but such an event must not go on the wire
(``located`` says whether it may); the worker sends RSI only with a geo-calibration.

``event_id`` is the same for an event's ``active`` and ``cancelled`` messages, and never
shared by two events alive at once. Ids go round ``id_space`` (256: the standard's RTE id
is 0..255), skipping those in use, so an id comes back as late as possible after its event
ended and a subscriber does not mistake a new event for an old one.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

from smartpole.models.calibration import GroundCalibration
from smartpole.models.errors import AnalyticsConfigError
from smartpole.models.roadside import RoadsideEvent, RoadsideEventKind
from smartpole.models.tracker import Track
from smartpole.models.zones import EventKind, QueueState, ZoneEvent, ZoneMonitor

#: The key of an event alive: its kind, its zone and its track (None for a queue).
_Key = tuple[RoadsideEventKind, str, int | None]
#: The monitor's kind of each event about one track (a queue is about its zone).
_TRACK_KINDS: dict[RoadsideEventKind, EventKind] = {
    "stopped_vehicle": "stopped_vehicle",
    "wrong_way": "wrong_way",
    "pedestrian_on_carriageway": "pedestrian_on_carriageway",
}
#: Slack on ``resend_s``: 25 steps of 0.04 s add up to a hair under 1.0.
_EPSILON_S = 1e-6


def located(event: RoadsideEvent) -> bool:
    """Whether an event has a position on the ground (else it must not be sent)."""
    return math.isfinite(event.east_m) and math.isfinite(event.north_m)


@dataclass
class _Alive:
    """One active event: the message to repeat, when it was last sent, when it last held."""

    event: RoadsideEvent
    sent_t_s: float
    held_t_s: float


@dataclass
class RoadsideEventCounts:
    """What the events did since the start, for the worker's health line."""

    started: int = 0
    cancelled: int = 0
    resent: int = 0
    #: Events not started because every id in ``id_space`` was in use.
    no_id: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)


class RoadsideEvents:
    """Turns a ``ZoneMonitor``'s events and state into ``RoadsideEvent`` messages.

    After ``monitor.update(tracks, t_s)``: call ``update(events, tracks, t_s)`` with the
    same tracks and every zone event the monitor raised since the previous call (it may run
    at the message rate, slower than the monitor); then ``finish(ended)`` with the tracks the
    tracker ended meanwhile; ``close(t_s)`` when the stream stops. Each returns the messages
    to send now, in order.
    """

    def __init__(
        self,
        monitor: ZoneMonitor,
        calibration: GroundCalibration | None,
        *,
        queue_vehicles: int = 5,
        queue_hysteresis: int = 1,
        resend_s: float = 1.0,
        release_s: float = 1.0,
        id_space: int = 256,
    ) -> None:
        if queue_vehicles < 1:
            raise AnalyticsConfigError(f"queue_vehicles must be at least 1, got {queue_vehicles}")
        if queue_hysteresis < 0:
            raise AnalyticsConfigError(
                f"queue_hysteresis must not be negative, got {queue_hysteresis}"
            )
        if not (math.isfinite(resend_s) and resend_s > 0):
            raise AnalyticsConfigError(f"resend_s must be a positive number, got {resend_s}")
        if not (math.isfinite(release_s) and release_s >= 0):
            raise AnalyticsConfigError(f"release_s must be zero or more, got {release_s}")
        if id_space < 1:
            raise AnalyticsConfigError(f"id_space must be at least 1, got {id_space}")
        self.monitor = monitor
        self.calibration = calibration
        self.queue_vehicles = queue_vehicles
        #: A queue is over when it holds fewer vehicles than this (for ``release_s``).
        self.queue_clear_below = max(1, queue_vehicles - queue_hysteresis)
        self.resend_s = resend_s
        self.release_s = release_s
        self.id_space = id_space
        self.counts = RoadsideEventCounts()
        self._alive: dict[_Key, _Alive] = {}
        #: Per-track events cancelled while their track lives on: watched for a new start.
        self._rearmed: set[_Key] = set()
        self._next_id = 0
        self._last_t: float | None = None

    def active(self) -> list[RoadsideEvent]:
        """The events alive now, as last sent."""
        return [alive.event for alive in self._alive.values()]

    def update(
        self, events: Sequence[ZoneEvent], tracks: Sequence[Track], t_s: float
    ) -> list[RoadsideEvent]:
        """Start, repeat and cancel events at stream time ``t_s``; the messages to send."""
        self._last_t = t_s
        by_id = {track.id: track for track in tracks}
        out: list[RoadsideEvent] = []
        fresh: set[_Key] = set()
        for zone_event in events:
            key: _Key = (zone_event.kind, zone_event.zone, zone_event.track_id)
            if key in self._alive:
                continue
            self._rearmed.discard(key)
            track = by_id.get(zone_event.track_id)
            east, north = self._track_position(track)
            started = self._start(key, zone_event.zone, zone_event.t_s, t_s, east, north)
            if started is not None:
                out.append(started)
                fresh.add(key)
        for key, alive in list(self._alive.items()):
            kind, zone, track_id = key
            if track_id is None:
                continue
            track = by_id.get(track_id)
            if track is None:
                out.append(self._cancel(key, t_s))
                continue
            if self.monitor.holding(_TRACK_KINDS[kind], zone, track_id):
                alive.held_t_s = t_s
                east, north = self._track_position(track)
                alive.event = replace(alive.event, east_m=east, north_m=north)
            elif t_s - alive.held_t_s >= self.release_s:
                out.append(self._cancel(key, t_s))
                self._rearmed.add(key)
        out += self._restart(by_id, t_s, fresh)
        for queue in self.monitor.queues().values():
            out += self._queue(queue, t_s, fresh)
        out += self._resend(t_s, fresh)
        return out

    def finish(self, ended: Iterable[Track]) -> list[RoadsideEvent]:
        """Cancel the events of tracks that ended (at the latest update's time)."""
        ids = {track.id for track in ended}
        t_s = self._last_t if self._last_t is not None else 0.0
        return [self._cancel(key, t_s) for key in list(self._alive) if key[2] in ids]

    def close(self, t_s: float) -> list[RoadsideEvent]:
        """Cancel every event alive: the stream stopped, nothing is known to hold any more."""
        self._last_t = t_s
        self._rearmed.clear()
        return [self._cancel(key, t_s) for key in list(self._alive)]

    def _start(
        self,
        key: _Key,
        zone: str,
        started_t_s: float,
        t_s: float,
        east: float,
        north: float,
        queue_vehicles: int | None = None,
        queue_length_m: float | None = None,
    ) -> RoadsideEvent | None:
        event_id = self._take_id()
        if event_id is None:
            self.counts.no_id += 1
            return None
        event = RoadsideEvent(
            kind=key[0],
            state="active",
            event_id=event_id,
            zone=zone,
            t_s=t_s,
            started_t_s=started_t_s,
            east_m=east,
            north_m=north,
            track_id=key[2],
            queue_vehicles=queue_vehicles,
            queue_length_m=queue_length_m,
        )
        self._alive[key] = _Alive(event, sent_t_s=t_s, held_t_s=t_s)
        self.counts.started += 1
        self.counts.by_kind[key[0]] = self.counts.by_kind.get(key[0], 0) + 1
        return event

    def _restart(
        self, by_id: dict[int, Track], t_s: float, fresh: set[_Key]
    ) -> list[RoadsideEvent]:
        """New events for cancelled conditions that came back and held long enough."""
        out: list[RoadsideEvent] = []
        for key in sorted(self._rearmed, key=str):
            kind, zone, track_id = key
            track = by_id.get(track_id) if track_id is not None else None
            if track is None:  # gone without a finish(): nothing more to watch
                self._rearmed.discard(key)
                continue
            monitor_kind = _TRACK_KINDS[kind]
            since = self.monitor.holding_since(monitor_kind, zone, track.id)
            if since is None or t_s - since <= self.monitor.event_after_s(monitor_kind):
                continue
            east, north = self._track_position(track)
            started = self._start(key, zone, t_s, t_s, east, north)
            if started is not None:
                self._rearmed.discard(key)
                fresh.add(key)
                out.append(started)
        return out

    def _cancel(self, key: _Key, t_s: float) -> RoadsideEvent:
        alive = self._alive.pop(key)
        self.counts.cancelled += 1
        return replace(alive.event, state="cancelled", t_s=t_s)

    def _resend(self, t_s: float, fresh: set[_Key]) -> list[RoadsideEvent]:
        out: list[RoadsideEvent] = []
        for key, alive in self._alive.items():
            if key in fresh or t_s - alive.sent_t_s < self.resend_s - _EPSILON_S:
                continue
            alive.sent_t_s = t_s
            alive.event = replace(alive.event, t_s=t_s)
            self.counts.resent += 1
            out.append(alive.event)
        return out

    def _queue(self, queue: QueueState, t_s: float, fresh: set[_Key]) -> list[RoadsideEvent]:
        key: _Key = ("queue", queue.zone, None)
        alive = self._alive.get(key)
        east, north = self._image_position(queue.tail)
        length = queue.length if queue.unit == "m" else None
        if alive is None:
            if queue.vehicles < self.queue_vehicles:
                return []
            started = self._start(key, queue.zone, t_s, t_s, east, north, queue.vehicles, length)
            if started is None:
                return []
            fresh.add(key)
            return [started]
        if queue.vehicles >= self.queue_clear_below:
            alive.held_t_s = t_s
        elif t_s - alive.held_t_s >= self.release_s:
            return [self._cancel(key, t_s)]
        if queue.vehicles > 0:  # an emptying queue keeps its last tail and length
            alive.event = replace(
                alive.event,
                east_m=east,
                north_m=north,
                queue_vehicles=queue.vehicles,
                queue_length_m=length,
            )
        return []

    def _take_id(self) -> int | None:
        """The next id round ``id_space`` that no event alive holds, or None if all do."""
        in_use = {alive.event.event_id for alive in self._alive.values()}
        for step in range(self.id_space):
            candidate = (self._next_id + step) % self.id_space
            if candidate not in in_use:
                self._next_id = (candidate + 1) % self.id_space
                return candidate
        return None

    def _track_position(self, track: Track | None) -> tuple[float, float]:
        if track is None or not track.points:
            return (math.nan, math.nan)
        return self._image_position(track.bottom_centre)

    def _image_position(self, point: tuple[float, float] | None) -> tuple[float, float]:
        """East/north metres of an image point; NaN without a calibration or a point."""
        if point is None or self.calibration is None:
            return (math.nan, math.nan)
        ground = self.calibration.ground_point(*point)
        return ground if ground is not None else (math.nan, math.nan)
