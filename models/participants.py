"""Road users as the roadside unit needs them: smoothed ground position, speed and heading.

The tracker gives a bottom-centre point in pixels each time the detector saw a road user
(every ~0.1-0.16 s while it moves, between them the tracker only predicts). This turns those
points into a ``roadside.Participant`` per confirmed track, in metres east/north of the pole:

* **A constant-velocity Kalman filter per track** in the ground frame (state east, north and
  their rates), with white-noise acceleration of ``accel_sigma_ms2`` as process noise. It
  consumes only the track's *new* points (time strictly after the last one consumed), never
  the tracker's predictions, so a state is always built from what the detector saw.
* **Measurement noise from pixels.** A box edge jitters by a pixel or two (and by a share
  of the box's height for a big, near box); that jitter is carried onto the ground through
  the Jacobian of the homography at the point. A far road user, where a pixel covers
  decimetres of road along the line of sight, is trusted less than a near one, and its
  error is correctly elongated away from the camera.
* **Outliers held back.** A point more than 10 sigma off the prediction (a bottom edge
  hidden for a frame, a box merged with a shadow) is not folded in; a second one in a row
  is another road user under the same track id, and the filter starts over there.
* **Speed, heading and accuracies** come from the state and its covariance: heading in
  degrees clockwise from north (the ground frame must be east/north, as a geo-calibrated
  camera's is), kept from the last time the road user clearly moved; ``pos_sigma_m`` is
  the semi-major axis of the position's one-sigma ellipse, ``speed_sigma_ms`` the
  standard deviation along the direction of travel. The speed is ``sqrt(|v|² - tr Pvv)``
  (0 when negative): the length of a noisy velocity is biased upwards by its variance, so
  without this a parked car reads ~0.5 m/s; at road speeds the correction is millimetres,
  at a walk about -0.1 m/s (the covariance allows for accelerations a steady walk lacks).
* **Size on the ground.** The box's bottom edge, mapped to the ground, spans about the
  footprint projected on that ground line: ``extent = length*|cos| + width*|sin|`` of the
  angle between the travel direction and the edge. Seen from the side (travel within ~30
  degrees of the edge) that gives the length, with the class's typical width
  (``SIZE_PRIORS_M``) for the small ``sin`` term; clamped to ``[0.5, 2]`` times the
  typical length and averaged over the track's life. The width is always the class's:
  head-on, the box's edge includes the body above the road, which a camera looking down
  sees wider than the footprint (+20-60 % near the pole in the synthetic views), while
  real widths vary little within a class; lengths vary a lot (a van, an articulated
  truck), and a side view measures them within ~10 %. Before the road user has moved (no
  heading) the typical size is reported.
* **Never stale, never far extrapolated.** ``participants(t_s)`` leaves out a road user
  whose last measurement is older than ``max_age_s`` and predicts the others at most
  ``period_s`` past their last measurement; ``Participant.t_s`` is the time the state is
  for (the asked time, or that cap).

Everything is plain Python floats (the filter itself is ``ground_kalman``): it runs for
every track at every frame of a 25 fps camera. Measured on the shared 2-core dev box (the
range is its load): ``update`` 6-16 us for a track with a new point, 0.2 us without; 40
tracks at 25 fps with the detector on every 4th frame 100-250 us a frame, under 1 % of a
720p frame's budget; ``participants`` 5-16 us a road user, 3.7 us of it building the
frozen ``Participant``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from smartpole.models.calibration import GroundCalibration
from smartpole.models.ground_kalman import GroundKalman, major_variance, variance_along
from smartpole.models.roadside import Participant, ptc_type_of
from smartpole.models.tracker import Track

#: Typical ground footprint (length, width) in metres of each detector class: a compact
#: car, a rigid truck, a city bus, a motorcycle, a bicycle, a person's stance.
SIZE_PRIORS_M: Final[dict[str, tuple[float, float]]] = {
    "car": (4.5, 1.8),
    "truck": (8.0, 2.5),
    "bus": (12.0, 2.55),
    "motorcycle": (2.1, 0.8),
    "bicycle": (1.8, 0.6),
    "person": (0.5, 0.5),
}
DEFAULT_SIZE_M: Final = (4.5, 1.8)
#: A measured length is kept within these multiples of the class's typical size.
SIZE_CLAMP: Final = (0.5, 2.0)
#: The edge measures the length when the travel direction is within ~30 degrees of it.
SIZE_VIEW_COSINE: Final = 0.85
#: The length is the mean of the measurements, then a moving average of this weight.
SIZE_MIN_WEIGHT: Final = 0.1
#: A road user faster than this, whose velocity's sideways sigma is under this share of
#: its speed (about 20 degrees: a pedestrian's velocity is known to ~0.4 m/s), has a
#: heading.
MOVING_MS: Final = 0.5
HEADING_SIGMA: Final = 0.35
#: A measurement this many squared sigmas (10) from the prediction is an outlier: a box
#: whose bottom edge jumped (occlusion, a merged shadow) is held back; a second one in a
#: row means the tracker swapped identities, and the filter restarts at it rather than
#: slewing across the road in between.
OUTLIER_MAHALANOBIS2: Final = 100.0


@dataclass
class EstimatorStats:
    """Counts for diagnostics: every point taken, and why any was not used."""

    #: Points with a ground position (the outliers among them).
    measurements: int = 0
    #: Points at or above the calibration's horizon (no ground position) or not finite.
    off_ground: int = 0
    #: Points held back because they lay far outside the prediction.
    outliers: int = 0
    #: Filters restarted because two points in a row did (an identity switch).
    resets: int = 0


class _Track(GroundKalman):
    """One track's filter and what the estimator keeps beside it."""

    __slots__ = (
        "class_name",
        "consumed",
        "heading",
        "heading_known",
        "length",
        "outlier",
        "seen",
        "sizes",
        "width",
    )

    def __init__(self, class_name: str) -> None:
        super().__init__()
        self.class_name = class_name
        self.heading = 0.0
        self.heading_known = False
        self.length, self.width = SIZE_PRIORS_M.get(class_name, DEFAULT_SIZE_M)
        self.sizes = 0
        self.seen = 0
        #: Whether the last point was held back as an outlier.
        self.outlier = False
        #: The time of the last point looked at, on the ground or not.
        self.consumed = -math.inf


