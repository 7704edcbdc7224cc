"""``smartpole analyze VIDEO --line X1,Y1,X2,Y2``: the camera pipeline, offline, on one file.

Why it exists: setting up a camera means choosing a counting line, and checking it means
counting a recorded clip by eye and comparing. This runs exactly the worker's ``Pipeline``
(motion, detector on regions, tracker, line counter) over every frame of a file, as fast as
the CPU allows, and prints the counts by direction and class. The line is in the video's
native pixels; "in" is the crossing from the side where ``cross(p2 - p1, p - p1)`` is
negative to where it is positive: for a line drawn left to right, moving down the image.

With ``--json`` stdout carries exactly one object::

    {"line": [[x1, y1], [x2, y2]], "counts": {"in": {class: n, ...}, "out": {...}},
     "crossings": [{"frame": i, "line": "line", "direction": "in", "class": c,
                    "track_id": id, "t_s": s, "speed_kmh": null}, ...],
     "frames": n, "fps": f, "video_fps": r, "warnings": ["...", ...]}

``crossings`` lists every counted crossing with the frame it was counted on, so a count
can be checked against a recording frame by frame.

``fps`` is processed frames per second of wall time, decoding included and the one-off
model load and kernel compilation excluded. ``video_fps`` is the clip's own rate as its
timestamps give it (the analytics' clock). ``warnings`` lists what may make the counts less
than they seem, each once: a declared frame rate the timestamps contradict, frames without
timestamps, corrupt packets skipped; empty when the clip is clean. Errors (a line outside
the frame, a missing, empty or corrupt video, a codec no decoder here reads, an unusable
model) print one line on stderr and exit 2. Without ``--model`` or ``$SMARTPOLE_MODEL``
the detector is the YOLOX-nano COCO model the package ships.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, TextIO

import av
import av.error
from pydantic import ValidationError

from smartpole.agent.config.cameras import COCO_TRAFFIC, CameraConfig, describe, is_url
from smartpole.models.errors import AnalyticsConfigError, ModelError, SourceError
from smartpole.models.pipeline import Pipeline
from smartpole.models.source import VideoSource
from smartpole.models.summary import DEFAULT_CLASSES

EXIT_OK, EXIT_BAD_INPUT = 0, 2
MODEL_ENV: Final = "SMARTPOLE_MODEL"
LINE_NAME: Final = "line"


class AnalyzeError(Exception):
    """Bad input for ``analyze``: reported as one line on stderr, exit status 2."""


def parse_line(text: str) -> tuple[tuple[float, float], tuple[float, float]]:
    """``"X1,Y1,X2,Y2"`` as two points; ``AnalyzeError`` if it is not four numbers."""
    parts = text.split(",")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise AnalyzeError(f"--line {text!r}: expected four numbers X1,Y1,X2,Y2")
    return (values[0], values[1]), (values[2], values[3])


def parse_classes(text: str | None) -> dict[int, str]:
    """``"0=person,2=car"`` as a class map; None gives the COCO traffic classes."""
    if text is None:
        return dict(COCO_TRAFFIC)
    out: dict[int, str] = {}
    for item in text.split(","):
        key, sep, name = item.partition("=")
        if not sep or not key.strip().isdigit() or not name.strip():
            raise AnalyzeError(f"--classes {text!r}: expected ID=NAME[,ID=NAME...], e.g. 2=car")
        out[int(key)] = name.strip()
    return out


def resolve_model(model: Path | None) -> Path | None:
    """``--model``, else ``$SMARTPOLE_MODEL``, else None: the model the package ships."""
    if model is not None:
        return model
    env = os.environ.get(MODEL_ENV)
    return Path(env) if env else None


def _number(value: float) -> int | float:
    return int(value) if value.is_integer() else value


def _total_frames(video: str) -> int | None:
    """The frame count the container declares (for the progress bar), or None."""
    try:
        with av.open(video) as container:
            frames = container.streams.video[0].frames if container.streams.video else 0
    except (av.error.FFmpegError, OSError):
        return None
    return int(frames) or None


class Progress:
    """A one-line bar on a terminal (stderr), redrawn at most ten times a second."""

    def __init__(self, stream: TextIO, total: int | None) -> None:
        self.stream = stream
        self.total = total
        self._drawn = 0.0

    def update(self, frames: int, fps: float, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._drawn < 0.1:
            return
        self._drawn = now
        if self.total:
            share = min(1.0, frames / self.total)
            bar = "#" * int(share * 30)
            text = f"[{bar:<30}] {frames}/{self.total} frames"
        else:
            text = f"{frames} frames"
        self.stream.write(f"\r{text}  {fps:6.1f} fps")
        self.stream.flush()

    def close(self) -> None:
        self.stream.write("\n")
        self.stream.flush()


def count(
    video: str,
    line: tuple[tuple[float, float], tuple[float, float]],
    model: Path | None,
    classes: Mapping[int, str],
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Run the pipeline over every frame of ``video``; return the ``--json`` object.

    Raises ``AnalyzeError`` for every input problem, with a one-line message.
    """
    (x1, y1), (x2, y2) = line
    given = ",".join(str(_number(v)) for v in (x1, y1, x2, y2))
    if not Path(video).is_file() and not is_url(video):
        raise AnalyzeError(f"{video}: no such video file")
    try:
        settings: dict[str, Any] = {
            "source": video,
            "classes": dict(classes),
            "lines": {LINE_NAME: {"from": (x1, y1), "to": (x2, y2)}},
        }
        if model is not None:
            settings["model"] = str(model)
        config = CameraConfig.model_validate(settings)
    except ValidationError as exc:
        message = describe(exc).replace(f"lines.{LINE_NAME}: ", f"--line {given}: ")
        raise AnalyzeError(message) from exc
    try:
        source = VideoSource(video)
        pipeline: Pipeline | None = None
        names: list[str] = []
        counts: dict[str, dict[str, int]] = {}
        crossings: list[dict[str, Any]] = []
        started = time.perf_counter()
        for frame in source.frames():
            if pipeline is None:
                pipeline = Pipeline(config, frame.width, frame.height)
                known = [c for c in DEFAULT_CLASSES if c in pipeline.class_names]
                names = known + [c for c in pipeline.class_names if c not in known]
                counts = {d: dict.fromkeys(names, 0) for d in ("in", "out")}
                started = time.perf_counter()  # load and compile are not frame time
            for crossing in pipeline.process(frame).crossings:
                counts[crossing.direction][crossing.class_name] += 1
                crossings.append({"frame": frame.index, **crossing.to_dict()})
            if progress is not None:
                done = pipeline.stats.processed
                progress.update(done, done / max(time.perf_counter() - started, 1e-9))
    except ModelError as exc:
        raise AnalyzeError(f"model: {exc}") from exc
    except AnalyticsConfigError as exc:
        message = str(exc).replace(f"line {LINE_NAME!r}: ", f"--line {given}: ")
        raise AnalyzeError(message) from exc
    except SourceError as exc:
        raise AnalyzeError(f"video: {exc}") from exc
    if pipeline is None:
        raise AnalyzeError(f"{video}: no frame could be decoded")
    pipeline.finish()
    elapsed = time.perf_counter() - started
    frames = pipeline.stats.processed
    if progress is not None:
        progress.update(frames, frames / max(elapsed, 1e-9), force=True)
    stats = source.stats
    warnings = stats.all_warnings()
    return {
        "line": [[_number(x1), _number(y1)], [_number(x2), _number(y2)]],
        "counts": counts,
        "crossings": crossings,
        "frames": frames,
        "fps": round(frames / elapsed, 2) if elapsed > 0 else 0.0,
        "video_fps": round(stats.measured_fps or stats.nominal_fps, 3),
        "warnings": warnings,
    }


