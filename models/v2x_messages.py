"""RSM and RSI payloads in the wire units of T/CSAE 53-2020, as OpenV2X reads them.

The analytics think in metres east/north of the pole and seconds; this module is the only
place that knows the wire's units, so a unit mistake has one home. The shapes follow what
OpenV2X's edge (open-v2x/cerebrum) parses, checked against its sources (reference only):

* RSM (``V2X/RSU/<rsu_id>/RSM/UP``): cerebrum's ``rsm_std`` driver passes the payload through
  and ``post_process.rsm2frame`` reads ``content.rsms[].refPos{lat,lon,ele}`` and per
  participant ``ptcType, ptcId, global_track_id, source, secMark, pos{lat,lon,ele}, speed,
  heading`` and, when ``size`` is there, all of ``size{width,length,height}`` by key.
  ``ptcType`` is the ASN.1 identifier as a string ("motor", "non-motor", "pedestrian"):
  cerebrum counts participants into a dict keyed by exactly those three, so "unknown" would
  break it; such participants are left out and counted (``RsmMessage.omitted``).
* RSI: the detection-source event list (``event_content[]`` with ``event_type, event_id,
  event_source, timeStamp, secMark, latitude, longitude``) that cerebrum's event driver
  turns into standard RSI; ``event_status`` (true while active, false once cancelled, the
  standard's ``eventStatus``) and the zone/start time ride along as extra keys.

Units (T/CSAE 53-2020 data elements; the "新四跨" profile): latitude/longitude integers of
1e-7 degree, elevation 0.1 m (-4096 = unknown), speed 0.02 m/s (8191 = unavailable), heading
0.0125 degree clockwise from north (0..28799), width/length 1 cm, height 5 cm, ``secMark``
milliseconds within the minute (0..59999), ``timeStamp`` ms since the Unix epoch, ``msgCnt``
0..127 wrapping. Source 3 is "video" in SourceType (unknown 0, selfinfo 1, v2x 2, video 3,
microwaveRadar 4, loop 5, lidar 6, integrated 7).

Privacy: track ids never leave the worker. ``ParticipantIds`` maps a track to a ``ptcId``
through a random offset and to a ``global_track_id`` through a keyed hash, both redrawn for
every UTC day, so a road user seen on two days cannot be linked by its id.
"""

from __future__ import annotations

import hashlib
import math
import secrets
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from smartpole.models.roadside import Participant, PtcType, RoadsideEvent, RoadsideEventKind

#: ``GeoFrame.to_latlon``: metres east/north of the pole -> (latitude, longitude) degrees.
ToLatLon = Callable[[float, float], tuple[float, float]]

LATLON_PER_DEGREE: Final = 10_000_000
LAT_LIMIT: Final = 900_000_000
LON_LIMIT: Final = 1_800_000_000
ELEVATION_UNKNOWN: Final = -4096
ELEVATION_MAX: Final = 61439
SPEED_UNIT_MS: Final = 0.02
SPEED_MAX: Final = 8190  # 8191 means "unavailable"
HEADING_UNIT_DEG: Final = 0.0125
HEADING_STEPS: Final = 28800  # 360 / 0.0125
WIDTH_MAX_CM: Final = 1023
LENGTH_MAX_CM: Final = 4095
HEIGHT_UNIT_M: Final = 0.05
HEIGHT_MAX: Final = 127
SEC_MARK_MS: Final = 60_000
MSG_CNT_MODULUS: Final = 128
PTC_ID_MODULUS: Final = 65_536
PARTICIPANTS_PER_RSM: Final = 16  # ParticipantList ::= SEQUENCE (SIZE(1..16))
EVENTS_PER_RSI: Final = 8  # RTEList ::= SEQUENCE (SIZE(1..8))
SOURCE_VIDEO: Final = 3
EVENT_SOURCE: Final = "detection"
DAY_MS: Final = 86_400_000

#: The participant types the RSM carries, as the ASN.1 identifiers OpenV2X compares with.
PTC_TYPE_WIRE: Final[dict[PtcType, str]] = {
    "motor": "motor",
    "non-motor": "non-motor",
    "pedestrian": "pedestrian",
}

