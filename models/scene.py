"""A camera's geometry as the analytics use it: counting lines, zones, ground calibration.

The camera config (``smartpole.agent.config.cameras``) says where lines and zones are in
plain numbers, checked by the same schema in the daemon and here; this turns them into the
objects the stages work with. Building it runs the checks that need numerics (the
calibration's homography), so a worker builds it before it opens the camera; whether the
geometry (lines, zones, the calibration's image points) lies inside the frame is known only
with the first frame (``validate_frame``).
"""

from __future__ import annotations

from dataclasses import dataclass

from smartpole.agent.config.cameras import CameraConfig
from smartpole.models.calibration import GroundCalibration
from smartpole.models.counting import CountingLine
from smartpole.models.errors import AnalyticsConfigError
from smartpole.models.geo import GeoFrame
from smartpole.models.zones import Zone


@dataclass(frozen=True)
class Scene:
    lines: tuple[CountingLine, ...]
    zones: tuple[Zone, ...]
    calibration: GroundCalibration | None
    #: Where the calibration's ground frame is on the earth: with a geo-calibration
    #: (``ground_en_m`` or ``ground_latlon``) the ground metres are east (x) and north (y)
    #: of the pole and this converts them to latitude/longitude; None for ``ground_m``
    #: (any road frame: speeds, no V2X) or without a calibration.
    geo: GeoFrame | None = None
    #: The calibration's image points, checked against the frame's size.
    image_points: tuple[tuple[float, float], ...] = ()

    @classmethod
    def of(cls, config: CameraConfig) -> Scene:
        """The scene of a validated camera config; ``AnalyticsConfigError`` if unusable."""
        calibration = config.calibration
        return cls(
            lines=tuple(
                CountingLine(name, line.start, line.end) for name, line in config.lines.items()
            ),
            zones=tuple(
                Zone(name, list(zone.polygon), zone.kind, zone.direction, zone.stop_line)
                for name, zone in config.zones.items()
            ),
            calibration=(
                GroundCalibration(calibration.image, calibration.ground_points())
                if calibration is not None
                else None
            ),
            geo=calibration.geo_frame() if calibration is not None else None,
            image_points=tuple(calibration.image) if calibration is not None else (),
        )

    def validate_frame(self, width: int, height: int) -> None:
        """Raise ``AnalyticsConfigError`` if a line or zone lies outside a WxH frame."""
        for line in self.lines:
            line.validate(width, height)
        for zone in self.zones:
            zone.validate(width, height)
        for number, (x, y) in enumerate(self.image_points, 1):
            if not (0 <= x <= width and 0 <= y <= height):
                raise AnalyticsConfigError(
                    f"calibration: image point {number} ({x:g}, {y:g}) is outside the "
                    f"{width}x{height} frame (coordinates are the video's native pixels)"
                )