def render(video: str, result: Mapping[str, Any]) -> str:
    """The human-readable table of ``count``'s result."""
    (x1, y1), (x2, y2) = result["line"]
    counts: Mapping[str, Mapping[str, int]] = result["counts"]
    names = list(counts["in"])
    width = max(8, *(len(n) for n in names))
    lines = [
        f"{video}: {result['frames']} frames at {result['fps']} fps, "
        f"line ({x1}, {y1}) -> ({x2}, {y2}); in = crossing to the right-hand side of the line"
        " as drawn (image y down)",
        "direction " + " ".join(f"{n:>{width}}" for n in [*names, "total"]),
    ]
    for direction in ("in", "out"):
        row = [counts[direction][n] for n in names]
        cells = " ".join(f"{v:>{width}}" for v in [*row, sum(row)])
        lines.append(f"{direction:<9} {cells}")
    lines += [f"warning: {text}" for text in result.get("warnings", [])]
    return "\n".join(lines)


def run(
    video: str,
    *,
    line: str,
    model: Path | None,
    classes: str | None,
    as_json: bool,
) -> int:
    """The ``smartpole analyze`` command; returns the exit status."""
    progress: Progress | None = None
    try:
        points = parse_line(line)
        class_map = parse_classes(classes)
        model_path = resolve_model(model)
        if sys.stderr.isatty():
            progress = Progress(sys.stderr, _total_frames(video))
        result = count(video, points, model_path, class_map, progress)
    except AnalyzeError as exc:
        if progress is not None:
            progress.close()
        print(f"smartpole analyze: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if progress is not None:
        progress.close()
    print(json.dumps(result) if as_json else render(video, result))
    return EXIT_OK
