"""Ground calibration and speed, zones (occupancy, dwell, queue, events) and their config errors."""

from __future__ import annotations

import random
from collections.abc import Callable

import numpy as np
import pytest

from helpers.road_users import make_track, place
from smartpole.models.calibration import GroundCalibration, homography
from smartpole.models.counting import CountingLine, LineCounter
from smartpole.models.errors import AnalyticsConfigError
from smartpole.models.tracker import Track
from smartpole.models.zones import Zone, ZoneEvent, ZoneMonitor

DT = 0.04  # 25 fps

# Ground (metres: x across the road, y along it away from the camera) to image pixels, for a
# camera looking down a road: x = 0 maps to the image centre column, the horizon is at v = 40.
GROUND_TO_IMAGE = np.array([[40.0, 25.6, 320.0], [0.0, 3.2, 340.0], [0.0, 0.08, 1.0]])
GROUND_QUAD = [(-3.5, 0.0), (3.5, 0.0), (3.5, 30.0), (-3.5, 30.0)]


def to_image(x: float, y: float) -> tuple[float, float]:
    u, v, w = GROUND_TO_IMAGE @ np.array([x, y, 1.0])
    return (float(u / w), float(v / w))


IMAGE_QUAD = [to_image(x, y) for x, y in GROUND_QUAD]


@pytest.fixture
def calibration() -> GroundCalibration:
    return GroundCalibration(IMAGE_QUAD, GROUND_QUAD)


def standing(x: float, y: float) -> Callable[[float], tuple[float, float] | None]:
    """The path of something that stays at ``(x, y)``."""
    return lambda _t: (x, y)


def drive(
    monitor: ZoneMonitor,
    paths: list[tuple[Track, Callable[[float], tuple[float, float] | None]]],
    until: float,
) -> list[ZoneEvent]:
    """Step every track along its path (None: not visible) and the monitor, at 25 fps."""
    events: list[ZoneEvent] = []
    for i in range(round(until / DT) + 1):
        t = i * DT
        visible = []
        for track, path in paths:
            where = path(t)
            if where is not None:
                visible.append(place(track, t, *where))
        events += monitor.update(visible, t)
    return events


# --- calibration ------------------------------------------------------------------------------


def test_homography_round_trip(calibration: GroundCalibration) -> None:
    expected = np.linalg.inv(GROUND_TO_IMAGE)
    np.testing.assert_allclose(calibration.matrix, expected / expected[2, 2], atol=1e-9)
    rng = np.random.default_rng(3)
    image = np.column_stack([rng.uniform(0, 640, 200), rng.uniform(60, 352, 200)])
    ground = calibration.to_ground(image)
    assert np.isfinite(ground).all()
    np.testing.assert_allclose(calibration.to_image(ground), image, atol=1e-6)
    for (x, y), point in zip(GROUND_QUAD, IMAGE_QUAD, strict=True):
        assert calibration.ground_point(*point) == pytest.approx((x, y), abs=1e-9)


def test_dlt_recovers_a_homography_from_more_points() -> None:
    rng = np.random.default_rng(5)
    ground = rng.uniform(-5, 40, (12, 2))
    image = np.array([to_image(x, y) for x, y in ground])
    matrix = homography(image, ground)
    expected = np.linalg.inv(GROUND_TO_IMAGE)
    np.testing.assert_allclose(matrix, expected / expected[2, 2], atol=1e-8)


def test_points_at_or_above_the_horizon_have_no_ground_position(
    calibration: GroundCalibration,
) -> None:
    assert calibration.ground_point(320, 40) is None
    assert calibration.ground_point(320, 10) is None
    assert calibration.ground_point(320, 300) is not None


@pytest.mark.parametrize(
    ("image", "ground", "why"),
    [
        ([(0, 0), (10, 0), (20, 0), (0, 10)], GROUND_QUAD, "on one line"),
        ([(0, 0), (0, 0), (10, 10), (0, 10)], GROUND_QUAD, "the same"),
        (IMAGE_QUAD, [(-3.5, 0), (3.5, 30), (3.5, 0), (-3.5, 30)], "convex quadrilateral in order"),
        (IMAGE_QUAD[:3], GROUND_QUAD, "expected 4"),
        (IMAGE_QUAD, [(0, 0), (1, 0), (1, 1), (0, float("nan"))], "finite"),
        ([(0, 0), (100, 0), (40, 10), (60, 10)], GROUND_QUAD, "order"),
    ],
)
def test_degenerate_calibrations_are_refused(
    image: list[tuple[float, float]], ground: list[tuple[float, float]], why: str
) -> None:
    with pytest.raises(AnalyticsConfigError, match=why):
        GroundCalibration(image, ground)


def _drive_at(speed_kmh: float, jitter_px: float, seconds: float = 2.0) -> Track:
    rng = random.Random(11)
    track = make_track()
    v = speed_kmh / 3.6
    for i in range(round(seconds / DT) + 1):
        t = i * DT
        u, w = to_image(1.75, 5.0 + v * t)
        place(
            track, t, u + rng.uniform(-jitter_px, jitter_px), w + rng.uniform(-jitter_px, jitter_px)
        )
    return track


