"""Per-camera traffic summaries per interval, the only analytics output that leaves a worker.

Why intervals on the stream clock: a summary says what happened between two instants of
the video, so a replayed file or a worker that fell behind still files every crossing under
the interval in which it happened. Intervals are aligned (``interval_start =
floor(t / interval_s) * interval_s``), so 5-minute summaries start at :00, :05, ... of the
stream clock. Every crossing lands in exactly one interval: the one its time falls in, or,
if that one was already flushed (a crossing interpolated just before a boundary and
reported just after), the oldest one still open.

Why a fixed shape: the platform stores summaries as time series, so every summary names
every line, direction, class of the class map, zone and queue, zeros included.

Shape of ``flush()``'s dict::

    {"camera": str, "interval_start": float, "interval_s": float,
     "lines": {line: {"in": {class: n}, "out": {class: n}}},
     "speed_kmh": {line: {"mean": float | None, "p85": float | None, "n": int}},
     "zones": {zone: {"occupancy": float, "mean_dwell_s": float | None}},
     "queue": {zone: {"max_vehicles": int, "mean_vehicles": float,
                      "max_length": float, "unit": "m" | "px"}},
     "events": [event dict, ...],
     "quality": {"fps": float, "frames": int, "dropped": int,
                 "state": "ok" | "dark" | "blocked" | "shaken" | "no_frames"}}

``speed_kmh`` pools both directions of a line; ``occupancy`` is the share of sampled time
with at least one object in the zone; ``quality.state`` is the worst state reported during
the interval (``no_frames`` when no frame at all was processed).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from smartpole.models.counting import Crossing
from smartpole.models.zones import Dwell, QueueState, ZoneEvent

#: The class map of the COCO model in config order; pass the detector's ``class_names``.
DEFAULT_CLASSES = ("car", "truck", "bus", "motorcycle", "bicycle", "person")
#: Worst first: the state reported for an interval is the worst one seen in it.
QUALITY_STATES = ("no_frames", "blocked", "dark", "shaken", "ok")
#: A gap between two samples longer than this is not counted as observed time.
MAX_SAMPLE_GAP_S = 2.0


@dataclass
class _Bucket:
    start: float
    counts: dict[str, dict[str, dict[str, int]]]
    speeds: dict[str, list[float]]
    occupied_s: dict[str, float]
    dwells: dict[str, list[float]]
    queue_vehicles: dict[str, list[int]]
    queue_length: dict[str, float]
    queue_unit: dict[str, str]
    events: list[dict[str, object]] = field(default_factory=list)
    sampled_s: float = 0.0
    first_t: float | None = None
    frames_decoded: int = 0
    frames: int = 0
    dropped: int = 0
    states: set[str] = field(default_factory=set)


class SummaryAggregator:
    """Accumulates one camera's analytics and emits one summary dict per interval.

    Feed it ``add_crossing``, ``add_event``, ``add_dwell``, ``sample`` (once per processed
    frame) and ``add_quality`` (frame counters since the previous call); call
    ``flush(t_s)`` whenever ``due(t_s)`` is true (possibly several times after a gap), and
    once more at the end for the last, partial interval.
    """

    def __init__(
        self,
        camera: str,
        interval_s: float,
        lines: Sequence[str],
        zones: Sequence[str],
        *,
        classes: Sequence[str] = DEFAULT_CLASSES,
        queues: Sequence[str] = (),
    ) -> None:
        if not interval_s > 0 or not math.isfinite(interval_s):
            raise ValueError(f"interval_s must be a positive number, got {interval_s}")
        self.camera = camera
        self.interval_s = float(interval_s)
        self.lines = list(lines)
        self.zones = list(zones)
        self.queues = list(queues)
        self.classes = list(dict.fromkeys(classes))
        self._buckets: dict[float, _Bucket] = {}
        self._next_start: float | None = None  # oldest interval not flushed yet
        self._last_sample: tuple[float, dict[str, bool]] | None = None
        self._latest_start: float | None = None  # newest interval anything was filed under
        self._pending: _Bucket | None = None  # quality counters reported before any time

    def _start_of(self, t_s: float) -> float:
        return math.floor(t_s / self.interval_s) * self.interval_s

    def _bucket(self, t_s: float) -> _Bucket:
        start = self._start_of(t_s)
        if self._next_start is None:
            self._next_start = start
        start = max(start, self._next_start)
        self._latest_start = start if self._latest_start is None else max(self._latest_start, start)
        bucket = self._buckets.get(start)
        if bucket is None:
            bucket = self._buckets[start] = self._empty(start)
        if self._pending is not None:
            self._merge(bucket, self._pending)
            self._pending = None
        return bucket

    def _empty(self, start: float) -> _Bucket:
        return _Bucket(
            start=start,
            counts={
                line: {d: dict.fromkeys(self.classes, 0) for d in ("in", "out")}
                for line in self.lines
            },
            speeds={line: [] for line in self.lines},
            occupied_s=dict.fromkeys(self.zones, 0.0),
            dwells={zone: [] for zone in self.zones},
            queue_vehicles={q: [] for q in self.queues},
            queue_length=dict.fromkeys(self.queues, 0.0),
            queue_unit=dict.fromkeys(self.queues, "px"),
        )

    def add_crossing(self, crossing: Crossing) -> None:
        bucket = self._bucket(crossing.t_s)
        per_line = bucket.counts.get(crossing.line)
        if per_line is None:
            return  # a line the summary was not told about: not part of the fixed shape
        per_class = per_line[crossing.direction]
        if crossing.class_name in per_class:
            per_class[crossing.class_name] += 1
        if crossing.speed_kmh is not None and math.isfinite(crossing.speed_kmh):
            bucket.speeds[crossing.line].append(crossing.speed_kmh)

    def add_event(self, event: ZoneEvent) -> None:
        self._bucket(event.t_s).events.append(event.to_dict())

    def add_dwell(self, dwell: Dwell) -> None:
        """A closed dwell record: filed under the interval in which the track left."""
        bucket = self._bucket(dwell.left_s)
        if dwell.zone in bucket.dwells:
            bucket.dwells[dwell.zone].append(dwell.dwell_s)

    def sample(
        self,
        t_s: float,
        zone_occupied: Mapping[str, bool],
        queue: Mapping[str, QueueState] | None = None,
    ) -> None:
        """The zones' state at a processed frame; time between samples is weighted by it.

        The span from the previous sample to this one counts as occupied for a zone if the
        previous sample said so. Gaps over ``MAX_SAMPLE_GAP_S`` (a stalled stream) count
        as unobserved rather than as the last state held for minutes.
        """
        bucket = self._bucket(t_s)
        if bucket.first_t is None or t_s < bucket.first_t:
            bucket.first_t = t_s
        if self._last_sample is not None:
            last_t, last_state = self._last_sample
            dt = t_s - last_t
            if 0 < dt <= MAX_SAMPLE_GAP_S:
                bucket.sampled_s += dt
                for zone, occupied in last_state.items():
                    if occupied and zone in bucket.occupied_s:
                        bucket.occupied_s[zone] += dt
        self._last_sample = (t_s, dict(zone_occupied))
        for name, state in (queue or {}).items():
            if name in bucket.queue_vehicles:
                bucket.queue_vehicles[name].append(state.vehicles)
                bucket.queue_length[name] = max(bucket.queue_length[name], state.length)
                bucket.queue_unit[name] = state.unit

    def add_quality(
        self, frames_decoded: int, frames_processed: int, frames_dropped: int, state: str
    ) -> None:
        """Frame counters since the previous call and the camera's current quality state.

        Filed under the newest open interval (the counters carry no time of their own);
        before anything opened one, kept for the first.
        """
        if state not in QUALITY_STATES:
            raise ValueError(f"unknown quality state {state!r}; expected one of {QUALITY_STATES}")
        if self._next_start is None or self._latest_start is None:
            if self._pending is None:
                self._pending = self._empty(0.0)
            bucket = self._pending
        else:
            start = max(self._latest_start, self._next_start)
            bucket = self._buckets.get(start) or self._buckets.setdefault(start, self._empty(start))
        bucket.frames_decoded += frames_decoded
        bucket.frames += frames_processed
        bucket.dropped += frames_dropped
        bucket.states.add(state)

    def due(self, t_s: float) -> bool:
        """True when the oldest open interval ended at or before ``t_s``."""
        return self._next_start is not None and self._next_start + self.interval_s <= t_s

    def flush(self, t_s: float) -> dict[str, Any]:
        """Close the oldest open interval and return its summary (see the module doc).

        Called before anything opened an interval, it summarises the interval holding
        ``t_s`` (empty, ``no_frames``).
        """
        if self._next_start is None:
            self._next_start = self._start_of(t_s)
        start = self._next_start
        bucket = self._buckets.pop(start, None) or self._empty(start)
        self._next_start = start + self.interval_s
        # Anything filed under an older key (never the case unless time went backwards)
        # would be lost; fold it in instead.
        for key in [k for k in self._buckets if k < self._next_start]:
            self._merge(bucket, self._buckets.pop(key))
        # fps over the part of the interval the stream covered: the first interval of a
        # stream starts when its first frame came, not at the aligned boundary.
        began = start if bucket.first_t is None else max(start, min(bucket.first_t, t_s))
        elapsed = max(0.0, min(start + self.interval_s, t_s) - began)
        return self._render(bucket, elapsed)

    @staticmethod
    def _merge(into: _Bucket, other: _Bucket) -> None:
        for line, dirs in other.counts.items():
            for direction, per_class in dirs.items():
                for name, n in per_class.items():
                    into.counts[line][direction][name] += n
            into.speeds[line].extend(other.speeds[line])
        for zone, seconds in other.occupied_s.items():
            into.occupied_s[zone] += seconds
            into.dwells[zone].extend(other.dwells[zone])
        for name, values in other.queue_vehicles.items():
            into.queue_vehicles[name].extend(values)
            into.queue_length[name] = max(into.queue_length[name], other.queue_length[name])
        into.events.extend(other.events)
        into.sampled_s += other.sampled_s
        if other.first_t is not None:
            into.first_t = min(into.first_t or other.first_t, other.first_t)
        into.frames += other.frames
        into.frames_decoded += other.frames_decoded
        into.dropped += other.dropped
        into.states |= other.states

    def _render(self, bucket: _Bucket, elapsed: float) -> dict[str, Any]:
        speeds: dict[str, dict[str, Any]] = {}
        for line, values in bucket.speeds.items():
            if values:
                array = np.asarray(values, dtype=np.float64)
                speeds[line] = {
                    "mean": round(float(array.mean()), 2),
                    "p85": round(float(np.percentile(array, 85)), 2),
                    "n": len(values),
                }
            else:
                speeds[line] = {"mean": None, "p85": None, "n": 0}
        zones = {
            zone: {
                "occupancy": round(bucket.occupied_s[zone] / bucket.sampled_s, 4)
                if bucket.sampled_s > 0
                else 0.0,
                "mean_dwell_s": round(sum(d) / len(d), 2) if (d := bucket.dwells[zone]) else None,
            }
            for zone in self.zones
        }
        queue = {
            name: {
                "max_vehicles": max(values, default=0),
                "mean_vehicles": round(sum(values) / len(values), 2) if values else 0.0,
                "max_length": round(bucket.queue_length[name], 2),
                "unit": bucket.queue_unit[name],
            }
            for name, values in bucket.queue_vehicles.items()
        }
        if bucket.frames == 0:
            state = "no_frames"
        else:
            state = next((s for s in QUALITY_STATES if s in bucket.states), "ok")
        return {
            "camera": self.camera,
            "interval_start": bucket.start,
            "interval_s": self.interval_s,
            "lines": bucket.counts,
            "speed_kmh": speeds,
            "zones": zones,
            "queue": queue,
            "events": sorted(bucket.events, key=lambda e: (float(str(e["t_s"])), str(e["type"]))),
            "quality": {
                "fps": round(bucket.frames / elapsed, 2) if elapsed > 0 else 0.0,
                "frames": bucket.frames,
                "dropped": bucket.dropped,
                "state": state,
            },
        }
