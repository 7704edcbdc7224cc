"""A constant-velocity Kalman filter on the ground plane, written out in plain floats.

The state is east, north and their rates (metres, m/s); a measurement is a ground position
with a full 2x2 noise covariance (the pixel noise through the homography's Jacobian is
elongated along the line of sight, so the axes are coupled and the noise is not one number
per axis). The process noise is white acceleration of spectral density ``q`` (m²/s³) on
each axis: ``Q = q [[dt³/3, dt²/2], [dt²/2, dt]]``.

Why not NumPy: the filter runs for every track each time the detector sees it, a few
hundred times a second in a camera worker, and for 4x4 matrices NumPy's per-call overhead
is ten times the arithmetic (3.5-4 us a predict + correct here, 44-46 us with matrices).
The symmetric covariance is kept as its upper triangle; ``tests/models/test_participants``
checks every step against the textbook matrix form.
"""

from __future__ import annotations

import math
from typing import Final

#: A filter starts at its first point with this velocity uncertainty (any road speed).
INITIAL_SPEED_SIGMA_MS: Final = 15.0


class GroundKalman:
    """State [east, north, v_east, v_north] at time ``t`` and its symmetric covariance.

    The covariance's upper triangle is ``p00 p01 p02 p03 p11 p12 p13 p22 p23 p33`` (0 east,
    1 north, 2 east rate, 3 north rate). Until ``restart`` (the first measurement) the
    filter is not ``started`` and its ``t`` is -inf.
    """

    __slots__ = (
        "e",
        "n",
        "p00",
        "p01",
        "p02",
        "p03",
        "p11",
        "p12",
        "p13",
        "p22",
        "p23",
        "p33",
        "started",
        "t",
        "ve",
        "vn",
    )

    def __init__(self) -> None:
        self.started = False
        self.t = -math.inf
        self.e = self.n = self.ve = self.vn = 0.0
        self.p00 = self.p01 = self.p02 = self.p03 = self.p11 = 0.0
        self.p12 = self.p13 = self.p22 = self.p23 = self.p33 = 0.0

    def restart(self, t: float, e: float, n: float, r00: float, r01: float, r11: float) -> None:
        """Start over at a measurement: its position and noise, velocity unknown."""
        v0 = INITIAL_SPEED_SIGMA_MS * INITIAL_SPEED_SIGMA_MS
        self.started = True
        self.t, self.e, self.n, self.ve, self.vn = t, e, n, 0.0, 0.0
        self.p00, self.p01, self.p11 = r00, r01, r11
        self.p02 = self.p03 = self.p12 = self.p13 = self.p23 = 0.0
        self.p22 = self.p33 = v0

    def predict(self, dt: float, q: float) -> None:
        """Move the state ``dt`` seconds on with white-noise acceleration of density ``q``."""
        p02, p03, p12, p13 = self.p02, self.p03, self.p12, self.p13
        p22, p23, p33 = self.p22, self.p23, self.p33
        q1 = q * dt
        q2 = q1 * dt / 2.0
        q3 = q1 * dt * dt / 3.0
        dt2 = dt * dt
        self.e += self.ve * dt
        self.n += self.vn * dt
        self.p00 += 2.0 * dt * p02 + dt2 * p22 + q3
        self.p01 += dt * (p03 + p12) + dt2 * p23
        self.p11 += 2.0 * dt * p13 + dt2 * p33 + q3
        self.p02 = p02 + dt * p22 + q2
        self.p03 = p03 + dt * p23
        self.p12 = p12 + dt * p23
        self.p13 = p13 + dt * p33 + q2
        self.p22 = p22 + q1
        self.p33 = p33 + q1

    def distance2(
        self, dt: float, q: float, ze: float, zn: float, r00: float, r01: float, r11: float
    ) -> float:
        """Mahalanobis² of a measurement from the state predicted ``dt`` on, which is left
        as it is (a point held back as an outlier must not age the measurement time)."""
        dt2 = dt * dt
        q3 = q * dt * dt2 / 3.0
        s00 = self.p00 + 2.0 * dt * self.p02 + dt2 * self.p22 + q3 + r00
        s01 = self.p01 + dt * (self.p03 + self.p12) + dt2 * self.p23 + r01
        s11 = self.p11 + 2.0 * dt * self.p13 + dt2 * self.p33 + q3 + r11
        det = s00 * s11 - s01 * s01
        if not det > 0.0:
            return math.inf
        y0, y1 = ze - self.e - self.ve * dt, zn - self.n - self.vn * dt
        return (y0 * y0 * s11 - 2.0 * y0 * y1 * s01 + y1 * y1 * s00) / det

    def correct(self, ze: float, zn: float, r00: float, r01: float, r11: float) -> float:
        """Fold in a position measurement with noise covariance R; return its Mahalanobis²."""
        p00, p01, p02, p03 = self.p00, self.p01, self.p02, self.p03
        p11, p12, p13 = self.p11, self.p12, self.p13
        s00, s01, s11 = p00 + r00, p01 + r01, p11 + r11
        det = s00 * s11 - s01 * s01
        if not det > 0.0:
            return math.inf
        i00, i01, i11 = s11 / det, -s01 / det, s00 / det
        y0, y1 = ze - self.e, zn - self.n
        d2 = y0 * (i00 * y0 + i01 * y1) + y1 * (i01 * y0 + i11 * y1)
        # Gain K = P[:, :2] S^-1, one row per state element.
        k00, k01 = p00 * i00 + p01 * i01, p00 * i01 + p01 * i11
        k10, k11 = p01 * i00 + p11 * i01, p01 * i01 + p11 * i11
        k20, k21 = p02 * i00 + p12 * i01, p02 * i01 + p12 * i11
        k30, k31 = p03 * i00 + p13 * i01, p03 * i01 + p13 * i11
        self.e += k00 * y0 + k01 * y1
        self.n += k10 * y0 + k11 * y1
        self.ve += k20 * y0 + k21 * y1
        self.vn += k30 * y0 + k31 * y1
        # P -= K H P, where H P is P's first two rows (p0j, p1j).
        self.p00 = p00 - k00 * p00 - k01 * p01
        self.p01 = p01 - k00 * p01 - k01 * p11
        self.p02 = p02 - k00 * p02 - k01 * p12
        self.p03 = p03 - k00 * p03 - k01 * p13
        self.p11 = p11 - k10 * p01 - k11 * p11
        self.p12 = p12 - k10 * p02 - k11 * p12
        self.p13 = p13 - k10 * p03 - k11 * p13
        self.p22 -= k20 * p02 + k21 * p12
        self.p23 -= k20 * p03 + k21 * p13
        self.p33 -= k30 * p03 + k31 * p13
        return d2


def major_variance(a: float, b: float, c: float) -> float:
    """The larger eigenvalue of the symmetric 2x2 [[a, b], [b, c]], never negative."""
    half = (a - c) / 2.0
    return max(0.0, (a + c) / 2.0 + math.sqrt(half * half + b * b))


def variance_along(a: float, b: float, c: float, ve: float, vn: float) -> float:
    """Variance of [[a, b], [b, c]] along (ve, vn); the larger axis for a zero vector."""
    length = math.hypot(ve, vn)
    if length <= 0.0:
        return major_variance(a, b, c)
    ue, un = ve / length, vn / length
    return max(0.0, a * ue * ue + 2.0 * b * ue * un + c * un * un)
