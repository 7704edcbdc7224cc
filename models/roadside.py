"""What a camera tells the roadside unit: road users on the earth, and events on the road.

These are the nouns between the analytics (``participants.ParticipantEstimator`` makes
``Participant``; ``roadside_events.RoadsideEvents`` makes ``RoadsideEvent``) and the V2X
messages (``v2x_messages`` turns them into RSM and RSI payloads). Positions are metres east
and north of the pole, in the local tangent plane of the camera's geo-calibration
(``geo.GeoFrame`` gives latitude and longitude); only the message layer converts to the
wire's units, so the estimator and its tests think in metres and seconds.

A participant's position is the ground point under the middle of the bottom edge of its
box: the point of the road user nearest the camera that touches the road. That is the point
a monocular camera measures; the footprint's centre lies up to half a length beyond it,
away from the camera, and ``length_m``/``width_m`` say how far.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

#: V2X participant types, as T/CSAE 53-2020's ParticipantType names them (the RSM carries
#: the names, as OpenV2X reads them; ``v2x_messages`` leaves "unknown" out).
PtcType = Literal["unknown", "motor", "non-motor", "pedestrian"]

#: The detector's class names (the product's taxonomy, ``road_users``) as participant types.
PTC_TYPE_OF_CLASS: Final[dict[str, PtcType]] = {
    "car": "motor",
    "truck": "motor",
    "bus": "motor",
    "motorcycle": "motor",
    "bicycle": "non-motor",
    "person": "pedestrian",
}

RoadsideEventKind = Literal["stopped_vehicle", "wrong_way", "pedestrian_on_carriageway", "queue"]
RoadsideEventState = Literal["active", "cancelled"]


def ptc_type_of(class_name: str) -> PtcType:
    """The participant type of a detector class; ``unknown`` for a class V2X has no type for."""
    return PTC_TYPE_OF_CLASS.get(class_name, "unknown")


@dataclass(frozen=True)
class Participant:
    """One road user's smoothed state at stream time ``t_s``.

    ``measured_t_s`` is when the detector last saw it: ``t_s - measured_t_s`` is how far the
    state was predicted. ``heading_deg`` is degrees clockwise from north in [0, 360); for a
    road user standing still it keeps the last heading it moved with (0 if it never moved).
    ``pos_sigma_m`` and ``speed_sigma_ms`` are one standard deviation, from the filter's
    covariance. ``track_id`` is the pipeline's track id and is never sent: the wire carries
    a rotating id (``v2x_messages.ParticipantIds``).
    """

    track_id: int
    class_name: str
    ptc_type: PtcType
    t_s: float
    measured_t_s: float
    east_m: float
    north_m: float
    speed_ms: float
    heading_deg: float
    length_m: float
    width_m: float
    pos_sigma_m: float
    speed_sigma_ms: float


@dataclass(frozen=True)
class RoadsideEvent:
    """An event on the road as the RSU hears of it: ``active`` when it starts (and while it
    lasts, if re-sent), ``cancelled`` once when it ends. ``event_id`` is the same for both.

    ``track_id`` is the road user it is about (None for a queue); ``started_t_s`` when its
    condition was first met (stream clock). ``queue_vehicles``/``queue_length_m`` only for
    ``queue``.
    """

    kind: RoadsideEventKind
    state: RoadsideEventState
    event_id: int
    zone: str
    t_s: float
    started_t_s: float
    east_m: float
    north_m: float
    track_id: int | None = None
    queue_vehicles: int | None = None
    queue_length_m: float | None = None