@pytest.mark.parametrize("speed", [10.0, 50.0, 90.0])
def test_speed_of_a_synthetic_track_within_two_percent(
    calibration: GroundCalibration, speed: float
) -> None:
    assert calibration.speed_kmh(_drive_at(speed, 0.0)) == pytest.approx(speed, rel=1e-6)
    assert calibration.speed_kmh(_drive_at(speed, 0.5)) == pytest.approx(speed, rel=0.02)


def test_speed_needs_half_a_second_of_track(calibration: GroundCalibration) -> None:
    assert calibration.speed_kmh(_drive_at(50.0, 0.0, seconds=0.4)) is None
    assert calibration.speed_kmh(_drive_at(50.0, 0.0, seconds=0.52)) is not None


def test_crossings_carry_the_ground_speed(calibration: GroundCalibration) -> None:
    # Toward the camera at 36 km/h across a line 10 m out.
    track = make_track()
    y_line = to_image(0.0, 10.0)[1]
    counter = LineCounter(
        CountingLine("l", (100.0, y_line), (600.0, y_line)), calibration=calibration
    )
    crossings = []
    for i in range(60):
        place(track, i * DT, *to_image(-1.75, 20.0 - 10.0 * i * DT))
        crossings += counter.update([track])
    assert [c.direction for c in crossings] == ["in"]
    assert crossings[0].speed_kmh == pytest.approx(36.0, rel=0.02)
    assert crossings[0].t_s == pytest.approx(1.0, abs=DT)


# --- zones: configuration -------------------------------------------------------------------

SQUARE = [(100.0, 100.0), (300.0, 100.0), (300.0, 300.0), (100.0, 300.0)]


@pytest.mark.parametrize(
    ("kwargs", "why"),
    [
        ({"polygon": [(0, 0), (10, 0)]}, "at least 3 points"),
        ({"polygon": [(0, 0), (10, 10), (20, 20)]}, "zero area"),
        ({"polygon": [(0, 0), (10, 0), (10, 0), (0, 0)]}, "zero area"),
        ({"polygon": [(0, 0), (10, 0), (0, float("inf"))]}, "finite"),
        ({"polygon": SQUARE, "kind": "parking"}, "unknown kind"),
        ({"polygon": SQUARE, "direction": (0.0, 0.0)}, "non-zero"),
        ({"polygon": SQUARE, "kind": "queue"}, "needs a stop_line"),
        ({"polygon": SQUARE, "kind": "queue", "stop_line": ((1, 1), (1, 1))}, "same point"),
    ],
)
def test_bad_zones_are_refused(kwargs: dict[str, object], why: str) -> None:
    with pytest.raises(AnalyticsConfigError, match=why):
        Zone(name="z", **kwargs)  # type: ignore[arg-type]


def test_zones_outside_the_frame_are_refused() -> None:
    zone = Zone("z", [(100, 100), (700, 100), (700, 300)])
    with pytest.raises(AnalyticsConfigError, match=r"\(700, 100\) is outside the 640x352 frame"):
        zone.validate(640, 352)
    Zone("ok", [(0, 0), (640, 0), (640, 352)]).validate(640, 352)
    with pytest.raises(AnalyticsConfigError, match="unique"):
        ZoneMonitor([Zone("a", SQUARE), Zone("a", SQUARE)])


# --- zones: occupancy and dwell ----------------------------------------------------------------


def test_occupancy_and_dwell() -> None:
    monitor = ZoneMonitor([Zone("z", SQUARE)])
    car = make_track(1)
    # Inside from t = 1 to t = 3 (moving right through the square), then gone right.
    drive(monitor, [(car, lambda t: (20.0 + 100.0 * t, 200.0))], until=4.0)
    assert monitor.occupancy()["z"] == pytest.approx(0.5, abs=0.02)
    assert monitor.occupied() == {"z": False}
    (dwell,) = monitor.take_dwells()
    assert (dwell.zone, dwell.track_id, dwell.class_name) == ("z", 1, "car")
    assert dwell.entered_s == pytest.approx(0.84, abs=DT)
    assert dwell.dwell_s == pytest.approx(2.0, abs=0.1)
    assert monitor.take_dwells() == []


def test_dwell_closes_when_the_track_ends_inside() -> None:
    monitor = ZoneMonitor([Zone("z", SQUARE)])
    person = make_track(2, "person")
    drive(monitor, [(person, lambda t: (200.0, 200.0))], until=5.0)
    assert monitor.occupied() == {"z": True}
    monitor.finish([person])
    (dwell,) = monitor.take_dwells()
    assert dwell.dwell_s == pytest.approx(5.0)
    assert dwell.class_name == "person"


# --- queue ---------------------------------------------------------------------------------


