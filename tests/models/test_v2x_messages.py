"""RSM and RSI payloads: wire units, ranges, id rotation, checked against the hand-written
schemas in schemas/v2x/ (``jsonschema``, Draft 2020-12) and decoded back to metres.

The geo frame here is a plain equirectangular one written for the test, not ``models.geo``:
the payload must say what the frame it was given says, whatever frame that is.
"""

from __future__ import annotations

import json
import math
from functools import cache
from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers.paths import REPO
from helpers.road_users import participant
from smartpole.models.roadside import Participant, RoadsideEvent, ptc_type_of
from smartpole.models.v2x_messages import (
    RSI_EVENT_TYPE,
    ParticipantIds,
    V2xMessages,
    elevation_units,
    heading_units,
    latlon_units,
    size_units,
    speed_units,
    topic,
)

LAT0, LON0 = 23.1291, 113.2644  # Guangzhou
M_PER_DEG_LAT = 111_320.0
M_PER_DEG_LON = M_PER_DEG_LAT * math.cos(math.radians(LAT0))
EPOCH_MS = 1_796_000_000_000  # a Monday in December 2026, 00:53:20 UTC


def to_latlon(east_m: float, north_m: float) -> tuple[float, float]:
    return LAT0 + north_m / M_PER_DEG_LAT, LON0 + east_m / M_PER_DEG_LON


def to_en(lat_units: int, lon_units: int) -> tuple[float, float]:
    return (
        (lon_units / 1e7 - LON0) * M_PER_DEG_LON,
        (lat_units / 1e7 - LAT0) * M_PER_DEG_LAT,
    )


@cache
def validator(name: str) -> jsonschema.Draft202012Validator:
    schema = json.loads((REPO / "schemas" / "v2x" / name).read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def schema_errors(name: str, payload: object) -> list[str]:
    return [
        f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}"
        for e in validator(name).iter_errors(payload)
    ]


def messages(**kwargs: Any) -> V2xMessages:
    return V2xMessages("R0001", to_latlon, source_id="pole-7-cam1", session="s1", **kwargs)


CLASSES = ["car", "truck", "bus", "motorcycle", "bicycle", "person"]

participants = st.builds(
    lambda track_id, cls, dt, east, north, speed, heading, length, width, ps, ss: participant(
        track_id,
        class_name=cls,
        ptc_type=ptc_type_of(cls),
        t_s=10.0 + dt,
        measured_t_s=10.0 + dt,
        east_m=east,
        north_m=north,
        speed_ms=speed,
        heading_deg=heading,
        length_m=length,
        width_m=width,
        pos_sigma_m=ps,
        speed_sigma_ms=ss,
    ),
    st.integers(0, 2**40),
    st.sampled_from(CLASSES),
    st.floats(-0.2, 0.0),
    st.floats(-2000, 2000),
    st.floats(-2000, 2000),
    st.floats(0, 400),
    st.floats(0, 359.999999),
    st.floats(0, 60),
    st.floats(0, 15),
    st.floats(0, 1000),
    st.floats(0, 200),
)


