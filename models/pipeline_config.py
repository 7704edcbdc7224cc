"""A camera's analytics settings, from the JSON-ready dict that config files and workers pass.

Why a strict parser: a worker runs unattended on a pole, so a setting that cannot work (a
typo'd key, a line given in another resolution's pixels, a zone with no area) must stop it
at start with a message naming the setting, not silently count nothing for a month. Unknown
keys are errors for the same reason. Geometry is in the video's native pixels; whether it
lies inside the frame can only be checked once the frame size is known
(``validate_frame``), which the ``Pipeline`` does when it is built.

Shape (every key but ``model`` optional)::

    {"camera": "cam-1", "model": "/path/yolox-nano.onnx",
     "classes": {"0": "person", "2": "car", ...},
     "lines": {"main": {"from": [x, y], "to": [x, y]}},
     "zones": {"bus-stop": {"polygon": [[x, y], ...], "kind": "no_stopping",
                            "direction": [dx, dy], "stop_line": [[x, y], [x, y]]}},
     "calibration": {"image": [[x, y] x 4], "ground_m": [[x, y] x 4]},
     "interval_s": 300, "detect_every": 3, ...tuning keys, see PipelineConfig}
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from smartpole.models.calibration import GroundCalibration
from smartpole.models.counting import CountingLine
from smartpole.models.errors import AnalyticsConfigError, ModelError
from smartpole.models.zones import Zone

#: The COCO classes a traffic count wants, by the COCO YOLOX class id.
COCO_TRAFFIC: Final[Mapping[int, str]] = {
    0: "person",
    1: "bicycle",
    2: "car",
    3: "motorcycle",
    5: "bus",
    7: "truck",
}


class ModelPathError(AnalyticsConfigError, ModelError):
    """The configured model file does not exist: a setting that is wrong, about the model.

    Both families catch it; a worker reports it as a model problem (kind ``"model"``).
    """


Point = tuple[float, float]

#: Numeric keys: (type, lower bound, lower bound inclusive, upper bound or None).
_LIMITS: Final[dict[str, tuple[type, float, bool, float | None]]] = {
    "interval_s": (float, 0.0, False, None),
    "detect_every": (int, 1, True, 25),
    "refresh_s": (float, 0.0, False, None),
    "score_threshold": (float, 0.0, False, 1.0),
    "count_min_score": (float, 0.0, True, 1.0),
    "nms_iou": (float, 0.0, False, 1.0),
    "threads": (int, 1, True, 64),
    "max_regions": (int, 1, True, 16),
    "min_region_side": (int, 32, True, None),
    "region_margin": (float, 0.0, True, 2.0),
    "motion_work_width": (int, 32, True, None),
    "motion_threshold": (int, 1, True, 255),
    "motion_min_area": (int, 1, True, None),
    "band_px": (float, 0.0, True, None),
    "max_missed_s": (float, 0.0, False, None),
    "min_hits": (int, 1, True, 25),
    "stopped_after_s": (float, 0.0, False, None),
    "pedestrian_after_s": (float, 0.0, True, None),
}


def _number(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise AnalyticsConfigError(f"{where}: expected a finite number, got {value!r}")
    return float(value)


def _point(value: object, where: str) -> Point:
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise AnalyticsConfigError(f"{where}: expected a point [x, y], got {value!r}")
    return (_number(value[0], where), _number(value[1], where))


def _points(value: object, where: str, count: int | None = None) -> list[Point]:
    if not isinstance(value, list | tuple) or (count is not None and len(value) != count):
        wanted = f"{count} points" if count is not None else "a list of points"
        raise AnalyticsConfigError(f"{where}: expected {wanted} [[x, y], ...], got {value!r}")
    return [_point(item, where) for item in value]


def _mapping(value: object, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise AnalyticsConfigError(f"{where}: expected an object, got {value!r}")
    return value


def _keys(data: Mapping[str, Any], where: str, allowed: set[str], required: set[str]) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise AnalyticsConfigError(
            f"{where}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(allowed))})"
        )
    missing = sorted(required - set(data))
    if missing:
        raise AnalyticsConfigError(f"{where}: missing key(s) {', '.join(missing)}")


def _classes(value: object) -> dict[int, str]:
    data = _mapping(value, "classes")
    out: dict[int, str] = {}
    for key, name in data.items():
        try:
            class_id = int(key)
        except (TypeError, ValueError):
            raise AnalyticsConfigError(f"classes: id {key!r} is not an integer") from None
        if class_id < 0 or not isinstance(name, str) or not name:
            raise AnalyticsConfigError(f"classes: expected id >= 0 -> name, got {key!r}: {name!r}")
        out[class_id] = name
    if not out:
        raise AnalyticsConfigError("classes: the map is empty; nothing would be counted")
    return out


def _lines(value: object) -> tuple[CountingLine, ...]:
    lines = []
    for name, spec in _mapping(value, "lines").items():
        where = f"line {name!r}"
        spec = _mapping(spec, where)
        _keys(spec, where, {"from", "to"}, {"from", "to"})
        ends = _point(spec["from"], where), _point(spec["to"], where)
        lines.append(CountingLine(str(name), *ends))
    return tuple(lines)


def _zones(value: object) -> tuple[Zone, ...]:
    zones = []
    for name, spec in _mapping(value, "zones").items():
        where = f"zone {name!r}"
        spec = _mapping(spec, where)
        _keys(spec, where, {"polygon", "kind", "direction", "stop_line"}, {"polygon"})
        direction = spec.get("direction")
        stop_line = spec.get("stop_line")
        stop = _points(stop_line, f"{where} stop_line", 2) if stop_line is not None else None
        kind = spec.get("kind", "occupancy")
        zones.append(
            Zone(
                str(name),
                _points(spec["polygon"], f"{where} polygon"),
                kind,
                _point(direction, f"{where} direction") if direction is not None else None,
                (stop[0], stop[1]) if stop is not None else None,
            )
        )
    return tuple(zones)


def _calibration(value: object) -> GroundCalibration:
    data = _mapping(value, "calibration")
    _keys(data, "calibration", {"image", "ground_m"}, {"image", "ground_m"})
    return GroundCalibration(
        _points(data["image"], "calibration image", 4),
        _points(data["ground_m"], "calibration ground_m", 4),
    )


@dataclass(frozen=True)
class PipelineConfig:
    """Validated analytics settings of one camera (build with ``from_dict``).

    Tuning keys and why their defaults: ``detect_every`` 3 (8 detector runs a second at 25
    fps; the street clip counts exactly with every value from 1 to 5, at 640x352 and at
    1280x720, so 3 sits mid-range, at a third of the cost of every frame);
    ``count_min_score`` 0.5 (a track counts at a line only if its mean detection score
    reaches it: real road users average 0.65-0.9, false boxes on the kerb ~0.4);
    ``refresh_s`` 0.5 (live tracks with no motion are re-detected twice a second, within
    the tracker's ``max_missed_s`` of 1 s); ``max_regions`` 3 (at ~13.5 ms each, the worst
    frame stays under the 40 ms of one 25 fps frame); ``band_px`` 6 (box jitter).
    """

    model_path: Path
    camera: str = "camera"
    classes: Mapping[int, str] = dataclasses.field(default_factory=lambda: dict(COCO_TRAFFIC))
    lines: tuple[CountingLine, ...] = ()
    zones: tuple[Zone, ...] = ()
    calibration: GroundCalibration | None = None
    interval_s: float = 300.0
    detect_every: int = 3
    refresh_s: float = 0.5
    score_threshold: float = 0.35
    count_min_score: float = 0.5
    nms_iou: float = 0.45
    threads: int = 1
    max_regions: int = 3
    min_region_side: int = 160
    region_margin: float = 0.35
    motion_work_width: int = 320
    motion_threshold: int = 18
    motion_min_area: int = 150
    band_px: float = 6.0
    max_missed_s: float = 1.0
    min_hits: int = 2
    stopped_after_s: float = 30.0
    pedestrian_after_s: float = 1.0

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PipelineConfig:
        """Parse and check a settings dict; ``AnalyticsConfigError`` names what is wrong.

        A missing model file raises ``ModelPathError`` (both a config and a model error).
        """
        data = _mapping(data, "analytics config")
        structural = {"camera", "model", "classes", "lines", "zones", "calibration"}
        _keys(data, "analytics config", structural | set(_LIMITS), {"model"})
        model = data["model"]
        if not isinstance(model, str) or not model:
            raise AnalyticsConfigError(f"model: expected a file path, got {model!r}")
        path = Path(model)
        if not path.is_file():
            raise ModelPathError(f"model: {path}: no such file")
        camera = data.get("camera", "camera")
        if not isinstance(camera, str) or not camera:
            raise AnalyticsConfigError(f"camera: expected a non-empty name, got {camera!r}")
        tuning: dict[str, Any] = {}
        for key, (kind, low, inclusive, high) in _LIMITS.items():
            if key not in data:
                continue
            value = _number(data[key], key)
            if kind is int and not value.is_integer():
                raise AnalyticsConfigError(f"{key}: expected an integer, got {data[key]!r}")
            too_low = value < low if inclusive else value <= low
            if too_low or (high is not None and value > high):
                bound = f"{'>=' if inclusive else '>'} {low}"
                bound += f" and <= {high}" if high is not None else ""
                raise AnalyticsConfigError(f"{key}: must be {bound}, got {data[key]!r}")
            tuning[key] = int(value) if kind is int else value
        lines = _lines(data.get("lines", {}))
        zones = _zones(data.get("zones", {}))
        for what, names in (("line", [x.name for x in lines]), ("zone", [z.name for z in zones])):
            if len(set(names)) != len(names):
                raise AnalyticsConfigError(f"{what} names must be unique, got {names}")
        calibration = data.get("calibration")
        return cls(
            model_path=path,
            camera=camera,
            classes=_classes(data["classes"]) if "classes" in data else dict(COCO_TRAFFIC),
            lines=lines,
            zones=zones,
            calibration=_calibration(calibration) if calibration is not None else None,
            **tuning,
        )

    def validate_frame(self, width: int, height: int) -> None:
        """Raise ``AnalyticsConfigError`` if a line or zone lies outside a WxH frame."""
        for line in self.lines:
            line.validate(width, height)
        for zone in self.zones:
            zone.validate(width, height)
