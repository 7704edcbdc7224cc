"""Hypothesis strategies for a camera's ``calibration:`` section, valid by construction."""

from __future__ import annotations

import math
from typing import Any

from hypothesis import strategies as st

from smartpole.agent.config.geodesy import GeoFrame

KINDS = ("ground_m", "ground_en_m", "ground_latlon")


@st.composite
def calibrations(draw: st.DrawFn, kinds: tuple[str, ...] = KINDS) -> dict[str, Any]:
    """A valid calibration of one of ``kinds``: a trapezoid in the image (non-negative
    pixels, going clockwise on the screen) and a rectangle on the ground going clockwise
    seen from above (as a camera looking down sees it), turned by any angle, within 2 km
    of the origin."""
    x, y = draw(st.floats(100, 1000)), draw(st.floats(0, 1000))
    w, h, d = draw(st.floats(20, 800)), draw(st.floats(20, 500)), draw(st.floats(0, 100))
    image = [[x, y], [x + w, y], [x + w + d, y + h], [x - d, y + h]]
    e0, n0 = draw(st.floats(-1000, 1000)), draw(st.floats(-1000, 1000))
    width, length = draw(st.floats(2, 300)), draw(st.floats(2, 300))
    turn = draw(st.floats(0, 2 * math.pi))
    c, s = math.cos(turn), math.sin(turn)
    corners = [(0, length), (width, length), (width, 0), (0, 0)]  # NW, NE, SE, SW
    ground = [[e0 + c * a - s * b, n0 + s * a + c * b] for a, b in corners]
    kind = draw(st.sampled_from(kinds))
    if kind == "ground_m":
        return {"image": image, "ground_m": ground}
    origin = {"latitude": draw(st.floats(-60, 60)), "longitude": draw(st.floats(-179, 179))}
    if kind == "ground_en_m":
        return {"image": image, "origin": origin, "ground_en_m": ground}
    frame = GeoFrame(origin["latitude"], origin["longitude"])
    latlon = [list(frame.to_latlon(e, n)) for e, n in ground]
    return {"image": image, "origin": origin, "ground_latlon": latlon}
