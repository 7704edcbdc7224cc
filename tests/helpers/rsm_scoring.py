"""Scores RSM messages against a ground-truth video: how far, how fast, how often missing.

The input is what ``smartpole analyze VIDEO --rsm OUT.jsonl`` writes, one
``{"topic": ..., "payload": <RSM or RSI>}`` per line (RSI lines are ignored here). Only
``reported_participants`` knows the payload's shape and units (lat/lon in 1e-7 degree,
speed in 0.02 m/s, heading in 0.0125 degree from north, ``secMark`` in ms of the minute,
``timeStamp`` in epoch ms): if the wire form changes, that one function changes.

The bar ("Done when" of issue #18), with its terms defined here:

* a road user is **due** at a 10 Hz message tick once it is **established**: it has been
  fully visible (whole box in the frame, not overlapped by a nearer road user, inside the
  scored zone) for the last ``ESTABLISHED_S`` (1 s) without a break. After an occlusion it
  is established again a second after it reappears: its box was cut while it was hidden,
  and any tracker's velocity needs a moment to forget that;
* at each tick, due road users and reported participants of the matching type are paired
  nearest first, within ``GATE_M`` (3 m); a due road user left without one is **missing**
  on that tick, and so is every due road user on a tick with no message at all;
* a reported position is compared with the truth at the participant's own time (its
  ``secMark``), not the message's: a state measured 80 ms ago is checked against where the
  road user was 80 ms ago;
* positions within 1.0 m at the 95th percentile, speeds within 1.0 m/s, no road user
  missing on more than 3 consecutive ticks while due.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np

from helpers.ground_truth_video import GroundTruth, TruthSample

ESTABLISHED_S: Final = 1.0
GATE_M: Final = 3.0
PERIOD_S: Final = 0.1
#: Wire units (T/CSAE 53 as OpenV2X carries them).
LATLON_UNIT: Final = 1e-7
SPEED_UNIT_MS: Final = 0.02
HEADING_UNIT_DEG: Final = 0.0125
#: ptcType of each truth class, as the ASN.1 identifiers OpenV2X's RSM carries.
PTC_TYPE: Final = {
    "car": "motor",
    "truck": "motor",
    "bus": "motor",
    "motorcycle": "motor",
    "bicycle": "non-motor",
    "person": "pedestrian",
}

_A, _E2 = 6378137.0, 6.69437999014e-3  # WGS-84


@dataclass(frozen=True)
class LocalFrame:
    """Metres east/north of an origin <-> WGS-84 lat/lon, on the tangent plane (exact to a
    millimetre within a few hundred metres). Written independently of ``models/geo.py`` so
    the scorer does not check the product with the product's own arithmetic."""

    lat0: float
    lon0: float

    @property
    def _radii(self) -> tuple[float, float]:
        s = math.sin(math.radians(self.lat0))
        w = 1.0 - _E2 * s * s
        meridian = _A * (1.0 - _E2) / w**1.5
        normal = _A / math.sqrt(w)
        return meridian, normal * math.cos(math.radians(self.lat0))

    def to_latlon(self, east_m: float, north_m: float) -> tuple[float, float]:
        meridian, parallel = self._radii
        return (
            self.lat0 + math.degrees(north_m / meridian),
            self.lon0 + math.degrees(east_m / parallel),
        )

    def to_en(self, lat: float, lon: float) -> tuple[float, float]:
        meridian, parallel = self._radii
        return (
            math.radians(lon - self.lon0) * parallel,
            math.radians(lat - self.lat0) * meridian,
        )


@dataclass(frozen=True)
class Reported:
    """One participant of one RSM, in metres and seconds of stream time."""

    ptc_id: int
    ptc_type: str
    t_s: float
    east_m: float
    north_m: float
    speed_ms: float
    heading_deg: float


def reported_participants(
    payload: Mapping[str, Any], frame: LocalFrame, epoch_ms: int
) -> tuple[float, list[Reported]]:
    """An RSM payload as (message time, its participants), in stream seconds and metres.

    ``epoch_ms`` is the wall-clock time of stream time 0: the message's ``timeStamp`` minus
    it is the stream time it was sent for. A participant's ``secMark`` (ms of the minute)
    is resolved to the minute nearest the message's time.
    """
    stamp = int(payload["timeStamp"])
    out: list[Reported] = []
    for rsm in payload["content"]["rsms"]:
        for p in rsm["participants"]:
            minute = stamp - stamp % 60000
            mark = minute + int(p["secMark"])
            mark += 60000 * round((stamp - mark) / 60000)
            east, north = frame.to_en(p["pos"]["lat"] * LATLON_UNIT, p["pos"]["lon"] * LATLON_UNIT)
            out.append(
                Reported(
                    ptc_id=int(p["ptcId"]),
                    ptc_type=str(p["ptcType"]),
                    t_s=(mark - epoch_ms) / 1000.0,
                    east_m=east,
                    north_m=north,
                    speed_ms=p["speed"] * SPEED_UNIT_MS,
                    heading_deg=p["heading"] * HEADING_UNIT_DEG,
                )
            )
    return (stamp - epoch_ms) / 1000.0, out


def first_stamp(payloads: Iterable[Mapping[str, Any]]) -> int:
    """The earliest RSM ``timeStamp``: the epoch of stream time 0 for a sender whose first
    message is on the first frame (``analyze --rsm``, the interim)."""
    return min(int(p["timeStamp"]) for p in payloads if p.get("name") == "RSM")


