"""The participant estimator on synthetic tracks seen through a known camera.

A pinhole camera 8 m up a pole, looking north down the road, gives the homography exactly;
road users move on the ground at known velocities, their bottom-centres are projected into
the image with pixel noise and handed over as ``Track.points`` at the detector's cadence
(every 4th frame at 25 fps), while the estimator is updated on every frame as the worker
does. The truth is the ground trajectory itself.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers.road_users import make_track
from smartpole.models.calibration import GroundCalibration
from smartpole.models.ground_kalman import GroundKalman
from smartpole.models.participants import SIZE_PRIORS_M, ParticipantEstimator
from smartpole.models.roadside import Participant
from smartpole.models.tracker import Track

FPS = 25.0
DETECT_EVERY = 4  # the pipeline's 0.16 s cadence at 25 fps
POLE_H = 8.0
PITCH = math.radians(20.0)
FOCAL = 1000.0
CX, CY = 640.0, 360.0


def project(e: float, n: float) -> tuple[float, float]:
    """Pixel of the ground point (east, north) for a camera at the pole looking north."""
    zc = n * math.cos(PITCH) + POLE_H * math.sin(PITCH)
    yc = -n * math.sin(PITCH) + POLE_H * math.cos(PITCH)
    return (CX + FOCAL * e / zc, CY + FOCAL * yc / zc)


def px_per_m(n: float) -> float:
    return FOCAL / (n * math.cos(PITCH) + POLE_H * math.sin(PITCH))


GROUND = [(-6.0, 12.0), (6.0, 12.0), (6.0, 50.0), (-6.0, 50.0)]
CALIBRATION = GroundCalibration([project(*g) for g in GROUND], GROUND)

Trajectory = Callable[[float], tuple[float, float]]


def line(e0: float, n0: float, ve: float, vn: float) -> Trajectory:
    return lambda t: (e0 + ve * t, n0 + vn * t)


def car_box(x: float, y: float, n: float) -> tuple[float, float, float, float]:
    """A car-sized box (2 m wide, 1.5 m high at its distance) standing on (x, y)."""
    scale = px_per_m(n)
    return (x - scale, y - 1.5 * scale, x + scale, y)


@dataclass
class Run:
    """What a simulation produced: the participants of every 10 Hz tick, and the raw points."""

    ticks: list[tuple[float, list[Participant]]]
    raw: list[tuple[float, float, float]]  # (t, east, north) of each noisy point, mapped
    estimator: ParticipantEstimator


def simulate(
    trajectory: Trajectory,
    *,
    seconds: float,
    noise_px: float,
    seed: int = 1,
    estimator: ParticipantEstimator | None = None,
    skip: Callable[[int], bool] = lambda frame: False,
) -> Run:
    """Drive one car track along ``trajectory``: detected every 4th frame (unless ``skip``),
    estimator updated every frame, participants taken every 0.1 s."""
    rng = random.Random(seed)
    estimator = estimator if estimator is not None else ParticipantEstimator(CALIBRATION)
    track: Track | None = None
    ticks: list[tuple[float, list[Participant]]] = []
    raw: list[tuple[float, float, float]] = []
    next_tick = 0.0
    for frame in range(int(seconds * FPS)):
        t = frame / FPS
        e, n = trajectory(t)
        if frame % DETECT_EVERY == 0 and not skip(frame):
            x, y = project(e, n)
            x, y = x + rng.gauss(0, noise_px), y + rng.gauss(0, noise_px)
            box = car_box(x, y, n)
            if track is None:
                track = make_track(1, box=box)
            track.box = box
            track.points.append((t, x, y))
            track.last_seen_s = t
            mapped = CALIBRATION.ground_point(x, y)
            if mapped is not None:
                raw.append((t, *mapped))
        estimator.update([track] if track is not None else [], t)
        if t >= next_tick - 1e-9:
            ticks.append((t, estimator.participants(t)))
            next_tick += 0.1
    return Run(ticks, raw, estimator)


def errors_after(
    run: Run, trajectory: Trajectory, speed: float, settle_s: float
) -> tuple[list[float], list[float]]:
    """Position and speed errors of every participant reported after ``settle_s``."""
    pos: list[float] = []
    spd: list[float] = []
    for t, participants in run.ticks:
        if t < settle_s:
            continue
        for p in participants:
            e, n = trajectory(p.t_s)
            pos.append(math.hypot(p.east_m - e, p.north_m - n))
            spd.append(abs(p.speed_ms - speed))
    return pos, spd


# --- convergence and smoothing ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "trajectory", "speed"),
    [
        ("across", line(-15.0, 20.0, 10.0, 0.0), 10.0),
        ("away", line(-1.5, 12.0, 0.0, 9.0), 9.0),
        ("diagonal towards", line(8.0, 45.0, -3.0, -8.0), math.hypot(3.0, 8.0)),
        ("pedestrian", line(-4.0, 15.0, 1.2, 0.5), 1.3),
    ],
)
def test_clean_case_converges_to_true_position_and_speed(
    name: str, trajectory: Trajectory, speed: float
) -> None:
    pos: list[float] = []
    spd: list[float] = []
    for seed in range(4):
        run = simulate(trajectory, seconds=3.5, noise_px=0.5, seed=seed)
        more_pos, more_spd = errors_after(run, trajectory, speed, settle_s=1.5)
        assert len(more_pos) >= 18, name  # a participant at every tick
        pos += more_pos
        spd += more_spd
    assert max(pos) < 0.3, name
    assert max(spd) < 0.3, name


@pytest.mark.parametrize(
    ("trajectory", "heading", "within"),
    [
        (line(0.0, 15.0, 0.0, 8.0), 0.0, 3.0),
        (line(-10.0, 20.0, 8.0, 0.0), 90.0, 3.0),
        (line(0.0, 45.0, 0.0, -8.0), 180.0, 3.0),
        (line(10.0, 20.0, -8.0, 0.0), 270.0, 3.0),
        (line(-6.0, 14.0, 5.0, 5.0), 45.0, 3.0),
        # a pedestrian's walk has a heading too, if a rougher one
        (line(-4.0, 15.0, 1.3, 0.0), 90.0, 10.0),
        (line(3.0, 30.0, -0.9, -0.9), 225.0, 10.0),
    ],
)
def test_heading_is_degrees_clockwise_from_north(
    trajectory: Trajectory, heading: float, within: float
) -> None:
    run = simulate(trajectory, seconds=2.0, noise_px=0.5)
    t, participants = run.ticks[-1]
    (p,) = participants
    difference = (p.heading_deg - heading + 180.0) % 360.0 - 180.0
    assert abs(difference) < within, (t, p)


def test_smoothing_beats_the_raw_points() -> None:
    """With 2 px of noise, the filter's positions and speeds at the measurements' times are
    closer to the truth than the mapped points and the speeds between consecutive points
    (measured at the default tuning, 20 runs: 0.66 and 0.28 of the raw RMS error)."""
    trajectory = line(-12.0, 30.0, 8.0, 0.5)
    speed = math.hypot(8.0, 0.5)
    raw_pos: list[float] = []
    raw_speed: list[float] = []
    pos: list[float] = []
    spd: list[float] = []
    for seed in range(6):
        rng = random.Random(seed)
        estimator = ParticipantEstimator(CALIBRATION)
        track = make_track(1)
        previous: tuple[float, float] | None = None
        for i in range(25):
            t = i * 0.16
            e, n = trajectory(t)
            x, y = project(e, n)
            x, y = x + rng.gauss(0, 2.0), y + rng.gauss(0, 2.0)
            track.box = car_box(x, y, n)
            track.points.append((t, x, y))
            estimator.update([track], t)
            mapped = CALIBRATION.ground_point(x, y)
            assert mapped is not None
            if previous is not None and t >= 1.0:
                (p,) = estimator.participants(t)
                raw_pos.append(math.dist(mapped, (e, n)))
                raw_speed.append(math.dist(mapped, previous) / 0.16 - speed)
                pos.append(math.dist((p.east_m, p.north_m), (e, n)))
                spd.append(p.speed_ms - speed)
            previous = mapped

    def rms(values: list[float]) -> float:
        return math.sqrt(sum(v * v for v in values) / len(values))

    assert rms(pos) < 0.8 * rms(raw_pos)
    assert rms(spd) < 0.4 * rms(raw_speed)


def test_the_reported_accuracies_are_honest() -> None:
    """When the pixels jitter as much as the filter assumes, the errors match the reported
    sigmas: ~95 % of positions within 2 ``pos_sigma_m`` (the ellipse's semi-major axis,
    so a little conservative), speeds within 2 ``speed_sigma_ms`` (conservative for a
    constant speed: the filter allows for accelerations), and neither sigma inflated."""
    pos: list[float] = []
    spd: list[float] = []
    for trajectory, speed in ((line(-1.5, 12.0, 0.0, 9.0), 9.0), (line(-4.0, 15.0, 1.2, 0.5), 1.3)):
        for seed in range(4):
            estimator = ParticipantEstimator(CALIBRATION, pixel_sigma_px=1.5, box_sigma_share=0)
            run = simulate(trajectory, seconds=3.5, noise_px=1.5, seed=seed, estimator=estimator)
            for t, participants in run.ticks:
                for p in participants if t >= 1.0 else []:
                    error = math.dist((p.east_m, p.north_m), trajectory(p.t_s))
                    pos.append(error / p.pos_sigma_m)
                    spd.append(abs(p.speed_ms - speed) / p.speed_sigma_ms)
    assert sum(r <= 2.0 for r in pos) / len(pos) >= 0.9
    assert sum(r <= 2.0 for r in spd) / len(spd) >= 0.95
    assert 0.4 < sorted(pos)[len(pos) // 2] < 1.5
    assert sorted(spd)[len(spd) // 2] > 0.15


def test_far_road_users_are_trusted_less() -> None:
    """The same pixel noise covers more road far away: the reported sigma grows with range,
    and the error ellipse is long along the line of sight (the Jacobian, not a constant)."""
    near = simulate(line(0.0, 14.0, 0.0, 0.0), seconds=1.0, noise_px=0.0)
    far = simulate(line(0.0, 48.0, 0.0, 0.0), seconds=1.0, noise_px=0.0)
    (p_near,) = near.ticks[-1][1]
    (p_far,) = far.ticks[-1][1]
    assert p_far.pos_sigma_m > 3.0 * p_near.pos_sigma_m
    estimator = ParticipantEstimator(CALIBRATION, box_sigma_share=0.0)
    x, y = project(0.0, 48.0)
    mapped = estimator._ground(x, y, 1.0)
    assert mapped is not None
    _, _, r_ee, _, r_nn = mapped
    assert r_nn > 10.0 * r_ee  # 1 px across is centimetres, along the road decimetres


@settings(max_examples=100, deadline=None)
@given(x=st.floats(0.0, 1280.0), y=st.floats(120.0, 720.0), sigma=st.floats(0.1, 5.0))
def test_measurement_noise_is_the_pixel_noise_through_the_homography(
    x: float, y: float, sigma: float
) -> None:
    """R = sigma² J Jᵀ, with J the homography's Jacobian at the pixel (checked against
    central differences of the calibration's own mapping)."""
    estimator = ParticipantEstimator(CALIBRATION)
    mapped = estimator._ground(x, y, sigma * sigma)
    assert mapped is not None
    h = 1e-3
    columns = []
    for dx, dy in ((h, 0.0), (0.0, h)):
        ahead, behind = CALIBRATION.to_ground([(x + dx, y + dy), (x - dx, y - dy)])
        columns.append((ahead - behind) / (2 * h))
    jacobian = np.column_stack(columns)
    expected = sigma * sigma * jacobian @ jacobian.T
    r00, r01, r11 = mapped[2:]
    assert np.allclose([[r00, r01], [r01, r11]], expected, rtol=1e-4, atol=1e-12)
    assert mapped[:2] == pytest.approx(tuple(CALIBRATION.to_ground([(x, y)])[0]))


