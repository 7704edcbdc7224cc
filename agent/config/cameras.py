"""What a pole config says about its cameras: source, detector, counting lines, zones, tuning.

One schema for both processes. The daemon checks a pole config's ``cameras:`` section with
it before it starts, with file and line; each camera's worker process
(``python -m smartpole.models.worker``) receives its section as JSON and validates it with
the same model, so a key means the same on both sides and a worker can never accept what
the config check refused, or the other way round. Hence no numpy here: the control process
imports this module and must stay free of the analytics' libraries; the worker derives its
numeric forms (polygons, homographies) from the validated model.

Everything that can be checked without opening the video is checked here, the
calibration's geometry included (``calibration.py``); what needs the video's size (a line
or a calibration point outside the frame) or numerics (the homography itself) is reported
by the worker as a config error in the camera's health.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Final, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    ValidationError,
    field_validator,
    model_validator,
)

from smartpole.agent.config.calibration import CalibrationConfig
from smartpole.agent.config.site import SiteConfig

# YAML and JSON spell a tuple as a list: only that conversion is lax, the numbers are strict.
Point = Annotated[tuple[float, float], Strict(False)]
Location = tuple[str | int, ...]
ZoneName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=64)]
ZoneKind = Literal["occupancy", "carriageway", "no_stopping", "queue"]
ClassId = Annotated[int, Field(ge=0)]
ClassName = Annotated[str, Field(min_length=1)]

#: The COCO classes a traffic count wants, by the COCO YOLOX class id.
COCO_TRAFFIC: Final = {0: "person", 1: "bicycle", 2: "car", 3: "motorcycle", 5: "bus", 7: "truck"}
#: A polygon smaller than this (square pixels) holds no road user: a typo, not a zone.
MIN_ZONE_AREA_PX2: Final = 1.0
#: A calibration origin farther than this (metres) from the pole's ``site:``: a typo.
MAX_ORIGIN_FROM_SITE_M: Final = 1000.0


class _Strict(BaseModel):
    # Non-finite numbers are refused: JSON cannot carry them to the worker, and no
    # geometry or threshold means anything at infinity.
    model_config = ConfigDict(
        extra="forbid", frozen=True, populate_by_name=True, allow_inf_nan=False, strict=True
    )


class CountingLineConfig(_Strict):
    """A counting line in the video's native pixels; "in" is the crossing from the left of
    from→to to its right (image coordinates, y down): see README "Counting lines"."""

    start: Point = Field(alias="from")
    end: Point = Field(alias="to")

    @model_validator(mode="after")
    def _two_points(self) -> Self:
        if self.start == self.end:
            raise ValueError("a counting line needs two different points")
        return self


class ZoneConfig(_Strict):
    polygon: list[Point] = Field(min_length=3, max_length=32)
    kind: ZoneKind = "occupancy"
    direction: Point | None = Field(
        None, description="allowed direction of travel (dx, dy) for wrong-way events"
    )
    stop_line: Annotated[tuple[Point, Point], Strict(False)] | None = Field(
        None, description="queue zones: the stop line queues are measured from"
    )

    @field_validator("polygon")
    @classmethod
    def _has_area(cls, polygon: list[Point]) -> list[Point]:
        if _area(polygon) < MIN_ZONE_AREA_PX2:
            raise ValueError("the zone has zero area")
        return polygon

    @field_validator("direction")
    @classmethod
    def _direction_points_somewhere(cls, direction: Point | None) -> Point | None:
        if direction is not None and direction == (0.0, 0.0):
            raise ValueError("a direction must be a non-zero (dx, dy)")
        return direction

    @field_validator("stop_line")
    @classmethod
    def _stop_line_is_a_line(cls, line: tuple[Point, Point] | None) -> tuple[Point, Point] | None:
        if line is not None and line[0] == line[1]:
            raise ValueError("a stop line needs two different points")
        return line

    @model_validator(mode="after")
    def _queue_has_stop_line(self) -> Self:
        if self.kind == "queue" and self.stop_line is None:
            raise ValueError("a queue zone needs a stop_line: [[x1, y1], [x2, y2]]")
        return self


class CameraConfig(_Strict):
    """One camera: what the worker opens, what it counts, and how hard it looks.

    The tuning keys' defaults and why: ``detect_interval_s`` 0.16 (6 detector runs a
    second while motion lasts, whatever the frame rate: every 4th frame at 25 fps, every
    frame at 10 fps or below, every 9th at 60 fps; a cadence in frames would look at a 10
    fps camera's cars every 0.3 s, by which time a car has moved a whole length; the
    street clip counts exactly with every cadence from 1 to 5 frames at 24 fps, and 0.12 s
    costs a 720p camera a third more inferences for no count gained on any labelled clip);
    ``detect_every`` fixes the cadence in frames instead (rigs);
    ``full_frame_s`` 1 (the whole frame is looked at once a second whatever motion says,
    so a road user the motion stage does not see, in deep shadow or barely moving, is
    found within a second);
    ``count_min_score`` 0.4 (a track counts at a line only if its mean detection score
    reaches it: most road users average 0.65-0.9, but a dark pickup in low sun on the
    oblique 10 fps clip averages 0.37-0.45; false boxes on a kerb score as much, and
    what keeps them out is that they never travel half a box height, see the pipeline);
    ``refresh_s`` 0.5 (live tracks with no motion are re-detected twice a second, within
    the tracker's ``max_missed_s`` of 1 s); ``max_regions`` 3 (at ~13.5 ms each, the worst
    frame stays under the 40 ms of one 25 fps frame); ``band_px`` 6 (box jitter).
    """

    source: str = Field(
        min_length=1, description="rtsp://... or a video file (relative to this config file)"
    )
    loop: bool = Field(False, description="replay a file endlessly as a live source (rigs)")
    realtime: bool = Field(True, description="pace a file by its timestamps like a camera")
    model: str | None = Field(
        None,
        min_length=1,
        description="YOLOX-family ONNX model: an absolute path or relative to this file; "
        "omitted, the YOLOX-nano COCO model the package ships",
    )
    classes: dict[ClassId, ClassName] = Field(
        default_factory=lambda: dict(COCO_TRAFFIC),
        min_length=1,
        description="model class id -> name",
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

    # Tuning: see the class docstring for the defaults.
    detect_interval_s: float = Field(
        0.16, gt=0, le=2, description="detector cadence while motion lasts, stream seconds"
    )
    detect_every: int | None = Field(
        None, ge=1, le=25, description="detector cadence in frames (overrides the interval)"
    )
    full_frame_s: float = Field(
        1.0, gt=0, le=60, description="the whole frame is looked at this often regardless"
    )
    refresh_s: float = Field(0.5, gt=0, description="re-detect still tracks this often")
    score_threshold: float = Field(0.35, gt=0, le=1, description="detections below are dropped")
    count_min_score: float = Field(0.4, ge=0, le=1, description="mean score a track needs to count")
    nms_iou: float = Field(0.45, gt=0, le=1, description="overlap above which the weaker box goes")
    threads: int = Field(1, ge=1, le=64, description="ONNX Runtime threads")
    max_regions: int = Field(3, ge=1, le=16, description="detector crops per frame at most")
    min_region_side: int = Field(160, ge=32, description="smallest crop side, pixels")
    region_margin: float = Field(0.35, ge=0, le=2, description="crop grows by this share of a box")
    motion_work_width: int = Field(320, ge=32, description="width motion is computed at")
    motion_threshold: int = Field(18, ge=1, le=255, description="luma change that is motion")
    motion_min_area: int = Field(150, ge=1, description="smallest motion blob, frame pixels")
    band_px: float = Field(6.0, ge=0, description="distance from a line that commits a side")
    max_missed_s: float = Field(1.0, gt=0, description="a track unseen this long ends")
    min_hits: int = Field(2, ge=1, le=25, description="detections before a track is confirmed")
    stopped_after_s: float = Field(30.0, gt=0, description="stopped in no_stopping: an event")
    pedestrian_after_s: float = Field(1.0, ge=0, description="a person on a carriageway: an event")

    def problems(
        self, config_dir: Path, devices: list[str], site: SiteConfig | None = None
    ) -> list[tuple[Location, str]]:
        """What the schema cannot see: files that are not there, unknown devices, a
        calibration origin that is not where the pole's ``site:`` says the pole stands."""
        out: list[tuple[Location, str]] = []
        origin = self.calibration.origin if self.calibration is not None else None
        if origin is not None and site is not None:
            distance = origin.frame().distance_m(site.latitude, site.longitude)
            if distance > MAX_ORIGIN_FROM_SITE_M:
                out.append(
                    (
                        ("calibration", "origin"),
                        f"the origin is {distance / 1000:.1f} km from the site "
                        f"({site.latitude:g}, {site.longitude:g}); both say where this pole "
                        "stands, so one of them is mistyped",
                    )
                )
        if self.model is not None and not _exists(config_dir / self.model, file=True):
            out.append((("model",), f"no model file {_where(self.model, config_dir)}"))
        if not is_url(self.source) and not _exists(config_dir / self.source):
            out.append((("source",), f"no video {_where(self.source, config_dir)}"))
        if self.device is not None and self.device not in devices:
            out.append((("device",), f"no device {self.device!r} on this pole"))
        return out

    def for_worker(self, config_dir: Path) -> CameraConfig:
        """This camera with its files as absolute paths, for a worker whose working
        directory is not the config file's folder."""
        source = self.source if is_url(self.source) else str((config_dir / self.source).resolve())
        # No model stays no model: the worker finds the shipped one in its own package.
        model = None if self.model is None else str((config_dir / self.model).resolve())
        return self.model_copy(update={"source": source, "model": model})