#: Heights are not measured by a monocular camera; the size element needs one (cerebrum reads
#: ``size.height`` by key), so it is the class's typical height.
HEIGHT_PRIOR_M: Final[dict[str, float]] = {
    "car": 1.5,
    "truck": 3.2,
    "bus": 3.2,
    "motorcycle": 1.4,
    "bicycle": 1.6,
    "person": 1.7,
}
DEFAULT_HEIGHT_M: Final = 1.5

#: RSI ``event_type`` (GB/T 29100-2012 traffic event codes, T/CSAE 53 EventType 0..65535).
#: 707 (交通拥堵, congestion) is confirmed by OpenV2X's sources, which treat 707 as the
#: congestion event. The other three are in the 9xx "abnormal vehicle" class cerebrum lists
#: (901..906) and could not be checked against the standard's table here: verify before a
#: deployment relies on them.
RSI_EVENT_TYPE: Final[dict[RoadsideEventKind, int]] = {
    "queue": 707,
    "stopped_vehicle": 904,
    "wrong_way": 903,
    "pedestrian_on_carriageway": 906,
}

#: PositionConfidence (T/CSAE 53): the code of the tightest radius that holds 95% of fixes.
_METRES: Final = (500.0, 200.0, 100.0, 50.0, 20.0, 10.0, 5.0, 2.0, 1.0)
_POSITION_CONFIDENCE_M: Final = (*_METRES, 0.5, 0.2, 0.1, 0.05, 0.02, 0.01)
#: SpeedConfidence: unavailable 0, then 100, 10, 5, 1, 0.1, 0.05, 0.01 m/s as codes 1..7.
_SPEED_CONFIDENCE_MS: Final = (100, 10, 5, 1, 0.1, 0.05, 0.01)
#: 95% of a circular 2-D normal lies within 2.45 sigma; of a 1-D one within 1.96 sigma.
_CIRCLE_95: Final = 2.45
_LINE_95: Final = 1.96


def topic(rsu_id: str, message: str, vendor: str | None) -> str:
    """``V2X/RSU/<rsu_id>/<RSM|RSI>/UP[/<vendor>]``.

    Cerebrum picks its input driver from the suffix (``rsm_<vendor>``; without one, the
    standard driver), so the standard RSM goes without a suffix (``vendor=None``).
    """
    base = f"V2X/RSU/{rsu_id}/{message}/UP"
    return base if not vendor else f"{base}/{vendor}"


def latlon_units(latitude: float, longitude: float) -> tuple[int, int]:
    """Degrees -> integers of 1e-7 degree, held to the data element's range."""
    if not (math.isfinite(latitude) and math.isfinite(longitude)):
        raise ValueError(f"not a position on the earth: {latitude}, {longitude}")
    lat = max(-LAT_LIMIT, min(LAT_LIMIT, latitude * LATLON_PER_DEGREE))
    lon = max(-LON_LIMIT, min(LON_LIMIT, longitude * LATLON_PER_DEGREE))
    return round(lat), round(lon)


def speed_units(speed_ms: float) -> int:
    """m/s -> 0.02 m/s steps, 0..8190 (a faster road user is sent at the ceiling)."""
    if not math.isfinite(speed_ms):
        return SPEED_MAX + 1  # unavailable
    # Held to the range before rounding: a huge speed must not overflow the integer.
    return round(max(0.0, min(float(SPEED_MAX), speed_ms / SPEED_UNIT_MS)))


def heading_units(heading_deg: float) -> int:
    """Degrees clockwise from north -> 0.0125 degree steps in 0..28799 (360 wraps to 0)."""
    if not math.isfinite(heading_deg):
        return HEADING_STEPS  # unavailable
    return round(math.fmod(heading_deg, 360.0) / HEADING_UNIT_DEG) % HEADING_STEPS


def sec_mark(epoch_ms: int) -> int:
    """Milliseconds within the current minute (UTC minutes have no leap seconds in epoch ms)."""
    return epoch_ms % SEC_MARK_MS