def test_a_still_road_user_has_speed_near_zero_and_keeps_its_last_heading() -> None:
    def stop(t: float) -> tuple[float, float]:
        """6 m/s east, braking at 3 m/s² from 1 s to a stop at 3 s."""
        braking = min(max(t - 1.0, 0.0), 2.0)
        return (-10.0 + 6.0 * min(t, 1.0) + 6.0 * braking - 1.5 * braking**2, 20.0)

    run = simulate(stop, seconds=5.0, noise_px=1.0)
    _, participants = run.ticks[-1]
    (p,) = participants
    assert p.speed_ms < 0.5
    assert abs(p.heading_deg - 90.0) < 5.0  # it was driving east when it stopped


def test_a_parked_car_is_reported_standing_still() -> None:
    """The length of a noisy velocity is biased upwards (a parked car's velocity is noise
    around zero, whose length averages ~1.25 sigma): the speed is corrected by the
    velocity's variance, so a stopped vehicle mostly reads 0, not a crawl."""
    speeds: list[float] = []
    for seed in range(4):
        run = simulate(line(2.0, 25.0, 0.0, 0.0), seconds=4.0, noise_px=1.5, seed=seed)
        speeds += [p.speed_ms for t, ps in run.ticks if t >= 1.0 for p in ps]
    speeds.sort()
    assert speeds[len(speeds) // 2] < 0.1
    assert speeds[int(0.95 * len(speeds))] < 0.5


# --- freshness: new points only, stale dropped, prediction capped ------------------------------


def test_only_new_points_are_consumed() -> None:
    """The worker updates on every frame but the detector adds a point only now and then:
    each point is filtered once, and the tracker's predictions in between (the moving
    ``box``) add nothing."""
    trajectory = line(-10.0, 20.0, 8.0, 0.0)
    run = simulate(trajectory, seconds=2.0, noise_px=1.0)
    assert run.estimator.stats.measurements == len(run.raw)
    estimator = ParticipantEstimator(CALIBRATION)
    x, y = project(0.0, 20.0)
    track = make_track(1, box=car_box(x, y, 20.0))
    track.points += [(0.0, x, y), (0.16, x + 5.0, y)]
    estimator.update([track], 0.16)
    before = estimator.participants(0.16)
    for frame in range(1, 4):  # predicted frames: the box moves on, no new point
        track.box = car_box(x + 5.0 + 2.0 * frame, y, 20.0)
        estimator.update([track], 0.16 + frame / FPS)
    track.points.append((0.16, x + 40.0, y))  # same time again: not a new measurement
    estimator.update([track], 0.3)
    assert estimator.participants(0.16) == before
    assert estimator.stats.measurements == 2


def test_all_points_of_a_newly_confirmed_track_are_used() -> None:
    estimator = ParticipantEstimator(CALIBRATION)
    x, y = project(0.0, 20.0)
    track = make_track(1, box=car_box(x, y, 20.0))
    track.confirmed = False
    track.points += [(0.0, x, y), (0.16, x + 30.0, y)]  # 30 px is ~0.67 m here
    estimator.update([track], 0.16)
    assert estimator.participants(0.16) == []  # tentative tracks are not road users yet
    track.confirmed = True
    track.points.append((0.32, x + 60.0, y))
    estimator.update([track], 0.32)
    assert estimator.stats.measurements == 3
    (p,) = estimator.participants(0.32)
    assert p.measured_t_s == 0.32
    assert p.speed_ms == pytest.approx(4.2, rel=0.1)


def test_a_stale_participant_is_dropped() -> None:
    trajectory = line(-10.0, 20.0, 8.0, 0.0)
    run = simulate(trajectory, seconds=1.0, noise_px=1.0)
    estimator = run.estimator
    (p,) = estimator.participants(0.96)
    last = p.measured_t_s
    assert len(estimator.participants(last + 0.2)) == 1
    assert estimator.participants(last + 0.2 + 1e-6) == []
    small = ParticipantEstimator(CALIBRATION, max_age_s=0.05)
    simulate(trajectory, seconds=1.0, noise_px=1.0, estimator=small)
    assert small.participants(last + 0.06) == []


def test_prediction_never_runs_more_than_one_period_past_the_measurement() -> None:
    trajectory = line(-10.0, 20.0, 8.0, 0.0)
    run = simulate(trajectory, seconds=1.0, noise_px=0.0)
    estimator = run.estimator
    (at_measurement,) = estimator.participants(0.96)
    last = at_measurement.measured_t_s
    (now,) = estimator.participants(last)
    (half,) = estimator.participants(last + 0.05)
    (capped,) = estimator.participants(last + 0.18)
    assert now.t_s == last
    assert half.t_s == pytest.approx(last + 0.05)
    assert capped.t_s == pytest.approx(last + 0.1)  # not 0.18
    assert capped.east_m - now.east_m == pytest.approx(0.1 * 8.0, abs=0.05)
    assert capped.pos_sigma_m >= now.pos_sigma_m
    assert estimator.participants(last - 0.05)[0].t_s == last  # never predicted backwards


def test_an_ended_track_is_dropped_and_forget_drops_one() -> None:
    estimator = ParticipantEstimator(CALIBRATION)
    tracks = []
    for i, e in enumerate((-5.0, 0.0, 5.0)):
        x, y = project(e, 20.0)
        track = make_track(i + 1, box=car_box(x, y, 20.0))
        track.points.append((0.0, x, y))
        tracks.append(track)
    estimator.update(tracks, 0.0)
    assert estimator.tracked == 3
    estimator.update(tracks[1:], 0.04)  # track 1 ended: the tracker no longer reports it
    assert sorted(p.track_id for p in estimator.participants(0.04)) == [2, 3]
    estimator.forget([2, 99])
    assert [p.track_id for p in estimator.participants(0.04)] == [3]


def test_points_above_the_horizon_are_counted_not_used() -> None:
    estimator = ParticipantEstimator(CALIBRATION)
    track = make_track(1, box=(600.0, 0.0, 680.0, 10.0))
    horizon_y = CY - FOCAL * math.tan(PITCH)
    track.points += [(0.0, 640.0, horizon_y - 20.0), (0.16, 640.0, float("nan"))]
    estimator.update([track], 0.16)
    assert estimator.participants(0.16) == []
    assert estimator.stats.off_ground == 2
    assert estimator.stats.measurements == 0


def test_a_point_off_the_ground_is_counted_once() -> None:
    """Points that give no ground position are looked at once, like the others: updating
    every frame neither counts them again nor rescans them."""
    estimator = ParticipantEstimator(CALIBRATION)
    above = CY - FOCAL * math.tan(PITCH) - 20.0
    x, y = project(0.0, 20.0)
    first = make_track(1, box=car_box(x, y, 20.0))  # measured, then lost above the horizon
    first.points.append((0.0, x, y))
    second = make_track(2, box=(600.0, above - 10.0, 680.0, above))  # never on the ground
    second.points.append((0.0, 640.0, above))
    for frame in range(1, 13):
        t = frame / FPS
        if frame % 4 == 0:
            first.points.append((t, 640.0, above))
            second.points.append((t, 640.0, above))
        estimator.update([first, second], t)
    assert estimator.stats.off_ground == 3 + 4
    assert estimator.stats.measurements == 1
    assert [p.track_id for p in estimator.participants(0.1)] == [1]


def test_an_identity_switch_restarts_the_filter() -> None:
    """A track that jumps to another road user 25 m away and stays there: the first point
    off the prediction is held back, the second confirms the jump and the filter restarts
    at it, instead of reporting positions in between and a huge speed."""
    estimator = ParticipantEstimator(CALIBRATION)
    track = make_track(1)
    for i in range(10):
        t = i * 0.16
        x, y = project(-5.0 + 5.0 * t, 20.0 if i < 8 else 45.0)
        track.points.append((t, x, y))
        estimator.update([track], t)
        if i == 8:
            (p,) = estimator.participants(t)
            assert p.north_m == pytest.approx(20.0, abs=0.5)  # one point is not a switch
    assert (estimator.stats.outliers, estimator.stats.resets) == (1, 1)
    (p,) = estimator.participants(9 * 0.16)
    assert p.north_m == pytest.approx(45.0, abs=0.5)
    assert p.speed_ms == 0.0  # a new road user: its speed and heading are not known yet
    assert p.heading_deg == 0.0


def test_a_single_wild_point_is_held_back() -> None:
    """One box whose bottom edge jumps (a bumper hidden by a passing car, a box merged with
    a shadow) must not throw the state off: the filter keeps its course."""
    trajectory = line(-10.0, 20.0, 8.0, 0.0)
    estimator = ParticipantEstimator(CALIBRATION)
    track = make_track(1)
    for i in range(16):
        t = i * 0.16
        e, n = trajectory(t)
        x, y = project(e, n + (15.0 if i == 10 else 0.0))
        track.box = car_box(x, y, n)
        track.points.append((t, x, y))
        estimator.update([track], t)
        (p,) = estimator.participants(t)
        assert math.dist((p.east_m, p.north_m), trajectory(t)) < 0.5, i
        if i > 5:
            assert p.speed_ms == pytest.approx(8.0, abs=0.3), i
    assert (estimator.stats.outliers, estimator.stats.resets) == (1, 0)


# --- size on the ground -------------------------------------------------------------------------


def edge_track(cls: str, e: float, n: float, half_extent_e: float) -> Track:
    """A still track whose box's bottom edge spans ``2 * half_extent_e`` metres east-west."""
    _, y = project(e, n)
    x0, _ = project(e - half_extent_e, n)
    x1, _ = project(e + half_extent_e, n)
    return make_track(1, cls, box=(x0, y - 50.0, x1, y))


@pytest.mark.parametrize(
    ("velocity", "extent", "expected"),
    [
        ((8.0, 0.0), 5.0, (5.0, 1.8)),  # seen from the side: the edge is the length
        ((-6.0, -6.0), 4.0, (4.5, 1.8)),  # diagonal: the edge mixes both, the class decides
        ((0.0, 8.0), 2.5, (4.5, 1.8)),  # from behind: the edge is (about) the width
        ((8.0, 0.0), 20.0, (9.0, 1.8)),  # a nonsense edge is clamped to twice the typical
    ],
)
def test_size_from_the_bottom_edge_and_the_class_prior(
    velocity: tuple[float, float], extent: float, expected: tuple[float, float]
) -> None:
    estimator = ParticipantEstimator(CALIBRATION)
    track = edge_track("car", 0.0, 20.0, extent / 2.0)
    for i in range(8):
        t = i * 0.16
        e, n = velocity[0] * t, 20.0 + velocity[1] * t
        x, y = project(e, n)
        x0, x1 = project(e - extent / 2.0, n)[0], project(e + extent / 2.0, n)[0]
        track.box = (x0, y - 50.0, x1, y)
        track.points.append((t, x, y))
        estimator.update([track], t)
    (p,) = estimator.participants(7 * 0.16)
    assert p.length_m == pytest.approx(expected[0], rel=0.02)
    assert p.width_m == pytest.approx(expected[1], rel=0.02)


def cuboid_box(
    e: float, n: float, heading: float, size: tuple[float, float, float]
) -> tuple[float, float, float, float]:
    """The image box of a ``length x width x height`` block standing on (e, n) (its centre),
    driving at ``heading``: what a detector's box around a real vehicle looks like."""
    length, width, height = size
    ue, un = math.sin(math.radians(heading)), math.cos(math.radians(heading))
    xs: list[float] = []
    ys: list[float] = []
    for a in (-length / 2, length / 2):
        for b in (-width / 2, width / 2):
            for h in (0.0, height):
                pe, pn = e + a * ue + b * un, n + a * un - b * ue
                zc = pn * math.cos(PITCH) + (POLE_H - h) * math.sin(PITCH)
                yc = -pn * math.sin(PITCH) + (POLE_H - h) * math.cos(PITCH)
                xs.append(CX + FOCAL * pe / zc)
                ys.append(CY + FOCAL * yc / zc)
    return (min(xs), min(ys), max(xs), max(ys))


@pytest.mark.parametrize(
    ("cls", "size", "heading", "north"),
    [
        ("car", (4.5, 1.8, 1.5), 90.0, 15.0),
        ("car", (4.5, 1.8, 1.5), 270.0, 30.0),
        ("car", (3.6, 1.6, 1.5), 90.0, 25.0),  # a small car is shorter than the typical
        ("truck", (11.0, 2.5, 3.5), 90.0, 20.0),
        ("car", (4.5, 1.8, 1.5), 0.0, 15.0),  # driving away: the class's length
    ],
)
def test_size_of_a_vehicle_seen_as_a_camera_sees_it(
    cls: str, size: tuple[float, float, float], heading: float, north: float
) -> None:
    """The box of a solid block (its roof and sides included): a side view gives the length
    within 15 %; the width, and the length seen end-on, are the class's."""
    estimator = ParticipantEstimator(CALIBRATION)
    track = make_track(1, cls, box=(0.0, 0.0, 1.0, 1.0))
    ue, un = math.sin(math.radians(heading)), math.cos(math.radians(heading))
    for i in range(12):
        t = i * 0.16
        e, n = -3.0 * ue + 8.0 * t * ue, north + 8.0 * t * un
        track.box = cuboid_box(e, n, heading, size)
        track.points.append((t, (track.box[0] + track.box[2]) / 2.0, track.box[3]))
        estimator.update([track], t)
    (p,) = estimator.participants(11 * 0.16)
    typical_length, typical_width = SIZE_PRIORS_M[cls]
    side_on = heading in (90.0, 270.0)
    assert p.length_m == pytest.approx(size[0] if side_on else typical_length, rel=0.15)
    assert p.width_m == typical_width


def test_a_road_user_that_never_moved_has_its_class_size() -> None:
    estimator = ParticipantEstimator(CALIBRATION)
    track = edge_track("bus", 0.0, 20.0, 4.0)
    x, y = project(0.0, 20.0)
    for i in range(5):
        track.points.append((i * 0.16, x, y))
        estimator.update([track], i * 0.16)
    (p,) = estimator.participants(0.64)
    assert (p.length_m, p.width_m) == SIZE_PRIORS_M["bus"]
    assert p.ptc_type == "motor"
    assert p.heading_deg == 0.0


# --- the hand-written algebra against the textbook matrices -------------------------------------


def reference_step(
    x: np.ndarray, p: np.ndarray, dt: float, q: float, z: np.ndarray, r: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """One textbook Kalman predict + update, with matrices."""
    f = np.eye(4)
    f[0, 2] = f[1, 3] = dt
    qb = q * np.array([[dt**3 / 3, dt**2 / 2], [dt**2 / 2, dt]])
    qm = np.zeros((4, 4))
    qm[np.ix_([0, 2], [0, 2])] = qb
    qm[np.ix_([1, 3], [1, 3])] = qb
    h = np.hstack([np.eye(2), np.zeros((2, 2))])
    x = f @ x
    p = f @ p @ f.T + qm
    s = h @ p @ h.T + r
    k = p @ h.T @ np.linalg.inv(s)
    x = x + k @ (z - h @ x)
    p = (np.eye(4) - k @ h) @ p
    return x, p


def _predicted_block(p: np.ndarray, dt: float, q: float) -> np.ndarray:
    """What predicting ``dt`` adds to the position block of ``p``."""
    f = np.eye(4)
    f[0, 2] = f[1, 3] = dt
    added: np.ndarray = (f @ p @ f.T)[:2, :2] - p[:2, :2] + q * dt**3 / 3 * np.eye(2)
    return added


def covariance(f: GroundKalman) -> np.ndarray:
    u = [f.p00, f.p01, f.p02, f.p03, f.p11, f.p12, f.p13, f.p22, f.p23, f.p33]
    m = np.zeros((4, 4))
    m[np.triu_indices(4)] = u
    return m + np.triu(m, 1).T


noise = st.tuples(st.floats(0.001, 4.0), st.floats(-0.9, 0.9), st.floats(0.001, 4.0)).map(
    lambda v: (v[0], v[1] * math.sqrt(v[0] * v[2]), v[2])
)


@settings(max_examples=150, deadline=None)
@given(
    steps=st.lists(
        st.tuples(st.floats(0.01, 0.5), st.floats(-30, 30), st.floats(-30, 30), noise),
        min_size=1,
        max_size=12,
    ),
    q=st.floats(0.1, 20.0),
)
def test_filter_equals_the_textbook_kalman_filter(
    steps: list[tuple[float, float, float, tuple[float, float, float]]], q: float
) -> None:
    f = GroundKalman()
    f.restart(0.0, 1.0, 2.0, 0.5, 0.1, 0.7)
    x = np.array([1.0, 2.0, 0.0, 0.0])
    p = covariance(f)
    for dt, ze, zn, (r00, r01, r11) in steps:
        ahead = f.distance2(dt, q, ze, zn, r00, r01, r11)
        f.predict(dt, q)
        d2 = f.correct(ze, zn, r00, r01, r11)
        assert ahead == pytest.approx(d2, rel=1e-6)
        z, r = np.array([ze, zn]), np.array([[r00, r01], [r01, r11]])
        x_prior, p_prior = x, p
        x, p = reference_step(x, p, dt, q, z, r)
        assert np.allclose([f.e, f.n, f.ve, f.vn], x, rtol=1e-6, atol=1e-6)
        assert np.allclose(covariance(f), p, rtol=1e-6, atol=1e-6)
        s = p_prior[:2, :2] + r + _predicted_block(p_prior, dt, q)
        y = z - (x_prior[:2] + dt * x_prior[2:])
        assert d2 == pytest.approx(float(y @ np.linalg.solve(s, y)), rel=1e-6)


# --- invariants ---------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    start=st.tuples(st.floats(-10, 10), st.floats(13, 45)),
    velocity=st.tuples(st.floats(-15, 15), st.floats(-5, 5)),  # stays in front of the pole
    noise_px=st.floats(0.0, 5.0),
    seed=st.integers(0, 1000),
    missing=st.sets(st.integers(0, 60), max_size=30),
    query_offsets=st.lists(st.floats(-0.3, 0.5), min_size=1, max_size=5),
    max_age=st.floats(0.05, 0.5),
    period=st.floats(0.0, 0.3),
)
def test_invariants_of_every_participant(
    start: tuple[float, float],
    velocity: tuple[float, float],
    noise_px: float,
    seed: int,
    missing: set[int],
    query_offsets: list[float],
    max_age: float,
    period: float,
) -> None:
    """Whatever the motion, noise and gaps: sigmas are finite and non-negative, the heading
    is in [0, 360), no participant is older than max_age or predicted past one period."""
    estimator = ParticipantEstimator(CALIBRATION, max_age_s=max_age, period_s=period)
    run = simulate(
        line(*start, *velocity),
        seconds=2.5,
        noise_px=noise_px,
        seed=seed,
        estimator=estimator,
        skip=lambda frame: frame // DETECT_EVERY in missing,
    )
    queries = [(t, ps) for t, ps in run.ticks]
    last_t = run.ticks[-1][0]
    queries += [(last_t + o, estimator.participants(last_t + o)) for o in query_offsets]
    for t, participants in queries:
        assert len(participants) <= 1
        for p in participants:
            assert t - p.measured_t_s <= max_age + 1e-9
            assert p.measured_t_s <= p.t_s <= p.measured_t_s + period + 1e-9
            assert 0.0 <= p.heading_deg < 360.0
            for value in (p.pos_sigma_m, p.speed_sigma_ms, p.speed_ms, p.length_m, p.width_m):
                assert math.isfinite(value)
                assert value >= 0.0
            assert p.pos_sigma_m > 0.0
            assert math.isfinite(p.east_m)
            assert math.isfinite(p.north_m)
