"""The pipeline's last stage for a geo-calibrated camera: road users and events for the RSU.

Why a stage of its own: the RSU wants a snapshot of every road user at a steady rate (10 Hz
by default), not one per frame, and wants events with a lifecycle (start, cancellation),
not the zone monitor's one-shot alarms. This keeps both clocks on the stream's time, so a
recording analysed offline (``smartpole analyze --rsm``) produces the messages the live
camera would have sent.

Why a snapshot is taken as a frame is captured, not after its analytics: the latency
budget (capture to wire, p99 <= 100 ms) cannot afford the detector's tens of milliseconds,
nor the wait behind the analytics of earlier frames. The filters, fed by the frames
analysed so far, predict every road user to the new frame's time (never more than one
period past its last measurement; a road user not measured for ``max_age_s`` is dropped),
the message goes out, and the frame is analysed later to feed the next snapshots. In the
camera worker the snapshot runs on the decoding thread, hence the lock; events come out
after a frame's analytics, as they are found.

The tick: a snapshot is due on the first frame at or after each multiple of the period
from the first frame; a frame late by more than a period re-anchors the schedule instead
of bursting the missed ticks out (a stale snapshot is worth nothing to a vehicle). At 25
fps and 10 Hz the snapshots are 0.08 and 0.12 s apart in turn, 10 a second on average.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from smartpole.agent.config.v2x import V2xConfig
from smartpole.models.calibration import GroundCalibration
from smartpole.models.participants import ParticipantEstimator
from smartpole.models.roadside import Participant, RoadsideEvent
from smartpole.models.roadside_events import RoadsideEvents
from smartpole.models.tracker import Track
from smartpole.models.zones import ZoneEvent, ZoneMonitor

#: Why a camera cannot report to the RSU (``diag cameras``, ``analyze --rsm``).
NO_GEO: Final = "no geo-calibration: calibration needs origin and ground_en_m or ground_latlon"
#: A frame this close before a tick counts as on it (float noise in stream times).
_TICK_SLACK_S = 1e-6
#: A road user whose position is less certain than this (one sigma) is not reported: near
#: the horizon one pixel is tens of metres of road, and a vehicle told of a car "somewhere
#: within 100 m" learns nothing but a false alarm. Counted in ``RoadsideStage.vague``.
MAX_POS_SIGMA_M = 5.0
#: Nor is one farther from the pole than this many times the farthest calibration mark:
#: beyond the marks the road is extrapolated as a plane it may not be, and there the
#: detector finds small distant cars only now and then, so they would flicker in and out
#: of the RSM (on the street clip every road user missing for more than 3 messages in a
#: row was 56-110 m out, with marks up to 40 m).
RANGE_PER_REACH = 2.0


def reportable(
    participants: list[Participant], *, max_sigma_m: float, max_range_m: float
) -> list[Participant]:
    """The participants precise and near enough to report (see the constants above)."""
    return [
        p
        for p in participants
        if p.pos_sigma_m <= max_sigma_m and math.hypot(p.east_m, p.north_m) <= max_range_m
    ]


@dataclass(frozen=True)
class RoadsideSettings:
    """How often road users are reported, how old a measurement may be, and when a queue
    is an event (``agent/config/v2x.py`` documents the same keys)."""

    rate_hz: float = 10.0
    max_age_s: float = 0.2
    queue_vehicles: int = 5

    @property
    def period_s(self) -> float:
        return 1.0 / self.rate_hz

    @classmethod
    def of(cls, v2x: V2xConfig | None) -> RoadsideSettings:
        """The pole's ``v2x:`` settings, or the defaults without one (``analyze --rsm``)."""
        if v2x is None:
            return cls()
        return cls(rate_hz=v2x.rate_hz, max_age_s=v2x.max_age_s, queue_vehicles=v2x.queue_vehicles)


class SnapshotClock:
    """When a snapshot is due, on the stream clock (see the module docstring)."""

    def __init__(self, period_s: float) -> None:
        self.period_s = period_s
        self._next: float | None = None

    def due(self, t_s: float) -> bool:
        if self._next is not None and t_s < self._next - _TICK_SLACK_S:
            return False
        if self._next is None or t_s - self._next >= self.period_s:
            self._next = t_s + self.period_s
        else:
            self._next += self.period_s
        return True


class RoadsideStage:
    """Participants at the snapshot rate and roadside events, from the tracker and zones.

    ``stale`` counts road users left out of a snapshot because their last measurement was
    older than ``max_age_s``; ``vague`` those left out for ``MAX_POS_SIGMA_M`` or
    ``RANGE_PER_REACH``.
    """

    def __init__(
        self,
        calibration: GroundCalibration,
        zones: ZoneMonitor,
        settings: RoadsideSettings,
    ) -> None:
        self.settings = settings
        self._clock = SnapshotClock(settings.period_s)
        self._estimator = ParticipantEstimator(
            calibration, max_age_s=settings.max_age_s, period_s=settings.period_s
        )
        self._events = RoadsideEvents(zones, calibration, queue_vehicles=settings.queue_vehicles)
        self.stale = 0
        self.vague = 0
        # snapshot() runs on the worker's decoding thread, the rest on its analytics thread;
        # what they share is the estimator and the clock.
        self._lock = threading.Lock()
        self.max_range_m = RANGE_PER_REACH * calibration.reach_m

    def snapshot(self, t_s: float) -> list[Participant] | None:
        """The road users at a new frame's time ``t_s`` when a snapshot is due, else None
        (call before the frame's ``step``; any thread)."""
        with self._lock:
            if not self._clock.due(t_s):
                return None
            fresh = self._estimator.participants(t_s)
            tracked = self._estimator.tracked
        self.stale += max(0, tracked - len(fresh))
        snapshot = reportable(fresh, max_sigma_m=MAX_POS_SIGMA_M, max_range_m=self.max_range_m)
        self.vague += len(fresh) - len(snapshot)
        return snapshot

    def step(
        self, tracks: Sequence[Track], zone_events: list[ZoneEvent], t_s: float
    ) -> list[RoadsideEvent]:
        """Feed the frame's tracks to the filters; return the event changes it brought."""
        with self._lock:
            self._estimator.update(tracks, t_s)
        return self._events.update(zone_events, tracks, t_s)

    def retire(self, ended: Sequence[Track]) -> list[RoadsideEvent]:
        """Tracks that ended: their filters go; returns their events' cancellations."""
        with self._lock:
            self._estimator.forget([t.id for t in ended])
        return self._events.finish(ended)

    def close(self, t_s: float) -> list[RoadsideEvent]:
        """The end of the stream: every event still active is cancelled."""
        return self._events.close(t_s)
