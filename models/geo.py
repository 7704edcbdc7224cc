"""Where the analytics' ground metres are on the earth: ``GeoFrame``, the WGS-84 local
tangent plane at the pole (metres east/north <-> latitude/longitude).

The maths lives beside the camera schema (``smartpole.agent.config.geodesy``) because the
config check needs the very same conversion to check a ``ground_latlon`` calibration, and
the control process may import nothing under ``smartpole.models``. The analytics import it
from here, under the name the design gives it.
"""

from __future__ import annotations

from smartpole.agent.config.geodesy import GeoFrame

__all__ = ["GeoFrame"]