@dataclass
class Score:
    """Errors of every matched (due road user, participant) pair and the gaps."""

    position_m: list[float] = field(default_factory=list)
    speed_ms: list[float] = field(default_factory=list)
    heading_deg: list[float] = field(default_factory=list)
    due: int = 0
    missing: int = 0
    #: Longest run of consecutive missing ticks, per road user.
    longest_gap: dict[int, int] = field(default_factory=dict)
    #: The ptcIds each road user was reported under (more than one: its track broke).
    ids: dict[int, set[int]] = field(default_factory=dict)

    @staticmethod
    def percentile(values: Sequence[float], q: float) -> float:
        return float(np.percentile(values, q)) if values else math.inf

    def summary(self) -> str:
        p = self.percentile
        return (
            f"{len(self.position_m)} matched of {self.due} due ({self.missing} missing); "
            f"position p50 {p(self.position_m, 50):.2f} m p95 {p(self.position_m, 95):.2f} m; "
            f"speed p50 {p(self.speed_ms, 50):.2f} m/s p95 {p(self.speed_ms, 95):.2f} m/s; "
            f"heading p50 {p(self.heading_deg, 50):.1f} deg p95 {p(self.heading_deg, 95):.1f}"
            f" deg; longest gaps {self.longest_gap}; ids {self.ids}"
        )


class _Truth:
    """The per-frame truth, queried at any stream time (linear between frames)."""

    def __init__(self, truth: GroundTruth) -> None:
        self.fps = truth.fps
        self.frames = truth.frames
        self.by_id: dict[int, dict[int, TruthSample]] = {}
        #: (participant, frame) -> since when it has been fully visible without a break.
        self.visible_since: dict[tuple[int, int], float] = {}
        for index, samples in enumerate(truth.frames):
            for s in samples:
                self.by_id.setdefault(s.participant, {})[index] = s
                if s.fully_visible:
                    since = self.visible_since.get((s.participant, index - 1), index / self.fps)
                    self.visible_since[(s.participant, index)] = since

    def due(self, t_s: float) -> list[TruthSample]:
        index = round(t_s * self.fps)
        if not 0 <= index < len(self.frames):
            return []
        return [
            s
            for s in self.frames[index]
            if (s.participant, index) in self.visible_since
            and t_s - self.visible_since[(s.participant, index)] >= ESTABLISHED_S - 1e-9
        ]

    def at(self, participant: int, t_s: float) -> tuple[float, float] | None:
        samples = self.by_id[participant]
        i = math.floor(t_s * self.fps)
        a, b = samples.get(i), samples.get(i + 1)
        if a is None or b is None:
            return None
        f = t_s * self.fps - i
        return (a.east_m + (b.east_m - a.east_m) * f, a.north_m + (b.north_m - a.north_m) * f)


def _heading_error(a: float, b: float) -> float:
    return abs((a - b + 180.0) % 360.0 - 180.0)


def score(
    payloads: Iterable[Mapping[str, Any]], truth: GroundTruth, frame: LocalFrame, epoch_ms: int
) -> Score:
    """Score the RSM ``payloads`` (RSI ones are skipped) against ``truth``."""
    ticks: dict[int, list[Reported]] = {}
    for payload in payloads:
        if payload.get("name") == "RSM":
            t_s, participants = reported_participants(payload, frame, epoch_ms)
            ticks.setdefault(round(t_s / PERIOD_S), []).extend(participants)
    known = _Truth(truth)
    result = Score()
    run: dict[int, int] = {}
    last_tick = int(len(truth.frames) / truth.fps / PERIOD_S)
    for tick in range(last_tick + 1):
        t_s = tick * PERIOD_S
        due = known.due(t_s)
        reported = ticks.get(tick, [])
        pairs = []
        for s in due:
            for r in reported:
                if r.ptc_type != PTC_TYPE.get(s.class_name, "unknown"):
                    continue
                where = known.at(s.participant, r.t_s)
                if where is not None:
                    distance = math.hypot(r.east_m - where[0], r.north_m - where[1])
                    if distance <= GATE_M:
                        pairs.append((distance, s, r))
        matched: dict[int, tuple[float, TruthSample, Reported]] = {}
        used: set[int] = set()
        for distance, s, r in sorted(pairs, key=lambda item: item[0]):
            if s.participant not in matched and id(r) not in used:
                matched[s.participant] = (distance, s, r)
                used.add(id(r))
        seen_due = {s.participant for s in due}
        for participant in list(run):
            if participant not in seen_due:
                run[participant] = 0  # not due: a gap is counted only while due
        for s in due:
            result.due += 1
            pair = matched.get(s.participant)
            if pair is None:
                result.missing += 1
                run[s.participant] = run.get(s.participant, 0) + 1
                longest = max(result.longest_gap.get(s.participant, 0), run[s.participant])
                result.longest_gap[s.participant] = longest
                continue
            run[s.participant] = 0
            result.longest_gap.setdefault(s.participant, 0)
            distance, _, r = pair
            result.position_m.append(distance)
            result.speed_ms.append(abs(r.speed_ms - s.speed_ms))
            result.heading_deg.append(_heading_error(r.heading_deg, s.heading_deg))
            result.ids.setdefault(s.participant, set()).add(r.ptc_id)
    return result
