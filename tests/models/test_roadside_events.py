"""Roadside events: started, re-sent while they last, cancelled exactly once when they end."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers.road_users import make_track
from helpers.road_users import place as place_box
from smartpole.models.calibration import GroundCalibration
from smartpole.models.errors import AnalyticsConfigError
from smartpole.models.roadside import RoadsideEvent
from smartpole.models.roadside_events import RoadsideEvents, located
from smartpole.models.tracker import Track
from smartpole.models.zones import Zone, ZoneEvent, ZoneMonitor

DT = 0.1  # steps of 0.1 s: the events need no finer timing

# Image (x right, y down) to metres east/north of the pole: 10 px a metre, x = 100 is 0 m
# east, y = 300 is 0 m north. A plain scale keeps the expected positions readable.
IMAGE_QUAD = [(100.0, 300.0), (540.0, 300.0), (540.0, 100.0), (100.0, 100.0)]
GROUND_QUAD = [(0.0, 0.0), (44.0, 0.0), (44.0, 20.0), (0.0, 20.0)]


def east_north(x: float, y: float) -> tuple[float, float]:
    return ((x - 100.0) / 10.0, (300.0 - y) / 10.0)


NS = Zone("ns", [(100, 100), (300, 100), (300, 300), (100, 300)], "no_stopping")
ROAD = Zone("road", [(300, 100), (540, 100), (540, 300), (300, 300)], "carriageway")
LANE = Zone("lane", [(100, 100), (540, 100), (540, 300), (100, 300)], direction=(1.0, 0.0))
QUEUE = Zone(
    "q", [(100, 100), (540, 100), (540, 300), (100, 300)], "queue",
    stop_line=((540.0, 100.0), (540.0, 300.0)),
)  # fmt: skip


@pytest.fixture
def calibration() -> GroundCalibration:
    return GroundCalibration(IMAGE_QUAD, GROUND_QUAD)


def place(track: Track, t: float, x: float, y: float) -> Track:
    """A detection with a 40x30 box standing on ``(x, y)`` at time ``t``."""
    return place_box(track, t, x, y, w=40.0, h=30.0)


@dataclass
class Road:
    """A monitor and its roadside events driven the way the pipeline drives them."""

    monitor: ZoneMonitor
    events: RoadsideEvents
    sent: list[RoadsideEvent] = field(default_factory=list)

    def step(
        self, t: float, tracks: Sequence[Track], ended: Iterable[Track] = ()
    ) -> list[RoadsideEvent]:
        out = self.events.update(self.monitor.update(tracks, t), tracks, t)
        self.monitor.finish(ended)
        out += self.events.finish(ended)
        self.sent += out
        return out

    def close(self, t: float) -> list[RoadsideEvent]:
        out = self.events.close(t)
        self.sent += out
        return out


def road(
    zones: Sequence[Zone],
    calibration: GroundCalibration | None,
    *,
    stopped_after_s: float = 2.0,
    **kwargs: float,
) -> Road:
    monitor = ZoneMonitor(
        zones,
        calibration=calibration,
        stopped_after_s=stopped_after_s,
        pedestrian_after_s=1.0,
        wrong_way_after_s=1.0,
    )
    return Road(monitor, RoadsideEvents(monitor, calibration, **kwargs))  # type: ignore[arg-type]


def times(n: int, start: int = 0) -> list[float]:
    return [round((start + i) * DT, 6) for i in range(n)]


# --- per-track events ----------------------------------------------------------------------


def test_a_stopped_vehicle_is_active_resent_each_second_and_cancelled_once_when_it_moves(
    calibration: GroundCalibration,
) -> None:
    r = road([NS], calibration)
    car = make_track(7)
    for t in times(60):  # stands at (200, 250) for 6 s
        r.step(t, [place(car, t, 200.0, 250.0)])
    first = r.sent[0]
    assert (first.kind, first.state, first.zone, first.track_id) == (
        "stopped_vehicle", "active", "ns", 7,
    )  # fmt: skip
    # judged stopped once the 1 s speed fit has 0.5 s of points (at a 0.2 s refresh), then 2 s
    assert first.t_s == first.started_t_s
    assert 2.5 < first.t_s <= 2.9
    assert (first.east_m, first.north_m) == pytest.approx(east_north(200.0, 250.0))
    assert [e.t_s - first.t_s for e in r.sent] == pytest.approx([0.0, 1.0, 2.0, 3.0])
    assert {e.event_id for e in r.sent} == {first.event_id}
    assert all(e.started_t_s == first.started_t_s for e in r.sent)
    x = 200.0
    for t in times(40, start=60):  # drives off east at 5 m/s
        x += 50.0 * DT
        r.step(t, [place(car, t, x, 250.0)])
    cancels = [e for e in r.sent if e.state == "cancelled"]
    assert len(cancels) == 1
    assert r.sent[-1] is cancels[0]
    assert cancels[0].event_id == first.event_id
    # "stopped" ends once the 1 s speed fit passes 5 km/h, and the event after release_s
    assert 7.0 <= cancels[0].t_s <= 7.7
    assert r.events.active() == []
    assert (r.events.counts.started, r.events.counts.cancelled) == (1, 1)


def test_a_track_that_ends_is_cancelled_at_once_and_only_once(
    calibration: GroundCalibration,
) -> None:
    r = road([NS], calibration, release_s=5.0)
    car = make_track(1)
    for t in times(30):
        r.step(t, [place(car, t, 200.0, 250.0)])
    assert [e.state for e in r.sent] == ["active"]
    # the tracker ended it, so the update no longer has it: cancelled there, before finish
    out = r.events.update(r.monitor.update([], 3.0), [], 3.0)
    assert [(e.state, e.t_s) for e in out] == [("cancelled", 3.0)]
    assert r.events.finish([car]) == []
    assert r.close(4.0) == []


def test_finish_alone_cancels_the_events_of_ended_tracks(calibration: GroundCalibration) -> None:
    r = road([NS], calibration, release_s=5.0)
    car = make_track(1)
    for t in times(30):
        r.step(t, [place(car, t, 200.0, 250.0)])
    out = r.events.finish([car])
    assert [(e.state, e.event_id) for e in out] == [("cancelled", r.sent[0].event_id)]
    assert out[0].t_s == pytest.approx(2.9)  # the latest update's time
    assert r.events.finish([car]) == []
    assert r.events.active() == []


def test_a_pedestrian_stepping_off_the_road_for_a_moment_keeps_the_event(
    calibration: GroundCalibration,
) -> None:
    r = road([ROAD], calibration, release_s=1.0)
    person = make_track(3, "person")
    path = [400.0] * 20 + [560.0] * 5 + [400.0] * 20 + [560.0] * 20  # out 0.5 s, then for good
    for t, x in zip(times(len(path)), path, strict=True):
        r.step(t, [place(person, t, x, 200.0)])
    assert [e.state for e in r.sent] == ["active"] * 5 + ["cancelled"]
    assert r.sent[0].t_s == pytest.approx(1.1)
    assert r.sent[0].kind == "pedestrian_on_carriageway"
    assert r.sent[-1].t_s == pytest.approx(5.4)  # last on the road at 4.4, + release_s
    assert len({e.event_id for e in r.sent}) == 1


def test_a_wrong_way_driver_is_followed_and_cancelled_when_it_stops(
    calibration: GroundCalibration,
) -> None:
    r = road([LANE], calibration)
    car = make_track(4)
    x = 520.0
    for t in times(40):  # west at 4 m/s against an eastbound lane
        x -= 40.0 * DT
        r.step(t, [place(car, t, x, 150.0)])
    for t in times(30, start=40):  # stops
        r.step(t, [place(car, t, x, 150.0)])
    active = [e for e in r.sent if e.state == "active"]
    assert active[0].kind == "wrong_way"
    assert len(active) >= 2
    # each message carries where the driver is now
    assert active[1].east_m < active[0].east_m - 3.0
    assert all(e.north_m == pytest.approx(15.0) for e in r.sent)
    assert [e.state for e in r.sent].count("cancelled") == 1
    assert r.sent[-1].state == "cancelled"


def test_a_wrong_way_driver_who_pauses_and_goes_on_gets_a_new_event(
    calibration: GroundCalibration,
) -> None:
    r = road([LANE], calibration)
    car = make_track(4)
    raised: list[ZoneEvent] = []
    x, step = 520.0, 0
    for speed, n in [(40.0, 30), (0.0, 30), (40.0, 30)]:  # west, a 3 s pause, west again
        for _ in range(n):
            t = round(step * DT, 6)
            step += 1
            x -= speed * DT
            new = r.monitor.update([place(car, t, x, 150.0)], t)
            raised += new
            r.sent += r.events.update(new, [car], t)
    r.close(9.0)
    assert len(raised) == 1  # the monitor's summaries still see one wrong-way driver
    lifecycles = [(e.event_id, e.state) for e in r.sent if e.state == "cancelled"]
    assert len(lifecycles) == 2
    first, second = (e for e in r.sent if e.state == "active" and e.t_s == e.started_t_s)
    assert first.event_id != second.event_id
    assert first.t_s < 3.0 < 6.0 < second.t_s
    # the second starts once it has gone the wrong way for wrong_way_after_s again
    assert second.t_s - 6.0 == pytest.approx(1.6, abs=0.35)


def test_close_cancels_everything_alive_once(calibration: GroundCalibration) -> None:
    r = road([NS, ROAD], calibration)
    car, person = make_track(1), make_track(2, "person")
    for t in times(30):
        r.step(t, [place(car, t, 200.0, 250.0), place(person, t, 400.0, 200.0)])
    ids = {e.event_id for e in r.sent}
    assert len(ids) == 2
    out = r.close(3.0)
    assert {e.event_id for e in out} == ids
    assert all((e.state, e.t_s) == ("cancelled", 3.0) for e in out)
    assert r.close(3.1) == []


def test_without_a_calibration_the_lifecycle_runs_but_nothing_is_located() -> None:
    r = road([NS, ROAD], None)
    car, person = make_track(1), make_track(2, "person")
    for t in times(30):
        r.step(t, [place(car, t, 200.0, 250.0), place(person, t, 400.0, 200.0)])
    r.close(3.0)
    assert sorted(e.state for e in r.sent) == ["active"] * 3 + ["cancelled"] * 2
    assert not any(located(e) for e in r.sent)
    assert all(math.isnan(e.east_m) and math.isnan(e.north_m) for e in r.sent)


def test_ids_are_never_shared_by_live_events_and_are_reused_once_free(
    calibration: GroundCalibration,
) -> None:
    r = road([ROAD], calibration, id_space=2)
    people = [make_track(i, "person") for i in (1, 2, 3)]
    for t in times(15):
        r.step(t, [place(p, t, 350.0 + 40.0 * p.id, 200.0) for p in people])
    started = [e for e in r.sent if e.state == "active"]
    assert sorted(e.event_id for e in started) == [0, 1]
    assert r.events.counts.no_id == 1  # the third could not start: counted, not lost silently
    out = r.step(1.5, [place(p, 1.5, 350.0 + 40.0 * p.id, 200.0) for p in people[1:]], people[:1])
    freed = next(e for e in started if e.track_id == 1).event_id
    assert [(e.state, e.event_id) for e in out] == [("cancelled", freed)]


# --- queues --------------------------------------------------------------------------------


def test_a_queue_starts_at_the_threshold_and_does_not_flap_below_it(
    calibration: GroundCalibration,
) -> None:
    r = road([QUEUE], calibration, queue_vehicles=5, queue_hysteresis=1, release_s=1.0)
    cars = [make_track(i) for i in range(6)]
    xs = [520.0 - 45.0 * i for i in range(6)]  # 2 m from the stop line, then every 4.5 m

    def at(t: float, n: int) -> list[RoadsideEvent]:
        for car, x in zip(cars, xs, strict=True):
            place(car, t, x, 200.0)  # every car keeps being seen, standing still
        return r.step(t, cars[:n])

    t_index = 0
    for n in [4] * 10 + [5] * 5:
        at(t_index * DT, n)
        t_index += 1
    assert [e.state for e in r.sent] == ["active"]
    start = r.sent[0]
    assert (start.kind, start.zone, start.track_id) == ("queue", "q", None)
    assert start.queue_vehicles == 5
    assert start.queue_length_m == pytest.approx((540.0 - xs[4]) / 10.0)
    assert (start.east_m, start.north_m) == pytest.approx(east_north(xs[4], 200.0))
    for n in [4, 5] * 20 + [4] * 10:  # flickers between 4 and 5: one event, re-sent
        at(t_index * DT, n)
        t_index += 1
    assert {e.state for e in r.sent} == {"active"}
    assert {e.event_id for e in r.sent} == {start.event_id}
    assert r.sent[-1].queue_vehicles == 4
    for n in [3] * 9:  # below the hysteresis, but not for release_s yet
        at(t_index * DT, n)
        t_index += 1
    assert r.sent[-1].state == "active"
    out = at(t_index * DT, 3)
    assert [(e.state, e.event_id) for e in out] == [("cancelled", start.event_id)]


def test_a_queue_of_one_is_cancelled_when_empty(calibration: GroundCalibration) -> None:
    r = road([QUEUE], calibration, queue_vehicles=1, queue_hysteresis=3, release_s=0.0)
    car = make_track(1)
    for t in times(10):
        r.step(t, [place(car, t, 500.0, 200.0)])
    out = r.step(1.0, [], ended=[car])
    assert [e.state for e in r.sent] == ["active", "cancelled"]
    assert out[0].queue_vehicles == 1  # the cancel says what the queue was


# --- the monitor's side --------------------------------------------------------------------


def test_holding_follows_the_condition_and_refuses_unknown_zones() -> None:
    monitor = ZoneMonitor([NS], stopped_after_s=0.5)
    car = make_track(1)
    for t in times(12):
        monitor.update([place(car, t, 200.0, 250.0)], t)
    assert monitor.holding("stopped_vehicle", "ns", 1)
    assert not monitor.holding("stopped_vehicle", "ns", 2)
    assert not monitor.holding("wrong_way", "ns", 1)
    monitor.update([place(car, 1.2, 400.0, 250.0)], 1.2)  # left the zone
    assert not monitor.holding("stopped_vehicle", "ns", 1)
    with pytest.raises(ValueError, match="no zone named 'nowhere'"):
        monitor.holding("stopped_vehicle", "nowhere", 1)


@pytest.mark.parametrize(
    ("kwargs", "why"),
    [
        ({"queue_vehicles": 0}, "queue_vehicles"),
        ({"queue_hysteresis": -1}, "queue_hysteresis"),
        ({"resend_s": 0.0}, "resend_s"),
        ({"resend_s": math.nan}, "resend_s"),
        ({"release_s": -1.0}, "release_s"),
        ({"id_space": 0}, "id_space"),
    ],
)
def test_bad_settings_are_refused(kwargs: dict[str, float], why: str) -> None:
    with pytest.raises(AnalyticsConfigError, match=why):
        RoadsideEvents(ZoneMonitor([NS]), None, **kwargs)  # type: ignore[arg-type]


# --- every event that starts ends exactly once ---------------------------------------------

#: m/s along x or y: mostly standing (a queue, a stopped car), creeping, walking, driving.
SPEEDS = st.sampled_from([0.0, 0.0, 0.0, 0.3, -0.3, 1.5, -1.5, 6.0, -6.0])


@dataclass
class Plan:
    """One synthetic track: its class, the steps it lives in, where it starts, how it moves."""

    cls: str
    born: int
    ends: int  # the step at which the tracker reports it ended (>= STEPS: closed instead)
    x: float
    y: float
    velocities: list[tuple[float, float]]  # m/s per step (10 px a metre), the last one kept


STEPS = 80


@st.composite
def histories(draw: st.DrawFn) -> list[Plan]:
    plans = []
    for _ in range(draw(st.integers(1, 8))):
        born = draw(st.integers(0, 30))
        segments = draw(
            st.lists(st.tuples(st.integers(3, 30), SPEEDS, SPEEDS), min_size=1, max_size=5)
        )
        plans.append(
            Plan(
                cls=draw(st.sampled_from(["car", "car", "car", "person", "bicycle"])),
                born=born,
                ends=draw(st.one_of(st.just(STEPS), st.integers(born + 1, STEPS))),
                x=draw(st.floats(90.0, 550.0)),
                y=draw(st.floats(90.0, 310.0)),
                velocities=[(vx, vy) for n, vx, vy in segments for _ in range(n)],
            )
        )
    return plans


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    histories(),
    st.booleans(),
    st.sampled_from([0.0, 0.3, 1.0]),
    st.sampled_from([0.3, 1.0]),
    st.integers(1, 3),
    st.integers(0, 2),
    st.sampled_from([2, 256]),
    st.integers(1, 3),
)
def test_every_event_that_starts_is_cancelled_exactly_once(
    history: list[Plan],
    calibrated: bool,
    release_s: float,
    resend_s: float,
    queue_vehicles: int,
    queue_hysteresis: int,
    id_space: int,
    every: int,
) -> None:
    """Random tracks stopping, moving, turning, entering and leaving zones, ending or not:
    every event id's messages are active ones then exactly one cancel, about one thing, with
    no message about a track after it ended and nothing alive unheard for over resend_s.

    The events may run slower than the monitor (``every`` monitor steps, e.g. at the message
    rate while the monitor runs per frame), with the zone events and ended tracks gathered
    in between."""
    calibration = GroundCalibration(IMAGE_QUAD, GROUND_QUAD) if calibrated else None
    monitor = ZoneMonitor(
        [NS, ROAD, LANE, QUEUE],
        calibration=calibration,
        stopped_after_s=0.3,
        pedestrian_after_s=0.2,
        wrong_way_after_s=0.2,
    )
    events = RoadsideEvents(
        monitor,
        calibration,
        queue_vehicles=queue_vehicles,
        queue_hysteresis=queue_hysteresis,
        resend_s=resend_s,
        release_s=release_s,
        id_space=id_space,
    )
    tracks = [make_track(i, plan.cls) for i, plan in enumerate(history)]
    sent: list[tuple[int, RoadsideEvent]] = []
    ended_at: dict[int, int] = {}
    where = {track.id: (plan.x, plan.y) for plan, track in zip(history, tracks, strict=True)}
    raised: list[ZoneEvent] = []
    gone: list[Track] = []
    for step in range(STEPS):
        t = round(step * DT, 6)
        live: list[Track] = []
        for plan, track in zip(history, tracks, strict=True):
            if plan.born <= step < plan.ends:
                vx, vy = plan.velocities[min(step - plan.born, len(plan.velocities) - 1)]
                x, y = where[track.id]
                where[track.id] = (x + vx * DT * 10.0, y + vy * DT * 10.0)
                live.append(place(track, t, *where[track.id]))
        ended = [track for plan, track in zip(history, tracks, strict=True) if plan.ends == step]
        raised += monitor.update(live, t)
        monitor.finish(ended)
        gone += ended
        ended_at.update({track.id: step for track in ended})
        if step % every == 0:
            out = events.update(raised, live, t)
            out += events.finish(gone)
            raised, gone = [], []
            sent += [(step, e) for e in out]
    sent += [(STEPS, e) for e in events.close(STEPS * DT)]

    open_: dict[int, RoadsideEvent] = {}  # event_id: its first message
    last_sent: dict[int, float] = {}
    starts = cancels = 0
    for step, e in sent:
        about = (e.kind, e.zone, e.track_id)
        if e.track_id is not None and e.track_id in ended_at:
            assert step < ended_at[e.track_id] + every, "a message about a track after it ended"
        first = open_.get(e.event_id)
        if e.state == "active":
            if first is None:
                open_[e.event_id] = e
                starts += 1
            else:
                assert (first.kind, first.zone, first.track_id) == about, "id shared"
                assert e.t_s - last_sent[e.event_id] >= resend_s - 1e-6
                assert e.started_t_s == first.started_t_s
            last_sent[e.event_id] = e.t_s
        else:
            assert first is not None, "a cancel without an active event"
            assert (first.kind, first.zone, first.track_id) == about
            del open_[e.event_id]
            cancels += 1
        for other_id in open_:  # nothing alive goes unheard for long
            if other_id != e.event_id:
                assert e.t_s - last_sent[other_id] <= resend_s + every * DT + 1e-6
    assert open_ == {}
    assert starts == cancels == events.counts.started == events.counts.cancelled
    assert events.active() == []
