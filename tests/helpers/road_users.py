"""Road users made by hand for the analytics' tests: tracks as the tracker makes them, and
participants as the estimator reports them."""

from __future__ import annotations

from typing import Any

from smartpole.models.roadside import Participant
from smartpole.models.tracker import Track

BoxF = tuple[float, float, float, float]


def make_track(track_id: int = 1, cls: str = "car", box: BoxF = (0.0, 0.0, 1.0, 1.0)) -> Track:
    """A confirmed track that has seen nothing yet (``place`` gives it detections)."""
    return Track(
        id=track_id,
        box=box,
        class_name=cls,
        score=0.9,
        hits=0,
        missed=0,
        first_seen_s=0.0,
        last_seen_s=0.0,
        confirmed=True,
    )


def place(track: Track, t: float, x: float, y: float, w: float = 60.0, h: float = 40.0) -> Track:
    """Record a detection of ``track`` with bottom-centre ``(x, y)`` at time ``t``."""
    if not track.points:
        track.first_seen_s = t
    track.points.append((t, x, y))
    track.box = (x - w / 2, y - h, x + w / 2, y)
    track.last_seen_s = t
    track.hits += 1
    return track


def participant(track_id: int = 7, **changes: Any) -> Participant:
    """A car 12.5 m east and 30.25 m south of the pole going west at 13.9 m/s, with
    ``changes`` to any field."""
    values: dict[str, Any] = {
        "track_id": track_id,
        "class_name": "car",
        "ptc_type": "motor",
        "t_s": 10.0,
        "measured_t_s": 10.0,
        "east_m": 12.5,
        "north_m": -30.25,
        "speed_ms": 13.9,
        "heading_deg": 271.5,
        "length_m": 4.6,
        "width_m": 1.8,
        "pos_sigma_m": 0.4,
        "speed_sigma_ms": 0.3,
    }
    values.update(changes)
    return Participant(**values)