@settings(max_examples=150, deadline=None)
@given(
    crowd=st.lists(participants, min_size=1, max_size=40),
    epoch_ms=st.integers(0, 4_102_444_800_000),
)
def test_every_rsm_follows_the_schema_and_decodes_to_the_participants(
    crowd: list[Participant], epoch_ms: int
) -> None:
    built = messages().rsm(crowd, epoch_ms=epoch_ms, t_s=10.0)
    assert built.payload is not None
    assert schema_errors("rsm.schema.json", built.payload) == []
    assert built.participants == len(crowd)
    assert built.omitted == 0
    assert built.payload["timeStamp"] == epoch_ms
    sent = [p for rsm in built.payload["content"]["rsms"] for p in rsm["participants"]]
    assert len(sent) == len(crowd)
    for p, wire in zip(crowd, sent, strict=True):
        assert wire["secMark"] == (epoch_ms + round((p.t_s - 10.0) * 1000)) % 60_000
        east, north = to_en(wire["pos"]["lat"], wire["pos"]["lon"])
        # 1e-7 degree is 1.1 cm of latitude: half a step of rounding, plus float noise.
        assert abs(east - p.east_m) < 0.01
        assert abs(north - p.north_m) < 0.01
        if p.speed_ms < 8190 * 0.02:
            assert abs(wire["speed"] * 0.02 - p.speed_ms) <= 0.01 + 1e-9
        else:
            assert wire["speed"] == 8190
        turn = (wire["heading"] * 0.0125 - p.heading_deg + 180) % 360 - 180
        assert abs(turn) <= 0.00625 + 1e-9
        assert wire["size"]["length"] == min(4095, round(p.length_m * 100))
        assert wire["size"]["width"] == min(1023, round(p.width_m * 100))
        assert wire["ptcType"] == p.ptc_type


def test_an_rsm_in_the_wire_units() -> None:
    """One participant worked by hand: the units a reader of the payload must assume."""
    built = messages().rsm([participant()], epoch_ms=EPOCH_MS + 59_990, t_s=10.0)
    assert built.payload is not None
    assert schema_errors("rsm.schema.json", built.payload) == []
    rsm = built.payload["content"]["rsms"][0]
    assert rsm["refPos"] == {"lat": 231291000, "lon": 1132644000, "ele": -4096}
    wire = rsm["participants"][0]
    assert wire["ptcType"] == "motor"
    assert wire["source"] == 3
    assert wire["secMark"] == 59_990 + 1_796_000_000_000 % 60_000 - 60_000
    assert wire["speed"] == 695  # 13.9 m/s in 0.02 m/s
    assert wire["heading"] == 21720  # 271.5 degrees in 0.0125 degree
    assert wire["size"] == {"width": 180, "length": 460, "height": 30}
    assert wire["accuracy"] == {"pos": 9}  # 2.45 x 0.4 m = 0.98 m: "a1m"
    assert wire["motionCfd"] == {"speedCfd": 4}  # 1.96 x 0.3 = 0.59 m/s: within 1 m/s
    assert wire["pos"]["lat"] == round((LAT0 - 30.25 / M_PER_DEG_LAT) * 1e7)


def test_the_schema_rejects_what_openv2x_cannot_read() -> None:
    built = messages().rsm([participant()], epoch_ms=EPOCH_MS, t_s=10.0)
    assert built.payload is not None
    good = built.payload

    def mutated(path: list[str | int], value: object) -> dict[str, Any]:
        copy: Any = json.loads(json.dumps(good))
        node = copy
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
        return copy  # type: ignore[no-any-return]

    wire = ["content", "rsms", 0, "participants", 0]
    for path, value in [
        ([*wire, "ptcType"], 1),  # a number: cerebrum keys its counts by the identifier
        ([*wire, "speed"], 8192),
        ([*wire, "heading"], 28801),
        ([*wire, "secMark"], 60_000),
        ([*wire, "pos", "lat"], 23.1291),
        (["msgCnt"], 128),
        ([*wire, "size"], {"width": 180, "length": 460}),
    ]:
        assert schema_errors("rsm.schema.json", mutated(path, value)), (path, value)


def test_msg_cnt_wraps_and_big_crowds_split_into_lists_of_16() -> None:
    built_messages = messages()
    counts = []
    for i in range(130):
        built = built_messages.rsm([participant()], epoch_ms=EPOCH_MS + 100 * i, t_s=10.0)
        assert built.payload is not None
        counts.append(built.payload["msgCnt"])
    assert counts[:3] == [0, 1, 2]
    assert counts[127:] == [127, 0, 1]
    crowd = [participant(i) for i in range(35)]
    built = built_messages.rsm(crowd, epoch_ms=EPOCH_MS, t_s=10.0)
    assert built.payload is not None
    sizes = [len(r["participants"]) for r in built.payload["content"]["rsms"]]
    assert sizes == [16, 16, 3]
    assert schema_errors("rsm.schema.json", built.payload) == []


