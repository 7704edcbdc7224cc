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

With ``--config POLE.yaml`` (and ``--camera NAME`` when the pole has several) the camera's
own section is used: its lines (``--line`` then replaces them), zones, calibration and
tuning, with VIDEO as its source. ``lines`` then holds every line's counts; ``line`` and
``counts`` are the first line's. ``--rsm OUT.jsonl`` writes, one JSON object per line
(``{"topic": ..., "payload": ...}``), the RSM and RSI messages the camera would send its
roadside unit (``docs/v2x.md``), on the recording's clock from the moment the analysis
started (``rsm_epoch_ms`` in the JSON: the wall-clock milliseconds stamped on the
recording's time 0): so a geo-calibration can be checked on a recording before the camera
goes live.

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

import contextlib
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
from smartpole.agent.config.v2x import V2xConfig
from smartpole.models.errors import AnalyticsConfigError, ModelError, SourceError
from smartpole.models.pipeline import Pipeline
from smartpole.models.roadside_stage import NO_GEO, RoadsideSettings
from smartpole.models.scene import Scene
from smartpole.models.source import VideoSource
from smartpole.models.summary import DEFAULT_CLASSES
from smartpole.models.v2x_output import JsonLinesSink, RoadsideOutput

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


def camera_config(
    video: str,
    line: tuple[tuple[float, float], tuple[float, float]] | None,
    model: Path | None,
    classes: Mapping[int, str] | None,
    camera: CameraConfig | None = None,
) -> CameraConfig:
    """The camera section to run: ``camera``'s (from a pole config) or a bare one, with
    ``video`` as its source and ``--line``/``--model``/``--classes`` applied over it."""
    settings: dict[str, Any] = {}
    if camera is not None:
        settings = camera.model_dump(by_alias=True, exclude_unset=True)
    settings["source"] = video
    if classes is not None or camera is None:
        settings["classes"] = dict(classes if classes is not None else COCO_TRAFFIC)
    if line is not None:
        (x1, y1), (x2, y2) = line
        settings["lines"] = {LINE_NAME: {"from": (x1, y1), "to": (x2, y2)}}
    if model is not None:
        settings["model"] = str(model)
    try:
        return CameraConfig.model_validate(settings)
    except ValidationError as exc:
        message = describe(exc)
        if line is not None:
            message = message.replace(f"lines.{LINE_NAME}: ", f"--line {_given(line)}: ")
        raise AnalyzeError(message) from exc


def _given(line: tuple[tuple[float, float], tuple[float, float]]) -> str:
    (x1, y1), (x2, y2) = line
    return ",".join(str(_number(v)) for v in (x1, y1, x2, y2))


def count(
    video: str,
    config: CameraConfig,
    progress: Progress | None = None,
    *,
    rsm: Path | None = None,
    v2x: V2xConfig | None = None,
    camera_name: str = "camera",
) -> dict[str, Any]:
    """Run the pipeline over every frame of ``video``; return the ``--json`` object, and
    with ``rsm`` write the camera's V2X messages there.

    Raises ``AnalyzeError`` for every input problem, with a one-line message.
    """
    if not Path(video).is_file() and not is_url(video):
        raise AnalyzeError(f"{video}: no such video file")
    with contextlib.ExitStack() as stack:
        try:
            scene = Scene.of(config)
            if rsm is not None and scene.geo is None:
                raise AnalyzeError(f"--rsm: the camera sends no RSM: {NO_GEO}")
            sink = stack.enter_context(JsonLinesSink(rsm)) if rsm is not None else None
        except AnalyticsConfigError as exc:
            raise AnalyzeError(str(exc)) from exc
        except OSError as exc:
            raise AnalyzeError(f"--rsm {rsm}: {exc.strerror or exc}") from exc
        return _count(video, config, scene, progress, sink, v2x, camera_name)


def _count(
    video: str,
    config: CameraConfig,
    scene: Scene,
    progress: Progress | None,
    sink: JsonLinesSink | None,
    v2x: V2xConfig | None,
    camera_name: str,
) -> dict[str, Any]:
    """``count`` with the scene built and the ``--rsm`` file open (``sink``)."""
    output: RoadsideOutput | None = None
    try:
        source = VideoSource(video)
        pipeline: Pipeline | None = None
        names: list[str] = []
        counts: dict[str, dict[str, dict[str, int]]] = {}
        crossings: list[dict[str, Any]] = []
        started = time.perf_counter()
        epoch = time.time()
        for frame in source.frames():
            if pipeline is None:
                pipeline = Pipeline(
                    config,
                    frame.width,
                    frame.height,
                    scene=scene,
                    roadside=RoadsideSettings.of(v2x) if sink is not None else None,
                )
                if sink is not None:
                    output = _rsm_output(pipeline, sink, v2x, camera_name)
                known = [c for c in DEFAULT_CLASSES if c in pipeline.class_names]
                names = known + [c for c in pipeline.class_names if c not in known]
                counts = {
                    name: {d: dict.fromkeys(names, 0) for d in ("in", "out")}
                    for name in config.lines
                }
                started = time.perf_counter()  # load and compile are not frame time
            if output is not None:  # the snapshot before the frame, as the worker sends it
                output.before_frame(frame.pts_s, wall_s=epoch + frame.pts_s, captured_s=0.0)
            result = pipeline.process(frame)
            for crossing in result.crossings:
                counts[crossing.line][crossing.direction][crossing.class_name] += 1
                crossings.append({"frame": frame.index, **crossing.to_dict()})
            if output is not None:
                output.after_frame(result, wall_s=epoch + result.t_s)
            if progress is not None:
                done = pipeline.stats.processed
                progress.update(done, done / max(time.perf_counter() - started, 1e-9))
    except ModelError as exc:
        raise AnalyzeError(f"model: {exc}") from exc
    except AnalyticsConfigError as exc:
        message = str(exc)
        if LINE_NAME in config.lines and len(config.lines) == 1:
            (x1, y1), (x2, y2) = config.lines[LINE_NAME].start, config.lines[LINE_NAME].end
            message = message.replace(
                f"line {LINE_NAME!r}: ", f"--line {_given(((x1, y1), (x2, y2)))}: "
            )
        raise AnalyzeError(message) from exc
    except SourceError as exc:
        raise AnalyzeError(f"video: {exc}") from exc
    if pipeline is None:
        raise AnalyzeError(f"{video}: no frame could be decoded")
    if output is not None:
        last = pipeline.stats.last_t_s or 0.0
        output.finish(last, wall_s=epoch + last)
    pipeline.finish()
    elapsed = time.perf_counter() - started
    frames = pipeline.stats.processed
    if progress is not None:
        progress.update(frames, frames / max(elapsed, 1e-9), force=True)
    stats = source.stats
    warnings = stats.all_warnings()
    first = next(iter(config.lines))
    extra = {"rsm_epoch_ms": round(epoch * 1000.0)} if sink is not None else {}
    return {
        **extra,
        "line": _points(config, first),
        "counts": counts[first],
        "lines": {
            name: {"line": _points(config, name), "counts": counts[name]} for name in config.lines
        },
        "crossings": crossings,
        "frames": frames,
        "fps": round(frames / elapsed, 2) if elapsed > 0 else 0.0,
        "video_fps": round(stats.measured_fps or stats.nominal_fps, 3),
        "warnings": warnings,
    }


def _points(config: CameraConfig, name: str) -> list[list[int | float]]:
    line = config.lines[name]
    return [[_number(v) for v in line.start], [_number(v) for v in line.end]]


def _rsm_output(
    pipeline: Pipeline, sink: JsonLinesSink, v2x: V2xConfig | None, camera_name: str
) -> RoadsideOutput:
    """The V2X messages of ``--rsm`` (the pipeline was built with roadside settings)."""
    assert pipeline.roadside is not None
    assert pipeline.scene.geo is not None
    if v2x is None:  # no v2x: section: the topics the default section would give
        v2x = V2xConfig(host="localhost", rsu_id="analyze")
    return RoadsideOutput(
        pipeline.roadside,
        sink,
        pipeline.scene.geo,
        rsu_id=v2x.rsu_id,
        source_id=camera_name,
        rsm_topic=v2x.rsm_topic(),
        rsi_topic=v2x.rsi_topic(),
    )


def render(video: str, result: Mapping[str, Any]) -> str:
    """The human-readable table of ``count``'s result."""
    lines = [
        f"{video}: {result['frames']} frames at {result['fps']} fps; in = crossing to the "
        "right-hand side of a line as drawn (image y down)"
    ]
    for name, each in result["lines"].items():
        (x1, y1), (x2, y2) = each["line"]
        counts: Mapping[str, Mapping[str, int]] = each["counts"]
        names = list(counts["in"])
        width = max(8, *(len(n) for n in names))
        lines.append(f"line {name} ({x1}, {y1}) -> ({x2}, {y2})")
        lines.append("direction " + " ".join(f"{n:>{width}}" for n in [*names, "total"]))
        for direction in ("in", "out"):
            row = [counts[direction][n] for n in names]
            cells = " ".join(f"{v:>{width}}" for v in [*row, sum(row)])
            lines.append(f"{direction:<9} {cells}")
    lines += [f"warning: {text}" for text in result.get("warnings", [])]
    return "\n".join(lines)


def run(
    video: str,
    *,
    line: str | None,
    model: Path | None,
    classes: str | None,
    as_json: bool,
    camera: CameraConfig | None = None,
    v2x: V2xConfig | None = None,
    rsm: Path | None = None,
    camera_name: str = "camera",
) -> int:
    """The ``smartpole analyze`` command; returns the exit status.

    ``camera`` and ``v2x`` are the sections of ``--config`` (the caller loads and checks
    the pole config, reporting its problems by file and line)."""
    progress: Progress | None = None
    try:
        if line is None and camera is None:
            raise AnalyzeError(
                "give --line X1,Y1,X2,Y2, or --config POLE.yaml for a camera's lines"
            )
        if rsm is not None and camera is None:
            raise AnalyzeError("--rsm needs --config POLE.yaml: the camera's geo-calibration")
        points = parse_line(line) if line is not None else None
        class_map = parse_classes(classes) if classes is not None or camera is None else None
        model_path = resolve_model(model)
        config = camera_config(video, points, model_path, class_map, camera)
        if sys.stderr.isatty():
            progress = Progress(sys.stderr, _total_frames(video))
        result = count(video, config, progress, rsm=rsm, v2x=v2x, camera_name=camera_name)
    except AnalyzeError as exc:
        if progress is not None:
            progress.close()
        print(f"smartpole analyze: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if progress is not None:
        progress.close()
    print(json.dumps(result) if as_json else render(video, result))
    return EXIT_OK
