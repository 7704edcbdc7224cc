"""Rounding a reading to its point's resolution: on the grid, the nearest grid value, and
written with no more decimals than the resolution has (no 0.30000000000000004)."""

from __future__ import annotations

import math
from decimal import Decimal

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from smartpole.agent.core.point_meta import PointMeta, decimals_of, round_to, rounder

RESOLUTIONS = st.sampled_from([0.0001, 0.001, 0.01, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0])
READINGS = st.floats(min_value=-1e9, max_value=1e9, allow_nan=False, allow_infinity=False)


@given(value=READINGS, resolution=RESOLUTIONS)
@example(value=0.1 + 0.2, resolution=0.1)
@example(value=230.20000610351562, resolution=0.1)  # 230.2 V as an f32 decodes
@example(value=-0.04, resolution=0.1)
def test_a_rounded_value_is_the_nearest_grid_value_with_no_float_noise(
    value: float, resolution: float
) -> None:
    rounded = round_to(value, *rounder(resolution))
    decimals = decimals_of(resolution)
    exact = Decimal(repr(rounded))  # what the JSON encoder writes
    # On the grid, and written with at most the resolution's decimals.
    assert exact % Decimal(repr(resolution)) == 0, (value, rounded)
    assert -exact.as_tuple().exponent <= decimals or exact == exact.to_integral(), rounded
    # The nearest grid value (half a step away at most, and a float's error on top).
    assert abs(rounded - value) <= resolution / 2 * (1 + 1e-9) + abs(value) * 1e-15
    # Stable: rounding again changes nothing, so a re-read of a sent value is no change.
    assert round_to(rounded, *rounder(resolution)) == rounded
    assert not (rounded == 0 and math.copysign(1, rounded) < 0), "-0.0 would go up as -0.0"


def test_known_values() -> None:
    assert round_to(0.1 + 0.2, *rounder(0.1)) == 0.3
    assert repr(round_to(0.1 + 0.2, *rounder(0.1))) == "0.3"
    assert round_to(230.20000610351562, *rounder(0.1)) == 230.2
    assert round_to(12346.254, *rounder(0.01)) == 12346.25
    assert round_to(7.4, *rounder(5)) == 5.0
    assert round_to(1.7976931348623157e308, *rounder(0.001)) == 1.7976931348623157e308
    assert math.isnan(round_to(math.nan, *rounder(0.1)))


def test_decimals_of_a_resolution() -> None:
    assert [decimals_of(r) for r in (0.1, 0.25, 5.0, 1e-05, 10.0, 0.001)] == [1, 2, 0, 5, 0, 3]


@pytest.mark.parametrize("bad", [0.0, -0.1, math.inf, math.nan])
def test_a_resolution_must_be_a_positive_finite_step(bad: float) -> None:
    with pytest.raises(ValueError, match="resolution"):
        rounder(bad)


def test_a_description_leaves_out_what_it_does_not_know() -> None:
    bare = PointMeta(type="boolean", wire="bool").to_json("")
    assert bare == {"type": "boolean", "wire": "bool", "unit": "", "access": "r"}
    full = PointMeta(
        type="number", wire="f32", description="energy", access="rw", valid_range=(0, 10),
        write_min=0, write_max=5, resolution=0.01, counter=True,
    ).to_json("kWh")  # fmt: skip
    assert full == {
        "type": "number", "wire": "f32", "unit": "kWh", "access": "rw", "range": [0, 10],
        "write_min": 0, "write_max": 5, "resolution": 0.01, "counter": True,
        "description": "energy",
    }  # fmt: skip
