"""The contract between the daemon and a camera's worker process: how it is started, what it
writes, and what its exit code means.

Both sides import this module: the worker (``smartpole.models.worker``) builds its lines from
these types, the supervisor (``smartpole.agent.cameras``) reads them with ``parse_line``. It
sits beside the camera schema because it is just as light (pydantic, no numpy) and the
control process may import nothing under ``smartpole.models``.

The worker is started as ``python -m smartpole.models.worker --camera NAME --config JSON``
(``command``), where JSON is the camera's validated section with absolute paths; with
``--v2x JSON`` (the pole's ``v2x:`` section, also with absolute paths) it sends roadside
messages to the RSU's broker; with ``--exit-with-stdin`` it also stops when its stdin
closes (the supervisor died). Its stdout
carries one JSON object per line and nothing else; its log goes to stderr.

* ``health`` every ``health_period_s``, from a timer of its own, so a stalled camera or a
  stuck decoder is reported as ``no_frames`` (``reconnecting`` for a live stream that is
  reconnecting) after ``no_frames_after_s`` instead of going silent. ``state`` is
  ``starting`` until the first frame (model load, first connection), then the data quality
  of the latest frame: ``ok``, ``dark``, ``blocked`` or ``shaken``. Rates are over the last
  period; ``skipped`` (frames dropped because the analytics fell behind) and ``frames``
  (processed) count since start; ``inference_ms`` is the mean detector run;
  ``cpu_percent`` is the worker (all threads) in percent of one core; ``last_frame_age_s``
  is null before the first frame. ``source_warnings`` lists, each once, what makes the
  video's timing or decoding doubtful (a declared frame rate its timestamps contradict,
  frames without timestamps, corrupt packets skipped): empty on a clean stream.
  ``shake_px`` is the camera's sway, the RMS distance (in frame pixels) of its estimated
  position from its mean over the last 10 s, and ``drift_px`` its distance from where the
  motion stage's background started (both 0 before the first frame): the motion stage
  compensates both, a steady mount reads 0. Health lines start before ``ready``: a camera
  that never delivers a frame is still reported. ``v2x`` is the camera's output to the
  roadside unit (``V2xHealth``).
* ``ready`` once, when the first frame fixed the size and the lines and zones were checked
  against it.
* ``summary`` per completed interval; on the end of a finite file or on SIGTERM a last one
  covers the unfinished interval and carries ``"partial": true``, so no count is lost on a
  restart.
* ``event`` for stopped vehicles, wrong-way driving, pedestrians on the carriageway, as
  they happen.
* ``error`` before a fatal exit, whose ``kind`` decides the exit code (``WorkerExit``).
"""

from __future__ import annotations

import functools
import json
from enum import IntEnum
from typing import Annotated, Final, Literal, NotRequired

from pydantic import ConfigDict, Field, TypeAdapter, ValidationError, with_config
from typing_extensions import TypedDict  # pydantic reads typing's only from Python 3.12

from smartpole.agent.config.cameras import CameraConfig
from smartpole.agent.config.v2x import V2xConfig

WORKER_MODULE: Final = "smartpole.models.worker"


class WorkerExit(IntEnum):
    """How a worker ended, and so how soon the supervisor starts it again."""

    OK = 0  # the end of a file, or SIGTERM
    FAILURE = 1  # kind "source" or "internal": a restart with backoff may cure it
    BAD_INPUT = 2  # kind "config" or "model": restarting does not help, retry rarely


ErrorKind = Literal["config", "model", "source", "internal"]
FrameQuality = Literal["ok", "dark", "blocked", "shaken"]
WorkerState = Literal["starting", "no_frames", "reconnecting"] | FrameQuality
EventKind = Literal["stopped_vehicle", "wrong_way", "pedestrian_on_carriageway"]
Direction = Literal["in", "out"]

# Unknown keys are refused at every level: both sides ship in one package, so a key one side
# does not know is a bug to hear of, not a variant to tolerate.
_CLOSED = ConfigDict(extra="forbid")


@with_config(_CLOSED)
class ReadyMessage(TypedDict):
    type: Literal["ready"]
    camera: str
    width: int
    height: int
    fps: float
    compile_s: float
    model_load_s: float


V2xState = Literal["off", "connecting", "sending", "broker_down"]