def _exists(path: Path, *, file: bool = False) -> bool:
    """A name the file system cannot take (too long, a NUL byte) names nothing."""
    try:
        return path.is_file() if file else path.exists()
    except (OSError, ValueError):
        return False


def _where(name: str, config_dir: Path) -> str:
    """A file's name as given, and where that is when it is relative."""
    if Path(name).is_absolute():
        return repr(name)
    return f"{name!r} ({config_dir / name}, relative to the config)"


def is_url(source: str) -> bool:
    """Whether a source names a stream (``rtsp://...``) rather than a file."""
    return "://" in source


def _area(points: list[Point]) -> float:
    """Unsigned area (shoelace) of a simple polygon."""
    twice = sum(
        x0 * y1 - x1 * y0
        for (x0, y0), (x1, y1) in zip(points, points[1:] + points[:1], strict=True)
    )
    return abs(twice) / 2


def describe(error: ValidationError) -> str:
    """The schema's complaints as one line, ``key.path: problem; ...``.

    For the worker's error line and ``smartpole analyze``, which have no file to point
    into; the config check locates the same errors by file and line instead.
    """
    parts = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"] if part != "[key]")
        if item["type"] == "extra_forbidden":
            what = "unknown key"
        elif item["type"] == "missing":
            last = item["loc"][-1] if item["loc"] else ""
            what = "a value is missing" if isinstance(last, int) else "required key is missing"
        else:
            what = str(item["msg"]).removeprefix("Value error, ")
            given = item.get("input")
            if not isinstance(given, dict | list | tuple) and item["type"] != "value_error":
                what += f" (got {given!r})"
        parts.append(f"{where}: {what}" if where else what)
    return "; ".join(parts)
