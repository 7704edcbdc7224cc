"""A camera's geometry as the analytics use it: counting lines, zones, ground calibration.

The camera config (``smartpole.agent.config.cameras``) says where lines and zones are in
plain numbers, checked by the same schema in the daemon and here; this turns them into the
objects the stages work with. Building it runs the checks that need numerics (a calibration
whose four points are not a convex quadrilateral), so a worker builds it before it opens
the camera; whether the geometry lies inside the frame is known only with the first frame
(``validate_frame``).
"""

from __future__ import annotations

from dataclasses import dataclass

from smartpole.agent.config.cameras import CameraConfig
from smartpole.models.calibration import GroundCalibration
from smartpole.models.counting import CountingLine
from smartpole.models.zones import Zone


@dataclass(frozen=True)
class Scene:
    lines: tuple[CountingLine, ...]
    zones: tuple[Zone, ...]
    calibration: GroundCalibration | None

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
                GroundCalibration(calibration.image, calibration.ground_m)
                if calibration is not None
                else None
            ),
        )

    def validate_frame(self, width: int, height: int) -> None:
        """Raise ``AnalyticsConfigError`` if a line or zone lies outside a WxH frame."""
        for line in self.lines:
            line.validate(width, height)
        for zone in self.zones:
            zone.validate(width, height)