@with_config(_CLOSED)
class V2xHealth(TypedDict):
    """The camera's real-time output to the roadside unit (RSM/RSI), since the worker started.

    ``state`` is ``off`` (``reason`` says why: no ``v2x:`` section, no geo-calibration),
    ``connecting`` before the RSU's broker first answered, ``sending``, or ``broker_down``.
    ``sent``/``dropped`` count messages (dropped: the broker was unreachable; V2X is never
    queued), ``stale`` the road users left out of a snapshot because their last
    measurement was older than ``max_age_s``, ``vague`` those left out as too uncertain
    (over 5 m) or too far (beyond twice the calibration's farthest mark). The latencies are
    the RSM's, from the frame's capture to the message handed to the socket, over the
    last 600 (a minute at 10 Hz; null before the first); events (RSI) come only after a
    frame's analytics and are not in them.
    """

    state: V2xState
    reason: str | None
    rsm_hz: float
    sent: int
    dropped: int
    stale: int
    vague: int
    latency_p50_ms: float | None
    latency_p99_ms: float | None


@with_config(_CLOSED)
class HealthMessage(TypedDict):
    type: Literal["health"]
    camera: str
    state: WorkerState
    decode_fps: float
    processed_fps: float
    skipped: int
    inference_ms: float
    cpu_percent: float
    rss_mb: float
    last_frame_age_s: float | None
    frames: int
    source_warnings: list[str]
    shake_px: float
    drift_px: float
    v2x: V2xHealth


@with_config(_CLOSED)
class LineSpeed(TypedDict):
    """Speeds over a line in km/h, both directions pooled; null without a calibration."""

    mean: float | None
    p85: float | None
    n: int


@with_config(_CLOSED)
class ZoneStats(TypedDict):
    occupancy: float  # share of sampled time with at least one object inside
    mean_dwell_s: float | None


@with_config(_CLOSED)
class QueueStats(TypedDict):
    max_vehicles: int
    mean_vehicles: float
    max_length: float
    unit: Literal["m", "px"]


@with_config(_CLOSED)
class IntervalQuality(TypedDict):
    fps: float
    frames: int
    dropped: int
    state: FrameQuality | Literal["no_frames"]  # the worst state seen in the interval


# Functional syntax: "class" is a keyword.
ZoneEventRecord = TypedDict(
    "ZoneEventRecord",
    {
        "type": EventKind,
        "zone": str,
        "track_id": int,
        "class": str,
        "t_s": float,
        "duration_s": float,
    },
)
with_config(_CLOSED)(ZoneEventRecord)


@with_config(_CLOSED)
class SummaryMessage(TypedDict):
    """One interval of one camera: every line, direction, class, zone and queue, zeros
    included (the platform stores summaries as time series)."""

    type: Literal["summary"]
    camera: str
    interval_start: float
    interval_s: float
    lines: dict[str, dict[Direction, dict[str, int]]]
    speed_kmh: dict[str, LineSpeed]
    zones: dict[str, ZoneStats]
    queue: dict[str, QueueStats]
    events: list[ZoneEventRecord]
    quality: IntervalQuality
    partial: NotRequired[bool]


EventMessage = TypedDict(
    "EventMessage",
    {
        "type": Literal["event"],
        "camera": str,
        "event": EventKind,
        "zone": str,
        "track_id": int,
        "class": str,
        "t_s": float,
        "duration_s": float,
    },
)
with_config(_CLOSED)(EventMessage)


@with_config(_CLOSED)
class ErrorMessage(TypedDict):
    type: Literal["error"]
    camera: str
    kind: ErrorKind
    message: str


WorkerMessage = ReadyMessage | HealthMessage | SummaryMessage | EventMessage | ErrorMessage


@functools.cache
def _messages() -> TypeAdapter[WorkerMessage]:
    """Built on first use: a pole without cameras never pays for it (about 0.7 MB)."""
    return TypeAdapter(Annotated[WorkerMessage, Field(discriminator="type")])


class MalformedLineError(ValueError):
    """A stdout line that is not one of the worker's messages."""


def parse_line(line: bytes | str) -> WorkerMessage:
    """One line of a worker's stdout as its message; ``MalformedLineError`` if it is none.

    Strict: a number in quotes or a missing key is refused, not guessed at.
    """
    try:
        return _messages().validate_json(line, strict=True)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise MalformedLineError(f"{where}: {first['msg']}" if where else first["msg"]) from exc


def encode(message: WorkerMessage) -> str:
    """One message as its line, without the newline; ``ValueError`` for NaN or infinity,
    which JSON cannot carry."""
    return json.dumps(message, allow_nan=False)


def command(
    python: str, camera: str, config: CameraConfig, *, v2x: V2xConfig | None = None
) -> list[str]:
    """The worker's command line for one camera (``config`` and ``v2x`` with absolute
    paths). Every camera gets the pole's ``v2x:`` section: one without a geo-calibration
    sends nothing and says why in its health."""
    argv = [
        python,
        "-m",
        WORKER_MODULE,
        "--camera",
        camera,
        "--config",
        config.model_dump_json(by_alias=True),
    ]
    if v2x is not None:
        argv += ["--v2x", v2x.model_dump_json()]
    return [*argv, "--exit-with-stdin"]
