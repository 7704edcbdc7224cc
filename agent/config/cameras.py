"""What a pole config says about its cameras: source, detector, counting lines, zones.

The control process never runs analytics itself: each camera becomes one worker process
(``python -m smartpole.models.worker``) that receives this section as JSON. So everything
that can be checked without opening the video is checked here, before the daemon starts,
with file and line; what needs the video's size (a line outside the frame) is reported by
the worker as a config error in the camera's health.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

Point = tuple[float, float]
Location = tuple[str | int, ...]
COCO_TRAFFIC = {0: "person", 1: "bicycle", 2: "car", 3: "motorcycle", 5: "bus", 7: "truck"}
ZoneName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=64)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class CountingLineConfig(_Strict):
    """A counting line in the video's native pixels; "in" is the crossing from the left of
    from→to to its right (image coordinates, y down): see README "Counting lines"."""

    start: Point = Field(alias="from")
    end: Point = Field(alias="to")


class ZoneConfig(_Strict):
    polygon: list[Point] = Field(min_length=3, max_length=32)
    kind: Literal["occupancy", "carriageway", "no_stopping", "queue"] = "occupancy"
    direction: Point | None = Field(
        None, description="allowed direction of travel (dx, dy) for wrong-way events"
    )
    stop_line: tuple[Point, Point] | None = Field(
        None, description="queue zones: the stop line queues are measured from"
    )

    @model_validator(mode="after")
    def _queue_has_stop_line(self) -> Self:
        if self.kind == "queue" and self.stop_line is None:
            raise ValueError("a queue zone needs a stop_line: [[x1, y1], [x2, y2]]")
        return self


class CalibrationConfig(_Strict):
    """Four image points and where they lie on the road, in metres, for speeds."""

    image: list[Point] = Field(min_length=4, max_length=4)
    ground_m: list[Point] = Field(min_length=4, max_length=4)


class CameraConfig(_Strict):
    source: str = Field(
        min_length=1, description="rtsp://... or a video file (relative to this config file)"
    )
    loop: bool = Field(False, description="replay a file endlessly as a live source (rigs)")
    realtime: bool = Field(True, description="pace a file by its timestamps like a camera")
    model: str = Field(min_length=1, description="YOLOX-family ONNX model, relative to this file")
    classes: dict[int, str] = Field(
        default_factory=lambda: dict(COCO_TRAFFIC), description="model class id -> name"
    )
    interval_s: float = Field(
        60.0, gt=0, le=3600, description="summary interval (60, 300 or 900 usually)"
    )
    lines: dict[ZoneName, CountingLineConfig] = Field(min_length=1)
    zones: dict[ZoneName, ZoneConfig] = Field(default_factory=dict)
    calibration: CalibrationConfig | None = None
    device: str | None = Field(
        None, description="the pole device that powers the camera (power-cycled on no frames)"
    )
    no_frames_after_s: float = Field(
        30.0, gt=0, le=3600, description="a camera silent this long is reported as no_frames"
    )
    health_period_s: float = Field(2.0, gt=0, le=60)

    def problems(self, config_dir: Path, devices: list[str]) -> list[tuple[Location, str]]:
        """What the schema cannot see: files that are not there, unknown devices."""
        out: list[tuple[Location, str]] = []
        if not (config_dir / self.model).is_file():
            out.append((("model",), f"no model file {self.model!r} (relative to the config)"))
        if "://" not in self.source and not (config_dir / self.source).exists():
            out.append((("source",), f"no video {self.source!r} (relative to the config)"))
        if self.device is not None and self.device not in devices:
            out.append((("device",), f"no device {self.device!r} on this pole"))
        for name, line in self.lines.items():
            if line.start == line.end:
                out.append((("lines", name), "a counting line needs two different points"))
        for name, zone in self.zones.items():
            if _area(zone.polygon) == 0:
                out.append((("zones", name, "polygon"), "the zone has zero area"))
        return out

    def worker_config(self, name: str, config_dir: Path) -> dict[str, object]:
        """The JSON the camera's worker process gets: paths made absolute."""
        data = self.model_dump(by_alias=True, mode="json")
        data["camera"] = name
        data["model"] = str((config_dir / self.model).resolve())
        if "://" not in self.source:
            data["source"] = str((config_dir / self.source).resolve())
        data["classes"] = {str(k): v for k, v in self.classes.items()}
        return data


def _area(polygon: list[Point]) -> float:
    twice = sum(
        x0 * y1 - x1 * y0
        for (x0, y0), (x1, y1) in zip(polygon, polygon[1:] + polygon[:1], strict=True)
    )
    return abs(twice) / 2