def test_an_unknown_type_is_left_out_and_counted_and_an_empty_road_sends_nothing() -> None:
    odd = participant(3, class_name="train", ptc_type="unknown")
    built = messages().rsm([participant(1), odd], epoch_ms=EPOCH_MS, t_s=10.0)
    assert (built.participants, built.omitted) == (1, 1)
    assert built.payload is not None
    assert schema_errors("rsm.schema.json", built.payload) == []
    only_odd = messages().rsm([odd], epoch_ms=EPOCH_MS, t_s=10.0)
    assert only_odd.payload is None
    assert only_odd.omitted == 1
    assert messages().rsm([], epoch_ms=EPOCH_MS, t_s=10.0).payload is None
    lost = participant(4, east_m=float("nan"))
    assert messages().rsm([lost, participant(5)], epoch_ms=EPOCH_MS, t_s=10.0).omitted == 1


def test_ids_rotate_every_day_and_never_carry_the_track_id() -> None:
    draws = iter(range(1, 1000))
    ids = ParticipantIds(randbits=lambda bits: next(draws) * 7919 % (1 << bits))
    monday = [ids.ids(track, EPOCH_MS) for track in (5, 6, 70_000)]
    later_monday = [ids.ids(track, EPOCH_MS + 3_600_000) for track in (5, 6, 70_000)]
    tuesday = [ids.ids(track, EPOCH_MS + 86_400_000) for track in (5, 6, 70_000)]
    assert monday == later_monday
    assert len({ptc for ptc, _ in monday}) == 3
    assert all(a != b for a, b in zip(monday, tuesday, strict=True))
    assert all(a[1] != b[1] for a, b in zip(monday, tuesday, strict=True))
    for _, global_id in monday + tuesday:
        assert len(global_id) == 16
        assert int(global_id, 16) >= 0
        assert global_id not in {"5", "6", "70000"}


@settings(max_examples=200, deadline=None)
@given(track=st.integers(0, 2**40), other=st.integers(0, 2**40), day=st.integers(0, 50_000))
def test_distinct_tracks_of_one_day_get_distinct_ids(track: int, other: int, day: int) -> None:
    ids = ParticipantIds()
    a = ids.ids(track, day * 86_400_000)
    b = ids.ids(other, day * 86_400_000 + 1)
    assert 0 <= a[0] <= 65535
    assert (a[1] == b[1]) == (track == other)
    if track != other and (track - other) % 65536:
        assert a[0] != b[0]


@given(
    speed=st.floats(),
    heading=st.floats(),
    size=st.tuples(st.floats(), st.floats(), st.floats()),
    elevation=st.none() | st.floats(),
)
def test_wire_units_never_leave_their_range(
    speed: float, heading: float, size: tuple[float, float, float], elevation: float | None
) -> None:
    assert 0 <= speed_units(speed) <= 8191
    assert 0 <= heading_units(heading) <= 28800
    wire = size_units(*size)
    assert 0 <= wire["length"] <= 4095
    assert 0 <= wire["width"] <= 1023
    assert 0 <= wire["height"] <= 127
    assert -4096 <= elevation_units(elevation) <= 61439


@given(latitude=st.floats(), longitude=st.floats())
def test_latlon_units_hold_the_range_or_refuse_what_is_not_a_position(
    latitude: float, longitude: float
) -> None:
    if not (math.isfinite(latitude) and math.isfinite(longitude)):
        with pytest.raises(ValueError, match="not a position"):
            latlon_units(latitude, longitude)
        return
    lat, lon = latlon_units(latitude, longitude)
    assert -900_000_000 <= lat <= 900_000_000
    assert -1_800_000_000 <= lon <= 1_800_000_000
    if abs(latitude) <= 90 and abs(longitude) <= 180:
        assert abs(lat - latitude * 1e7) <= 0.5 + 1e-6
        assert abs(lon - longitude * 1e7) <= 0.5 + 1e-6