def elevation_units(elevation_m: float | None) -> int:
    if elevation_m is None or not math.isfinite(elevation_m):
        return ELEVATION_UNKNOWN
    return round(max(ELEVATION_UNKNOWN + 1, min(ELEVATION_MAX, elevation_m * 10)))


def size_units(length_m: float, width_m: float, height_m: float) -> dict[str, int]:
    def clamp(value: float, unit: float, top: int) -> int:
        if not math.isfinite(value):
            return 0
        return round(max(0.0, min(float(top), value / unit)))

    return {
        "width": clamp(width_m, 0.01, WIDTH_MAX_CM),
        "length": clamp(length_m, 0.01, LENGTH_MAX_CM),
        "height": clamp(height_m, HEIGHT_UNIT_M, HEIGHT_MAX),
    }


def _confidence(radius: float, steps: Sequence[float]) -> int:
    """The code (1-based) of the tightest step that still covers ``radius``; 0 if none does."""
    if not math.isfinite(radius) or radius < 0:
        return 0
    code = 0
    for index, step in enumerate(steps, start=1):
        if step >= radius:
            code = index
    return code


def position_confidence(sigma_m: float) -> int:
    return _confidence(_CIRCLE_95 * sigma_m, _POSITION_CONFIDENCE_M)


def speed_confidence(sigma_ms: float) -> int:
    return _confidence(_LINE_95 * sigma_ms, _SPEED_CONFIDENCE_MS)


class ParticipantIds:
    """Wire ids for track ids, redrawn every UTC day (``period_ms``).

    ``ptcId`` is the track id plus a random offset, modulo 65536: distinct for the tracks of
    one day however many there are at once (the tracker's ids are consecutive).
    ``global_track_id`` is a keyed hash of the track id, 16 hex digits, so it cannot be
    inverted to the track id or linked across days.
    """

    def __init__(
        self, *, period_ms: int = DAY_MS, randbits: Callable[[int], int] = secrets.randbits
    ) -> None:
        if period_ms <= 0:
            raise ValueError("period_ms must be positive")
        self._period_ms = period_ms
        self._randbits = randbits
        self._period: int | None = None
        self._offset = 0
        self._key = b""

    def ids(self, track_id: int, epoch_ms: int) -> tuple[int, str]:
        period = epoch_ms // self._period_ms
        if period != self._period:
            self._period = period
            self._offset = self._randbits(16)
            self._key = self._randbits(128).to_bytes(16, "big")
        ptc_id = (track_id + self._offset) % PTC_ID_MODULUS
        digest = hashlib.blake2b(str(track_id).encode(), key=self._key, digest_size=8)
        return ptc_id, digest.hexdigest()


@dataclass(frozen=True)
class RsmMessage:
    """One RSM payload (None when nobody is there: the standard wants 1..16 participants per
    list) and how many participants were left out: a type the RSM cannot carry, or no finite
    position."""

    payload: dict[str, Any] | None
    participants: int
    omitted: int