def test_queue_counts_stopped_vehicles_and_the_farthest_distance() -> None:
    zone = Zone("q", [(100, 100), (400, 100), (400, 310), (100, 310)], "queue",
                stop_line=((100.0, 300.0), (400.0, 300.0)))  # fmt: skip
    monitor = ZoneMonitor([zone])
    paths: list[tuple[Track, Callable[[float], tuple[float, float] | None]]] = [
        (make_track(i), standing(250.0, y)) for i, y in [(1, 290.0), (2, 240.0), (3, 190.0)]
    ]
    paths.append((make_track(4), lambda t: (150.0, 120.0 + 60.0 * t)))  # moving
    paths.append((make_track(5, "person"), lambda t: (350.0, 150.0)))
    drive(monitor, paths, until=2.0)
    queue = monitor.queues()["q"]
    assert (queue.vehicles, queue.unit) == (3, "px")
    assert queue.length == pytest.approx(110.0)


def test_queue_length_in_metres_with_a_calibration(calibration: GroundCalibration) -> None:
    stop = (to_image(-3.5, 5.0), to_image(3.5, 5.0))
    polygon = [to_image(-3.5, 4.0), to_image(3.5, 4.0), to_image(3.5, 40.0), to_image(-3.5, 40.0)]
    monitor = ZoneMonitor([Zone("q", polygon, "queue", stop_line=stop)], calibration=calibration)
    cars: list[tuple[Track, Callable[[float], tuple[float, float] | None]]] = [
        (make_track(i), standing(*to_image(1.75, 5.0 + 6.5 * i))) for i in range(1, 5)
    ]
    drive(monitor, cars, until=1.5)
    queue = monitor.queues()["q"]
    assert (queue.vehicles, queue.unit) == (4, "m")
    assert queue.length == pytest.approx(26.0, abs=1e-6)


# --- events ---------------------------------------------------------------------------------


def test_stopped_vehicle_in_a_no_stopping_zone_after_30_s_once() -> None:
    monitor = ZoneMonitor([Zone("ns", SQUARE, "no_stopping")])
    car = make_track(1)
    short = make_track(2)
    person = make_track(3, "person")
    events = drive(
        monitor,
        [
            (car, lambda t: (120.0 + min(t, 2.0) * 40.0, 200.0)),  # stops at t = 2 and stays
            (short, lambda t: (250.0, 150.0) if t < 25.0 else (250.0 + (t - 25) * 200, 150.0)),
            (person, lambda t: (150.0, 280.0)),
        ],
        until=40.0,
    )
    assert [(e.kind, e.track_id) for e in events] == [("stopped_vehicle", 1)]
    assert 32.0 < events[0].t_s < 33.5
    assert events[0].duration_s > 30.0
    assert events[0].to_dict()["type"] == "stopped_vehicle"


def test_pedestrian_on_the_carriageway_for_more_than_a_second() -> None:
    monitor = ZoneMonitor([Zone("road", SQUARE, "carriageway")])
    walker = make_track(1, "person")
    quick = make_track(2, "person")
    car = make_track(3)
    events = drive(
        monitor,
        [
            (walker, lambda t: (110.0 + 50.0 * t, 200.0)),  # 4 s across the square
            (quick, lambda t: (200.0, 60.0 + 400.0 * t)),  # 0.5 s inside
            (car, lambda t: (200.0, 250.0)),
        ],
        until=5.0,
    )
    assert [(e.kind, e.track_id) for e in events] == [("pedestrian_on_carriageway", 1)]
    assert events[0].t_s == pytest.approx(1.0 + DT, abs=DT)


def test_wrong_way_against_the_zones_direction() -> None:
    lane = Zone("lane", [(0, 0), (640, 0), (640, 352), (0, 352)], direction=(0.0, 1.0))
    monitor = ZoneMonitor([lane])
    wrong = make_track(1)
    right = make_track(2)
    slow = make_track(3)
    events = drive(
        monitor,
        [
            (wrong, lambda t: (200.0, 330.0 - 60.0 * t)),  # up the image: against "down"
            (right, lambda t: (400.0, 20.0 + 60.0 * t)),
            (slow, lambda t: (500.0, 300.0 - 2.0 * t)),  # creeping back: stopped, not wrong way
        ],
        until=4.0,
    )
    assert [(e.kind, e.track_id) for e in events] == [("wrong_way", 1)]
    assert 1.0 < events[0].t_s < 2.0


def test_wrong_way_on_the_ground_plane(calibration: GroundCalibration) -> None:
    polygon = [to_image(-3.5, 1.0), to_image(0.0, 1.0), to_image(0.0, 40.0), to_image(-3.5, 40.0)]
    # Allowed: toward the camera (down the image); drawn as an image direction.
    lane = Zone("left-lane", polygon, direction=(0.0, 1.0))
    monitor = ZoneMonitor([lane], calibration=calibration)
    wrong = make_track(1)
    right = make_track(2)
    events = drive(
        monitor,
        [
            (wrong, lambda t: to_image(-1.75, 5.0 + 8.0 * t)),  # driving away in this lane
            (right, lambda t: to_image(-2.5, 30.0 - 8.0 * t)),
        ],
        until=3.0,
    )
    assert [(e.kind, e.track_id) for e in events] == [("wrong_way", 1)]