class ParticipantEstimator:
    """Smoothed ground states of a camera's confirmed tracks; not thread-safe.

    ``calibration`` maps image pixels to metres east/north of the pole. ``max_age_s``: a
    road user not measured for longer is left out of ``participants``; ``period_s``: a state
    is never predicted further than this past its last measurement (the message period).
    ``pixel_sigma_px`` + ``box_sigma_share`` x box height (in quadrature) is the jitter of a
    measured bottom-centre; ``accel_sigma_ms2`` the acceleration the filter expects.
    """

    def __init__(
        self,
        calibration: GroundCalibration,
        *,
        max_age_s: float = 0.2,
        period_s: float = 0.1,
        pixel_sigma_px: float = 1.5,
        box_sigma_share: float = 0.02,
        accel_sigma_ms2: float = 1.0,
    ) -> None:
        if not (max_age_s > 0 and period_s >= 0 and pixel_sigma_px > 0):
            raise ValueError("max_age_s > 0, period_s >= 0 and pixel_sigma_px > 0 are needed")
        if not (box_sigma_share >= 0 and accel_sigma_ms2 > 0):
            raise ValueError("box_sigma_share >= 0 and accel_sigma_ms2 > 0 are needed")
        self._calibration = calibration
        self._m = tuple(float(v) for v in calibration.matrix.ravel())
        self._max_age_s = max_age_s
        self._period_s = period_s
        self._pixel_var = pixel_sigma_px * pixel_sigma_px
        self._box_share2 = box_sigma_share * box_sigma_share
        self._q = accel_sigma_ms2 * accel_sigma_ms2
        self._filters: dict[int, _Track] = {}
        self._generation = 0
        self.stats = EstimatorStats()

    @property
    def tracked(self) -> int:
        """How many tracks have a state (reported or not): the worker's memory, bounded by
        the live tracks."""
        return len(self._filters)

    def update(self, tracks: Sequence[Track], t_s: float) -> None:
        """Take the new measured points of the live tracks at stream time ``t_s``.

        ``tracks`` are the tracker's live tracks (tentative ones are passed over): a state
        whose track is no longer among them has ended and is dropped. Call it on every
        frame or only now and then: each point carries its own time and is used once, so
        ``t_s`` (the frame's time) changes nothing but says where the stream is.
        """
        self._generation += 1
        generation = self._generation
        filters = self._filters
        live = 0
        for track in tracks:
            if not track.confirmed:
                continue
            live += 1
            state = filters.get(track.id)
            if state is None:
                state = filters[track.id] = _Track(track.class_name)
            state.seen = generation
            points = track.points
            if not points or points[-1][0] <= state.consumed:
                continue  # the detector did not see it since: the tracker only predicted
            start = len(points) - 1
            after = state.consumed
            while start > 0 and points[start - 1][0] > after:
                start -= 1
            self._consume(track, points, start, state)
        if live < len(filters):
            for track_id in [k for k, f in filters.items() if f.seen != generation]:
                del filters[track_id]

    def forget(self, track_ids: Iterable[int]) -> None:
        """Drop the states of tracks that ended."""
        for track_id in track_ids:
            self._filters.pop(track_id, None)

    def participants(self, t_s: float) -> list[Participant]:
        """The road users measured within ``max_age_s`` of ``t_s``, predicted to ``t_s``
        but never more than ``period_s`` past their last measurement."""
        out: list[Participant] = []
        max_age, period, q = self._max_age_s, self._period_s, self._q
        for track_id, f in self._filters.items():
            age = t_s - f.t
            if age > max_age:
                continue
            dt = min(max(age, 0.0), period)
            q1 = q * dt
            dt2 = dt * dt
            p00 = f.p00 + 2.0 * dt * f.p02 + dt2 * f.p22 + q1 * dt2 / 3.0
            p01 = f.p01 + dt * (f.p03 + f.p12) + dt2 * f.p23
            p11 = f.p11 + 2.0 * dt * f.p13 + dt2 * f.p33 + q1 * dt2 / 3.0
            p22, p23, p33 = f.p22 + q1, f.p23, f.p33 + q1
            speed = math.hypot(f.ve, f.vn)
            # |v|² overestimates the squared speed by the velocity's variance on average:
            # take it off, or a parked car reads a crawl of ~1.25 sigma (see the docstring)
            unbiased = math.sqrt(max(0.0, speed * speed - f.p22 - f.p33))
            out.append(
                Participant(
                    track_id=track_id,
                    class_name=f.class_name,
                    ptc_type=ptc_type_of(f.class_name),
                    t_s=f.t + dt,
                    measured_t_s=f.t,
                    east_m=f.e + f.ve * dt,
                    north_m=f.n + f.vn * dt,
                    speed_ms=unbiased,
                    heading_deg=f.heading,
                    length_m=f.length,
                    width_m=f.width,
                    pos_sigma_m=math.sqrt(major_variance(p00, p01, p11)),
                    speed_sigma_ms=math.sqrt(variance_along(p22, p23, p33, f.ve, f.vn)),
                )
            )
        return out

    def _consume(
        self,
        track: Track,
        points: Sequence[tuple[float, float, float]],
        start: int,
        state: _Track,
    ) -> None:
        """Run the filter over ``points[start:]``; the box gives the pixel noise and size."""
        box = track.box
        height = max(0.0, box[3] - box[1])
        pixel_var = self._pixel_var + self._box_share2 * height * height
        q = self._q
        stats = self.stats
        for i in range(start, len(points)):
            t, x, y = points[i]
            if t <= state.consumed:
                continue
            state.consumed = t
            mapped = self._ground(x, y, pixel_var)
            if mapped is None:
                stats.off_ground += 1
                continue
            stats.measurements += 1
            e, n, r00, r01, r11 = mapped
            if not state.started:
                state.restart(t, e, n, r00, r01, r11)
                continue
            dt = t - state.t
            if state.distance2(dt, q, e, n, r00, r01, r11) > OUTLIER_MAHALANOBIS2:
                if state.outlier:  # the second in a row: another road user, start over
                    stats.resets += 1
                    state.restart(t, e, n, r00, r01, r11)
                    state.heading, state.heading_known, state.sizes = 0.0, False, 0
                    state.length, state.width = SIZE_PRIORS_M.get(state.class_name, DEFAULT_SIZE_M)
                else:
                    stats.outliers += 1
                state.outlier = not state.outlier
                continue
            state.outlier = False
            state.predict(dt, q)
            state.t = t
            state.correct(e, n, r00, r01, r11)
        if not state.started:
            return
        _heading(state)
        if track.class_name != state.class_name:
            state.class_name = track.class_name
            state.length, state.width = SIZE_PRIORS_M.get(track.class_name, DEFAULT_SIZE_M)
            state.sizes = 0
        _, x, y = points[-1]
        half = (box[2] - box[0]) / 2.0
        self._size(state, x - half, x + half, y)

    def _ground(
        self, x: float, y: float, pixel_var: float
    ) -> tuple[float, float, float, float, float] | None:
        """Ground (east, north) of a pixel and its noise covariance (r00, r01, r11).

        The Jacobian of ``u = (m0 x + m1 y + m2) / w``, ``v = (m3 x + m4 y + m5) / w`` is
        ``[[m0 - u m6, m1 - u m7], [m3 - v m6, m4 - v m7]] / w``; isotropic pixel noise
        ``s²`` becomes ``s² J Jᵀ`` on the ground.
        """
        point = self._calibration.ground_point(x, y)
        if point is None:
            return None
        u, v = point
        if not (math.isfinite(u) and math.isfinite(v)):
            return None
        m = self._m
        w = m[6] * x + m[7] * y + m[8]
        a, b = (m[0] - u * m[6]) / w, (m[1] - u * m[7]) / w
        c, d = (m[3] - v * m[6]) / w, (m[4] - v * m[7]) / w
        return (
            u,
            v,
            pixel_var * (a * a + b * b),
            pixel_var * (a * c + b * d),
            pixel_var * (c * c + d * d),
        )

    def _size(self, state: _Track, x0: float, x1: float, y: float) -> None:
        """Fold one view of the box's bottom edge into the track's length (see the module
        docstring: only a side view measures it; the width is always the class's)."""
        if not state.heading_known:
            return
        left = self._calibration.ground_point(x0, y)
        right = self._calibration.ground_point(x1, y)
        if left is None or right is None:
            return
        dx, dy = right[0] - left[0], right[1] - left[1]
        extent = math.hypot(dx, dy)
        if not extent > 0 or not math.isfinite(extent):
            return
        rad = math.radians(state.heading)
        ue, un = math.sin(rad), math.cos(rad)  # travel direction: clockwise from north
        along = abs(dx * ue + dy * un) / extent
        if along < SIZE_VIEW_COSINE:
            return  # head-on or diagonal: the edge is mostly the width, or both mixed
        prior_length, prior_width = SIZE_PRIORS_M.get(state.class_name, DEFAULT_SIZE_M)
        across = math.sqrt(max(0.0, 1.0 - along * along))
        length = (extent - prior_width * across) / along
        low, high = SIZE_CLAMP
        length = min(max(length, low * prior_length), high * prior_length)
        state.sizes += 1
        state.length += max(1.0 / state.sizes, SIZE_MIN_WEIGHT) * (length - state.length)


def _heading(state: _Track) -> None:
    """Take the heading from the velocity when it is clearly known: faster than
    ``MOVING_MS`` and with the velocity's sideways sigma under ``HEADING_SIGMA`` of it (a
    road user slowing to a stop keeps the heading it drove with, not the noise's)."""
    ve, vn = state.ve, state.vn
    speed = math.hypot(ve, vn)
    if speed < MOVING_MS:
        return
    ue, un = ve / speed, vn / speed
    # variance across the direction of travel: the normal (un, -ue) through Pvv
    across = state.p22 * un * un - 2.0 * state.p23 * ue * un + state.p33 * ue * ue
    if across > (HEADING_SIGMA * speed) ** 2:
        return
    heading = math.degrees(math.atan2(ve, vn)) % 360.0
    state.heading = heading if heading < 360.0 else 0.0  # -1e-17 % 360 is 360.0
    state.heading_known = True