class V2xMessages:
    """Builds the RSM and RSI payloads of one camera; keeps ``msgCnt`` and the id rotation.

    ``epoch_ms`` is the wall-clock time of the frame's capture and ``t_s`` the same instant on
    the stream clock the participants' ``t_s`` use; a participant's ``secMark`` is its own
    state time on the wall clock.
    """

    def __init__(
        self,
        rsu_id: str,
        to_latlon: ToLatLon,
        *,
        source_id: str,
        elevation_m: float | None = None,
        ids: ParticipantIds | None = None,
        session: str | None = None,
    ) -> None:
        self.rsu_id = rsu_id
        self.source_id = source_id
        self._to_latlon = to_latlon
        self._ids = ids if ids is not None else ParticipantIds()
        self._ele = elevation_units(elevation_m)
        lat, lon = latlon_units(*to_latlon(0.0, 0.0))
        self._ref = {"lat": lat, "lon": lon, "ele": self._ele}
        self._msg_cnt = 0
        # Event ids restart with the worker; the session prefix keeps them apart at the RSU.
        self._session = session if session is not None else secrets.token_hex(4)

    def _pos(self, east_m: float, north_m: float) -> dict[str, int]:
        lat, lon = latlon_units(*self._to_latlon(east_m, north_m))
        return {"lat": lat, "lon": lon, "ele": self._ele}

    def _participant(self, p: Participant, epoch_ms: int, t_s: float) -> dict[str, Any]:
        ptc_id, global_id = self._ids.ids(p.track_id, epoch_ms)
        state_ms = epoch_ms + round((p.t_s - t_s) * 1000)
        height = HEIGHT_PRIOR_M.get(p.class_name, DEFAULT_HEIGHT_M)
        return {
            "ptcType": PTC_TYPE_WIRE[p.ptc_type],
            "ptcId": ptc_id,
            "global_track_id": global_id,
            "source": SOURCE_VIDEO,
            "secMark": sec_mark(state_ms),
            "pos": self._pos(p.east_m, p.north_m),
            "accuracy": {"pos": position_confidence(p.pos_sigma_m)},
            "motionCfd": {"speedCfd": speed_confidence(p.speed_sigma_ms)},
            "speed": speed_units(p.speed_ms),
            "heading": heading_units(p.heading_deg),
            "size": size_units(p.length_m, p.width_m, height),
        }

    def rsm(self, participants: Iterable[Participant], *, epoch_ms: int, t_s: float) -> RsmMessage:
        every = list(participants)
        carried = [
            p
            for p in every
            if p.ptc_type in PTC_TYPE_WIRE and math.isfinite(p.east_m) and math.isfinite(p.north_m)
        ]
        omitted = len(every) - len(carried)
        if not carried:
            return RsmMessage(None, 0, omitted)
        entries = [self._participant(p, epoch_ms, t_s) for p in carried]
        rsms = [
            {"refPos": dict(self._ref), "participants": entries[i : i + PARTICIPANTS_PER_RSM]}
            for i in range(0, len(entries), PARTICIPANTS_PER_RSM)
        ]
        payload = {
            "name": "RSM",
            "id": self.rsu_id,
            "msgCnt": self._msg_cnt,
            "timeStamp": epoch_ms,
            "content": {"rsms": rsms},
        }
        self._msg_cnt = (self._msg_cnt + 1) % MSG_CNT_MODULUS
        return RsmMessage(payload, len(carried), omitted)

    def _event(self, event: RoadsideEvent, epoch_ms: int, t_s: float) -> dict[str, Any]:
        pos = self._pos(event.east_m, event.north_m)
        entry: dict[str, Any] = {
            "event_type": RSI_EVENT_TYPE[event.kind],
            "event_id": f"{self._session}-{event.event_id}",
            "event_source": EVENT_SOURCE,
            "timeStamp": epoch_ms,
            "secMark": sec_mark(epoch_ms),
            "latitude": pos["lat"],
            "longitude": pos["lon"],
            "event_status": event.state == "active",
            "start_time": epoch_ms + round((event.started_t_s - t_s) * 1000),
            "zone": event.zone,
        }
        if event.queue_vehicles is not None:
            entry["queue_vehicles"] = event.queue_vehicles
        if event.queue_length_m is not None and math.isfinite(event.queue_length_m):
            entry["queue_length"] = max(0, round(event.queue_length_m * 100))
        return entry

    def rsi(
        self, events: Iterable[RoadsideEvent], *, epoch_ms: int, t_s: float
    ) -> list[dict[str, Any]]:
        """RSI payloads for every event given, at most 8 events each (RTEList is SIZE(1..8));
        none for no events."""
        content = [self._event(e, epoch_ms, t_s) for e in events]
        return [
            {
                "dev_id": self.source_id,
                "dev_type": "camera",
                "dev_pos": {"latitude": self._ref["lat"], "longitude": self._ref["lon"]},
                "event_content": content[i : i + EVENTS_PER_RSI],
            }
            for i in range(0, len(content), EVENTS_PER_RSI)
        ]