def event(state: str = "active", **changes: Any) -> RoadsideEvent:
    values: dict[str, Any] = {
        "kind": "stopped_vehicle",
        "state": state,
        "event_id": 41,
        "zone": "lane-2",
        "t_s": 20.0,
        "started_t_s": 12.5,
        "east_m": -4.0,
        "north_m": 55.0,
        "track_id": 9,
    }
    values.update(changes)
    return RoadsideEvent(**values)


def test_an_event_starts_and_is_cancelled_under_one_id() -> None:
    built = messages()
    [start] = built.rsi([event()], epoch_ms=EPOCH_MS, t_s=20.0)
    [end] = built.rsi([event("cancelled", t_s=31.0)], epoch_ms=EPOCH_MS + 11_000, t_s=31.0)
    for payload in (start, end):
        assert schema_errors("rsi.schema.json", payload) == []
    a, b = start["event_content"][0], end["event_content"][0]
    assert a["event_id"] == b["event_id"] == "s1-41"
    assert (a["event_status"], b["event_status"]) == (True, False)
    assert a["event_type"] == RSI_EVENT_TYPE["stopped_vehicle"]
    assert a["event_source"] == "detection"
    assert a["start_time"] == b["start_time"] == EPOCH_MS - 7_500
    assert a["secMark"] == EPOCH_MS % 60_000
    east, north = to_en(a["latitude"], a["longitude"])
    assert abs(east + 4.0) < 0.01
    assert abs(north - 55.0) < 0.01
    assert "track_id" not in json.dumps(start)
    assert start["dev_id"] == "pole-7-cam1"
    assert built.rsi([], epoch_ms=EPOCH_MS, t_s=20.0) == []


def test_a_queue_event_carries_its_length_and_the_congestion_code() -> None:
    [payload] = messages().rsi(
        [event(kind="queue", track_id=None, queue_vehicles=6, queue_length_m=38.4)],
        epoch_ms=EPOCH_MS,
        t_s=20.0,
    )
    assert schema_errors("rsi.schema.json", payload) == []
    entry = payload["event_content"][0]
    assert entry["event_type"] == 707
    assert (entry["queue_vehicles"], entry["queue_length"]) == (6, 3840)


@settings(max_examples=100, deadline=None)
@given(
    kinds=st.lists(
        st.sampled_from(["stopped_vehicle", "wrong_way", "pedestrian_on_carriageway", "queue"]),
        min_size=1,
        max_size=20,
    ),
    epoch_ms=st.integers(0, 4_102_444_800_000),
    east=st.floats(-2000, 2000),
    north=st.floats(-2000, 2000),
)
def test_every_rsi_follows_the_schema(
    kinds: list[str], epoch_ms: int, east: float, north: float
) -> None:
    events = [
        event(kind=kind, event_id=i, east_m=east, north_m=north, started_t_s=20.0 - i)
        for i, kind in enumerate(kinds)
    ]
    payloads = messages().rsi(events, epoch_ms=epoch_ms + 100_000, t_s=20.0)
    assert len(payloads) == math.ceil(len(kinds) / 8)
    for payload in payloads:
        assert schema_errors("rsi.schema.json", payload) == []
    sent = [entry["event_id"] for payload in payloads for entry in payload["event_content"]]
    assert sent == [f"s1-{i}" for i in range(len(kinds))]


@pytest.mark.parametrize(
    ("vendor", "expected"),
    [(None, "V2X/RSU/R0001/RSM/UP"), ("dawnline", "V2X/RSU/R0001/RSM/UP/dawnline")],
)
def test_topics(vendor: str | None, expected: str) -> None:
    assert topic("R0001", "RSM", vendor) == expected
