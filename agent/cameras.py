"""The pole's cameras: one worker process each, supervised, their output in the outbox.

The control loop must never stall on video: decoding, Numba and ONNX run in a separate
process per camera (``python -m smartpole.models.worker``), which owns the camera and sends
back only JSON lines (``smartpole.agent.config.camera_worker``): ready, health, summaries,
events, errors. ``CameraWorker`` starts one, reads those lines, restarts it with backoff
when it dies, and notices when it goes quiet: a worker that sends nothing for several
health periods is killed and restarted, so a hung decoder never becomes "a dead worker that
nobody notices". ``Cameras`` owns all of them and records what they report for the uplink.

A camera that delivers no frames is reported with the time it started, so power
management can power-cycle the device that feeds it (``power.<device>`` in the config).

Every worker gets a Numba cache folder it can write (``KernelCacheDir``): with one, a
restarted worker loads its compiled kernels in a fraction of a second; without one it
compiles them on every start (seconds of a core), and Numba may refuse to start at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from typing import Any

import structlog

from smartpole.agent.config.camera_worker import (
    EventMessage,
    HealthMessage,
    MalformedLineError,
    ReadyMessage,
    SummaryMessage,
    WorkerExit,
    command,
    parse_line,
)
from smartpole.agent.config.cameras import CameraConfig
from smartpole.agent.config.v2x import V2xConfig
from smartpole.agent.core.outbox import Outbox, OutboxError, Priority

log = structlog.get_logger("smartpole.cameras")

RESTART_MIN_S = 1.0
RESTART_MAX_S = 60.0
CONFIG_ERROR_RETRY_S = 300.0  # a bad model or line does not fix itself: retry rarely
SILENT_PERIODS = 5  # health periods without any line before the worker counts as hung
STOP_TIMEOUT_S = 3.0
NUMBA_CACHE_ENV = "NUMBA_CACHE_DIR"
NUMBA_CACHE_IN_STATE = "numba-cache"  # under $STATE_DIRECTORY when the unit names none
SummaryListener = Callable[[str, SummaryMessage], None]
EventListener = Callable[[str, EventMessage], None]
Task = Callable[[], Coroutine[Any, Any, None]]


class Cameras:
    """Every camera of the pole: a supervised worker each, summaries and events recorded.

    Run it by running each of ``tasks()`` (one per camera, named ``camera:<name>``) until
    cancelled; cancelling a task stops its worker process. Relative ``source`` and
    ``model`` paths are relative to ``config_dir``, the pole config's folder; ``python``
    is the interpreter the workers run under. ``v2x``, the pole's ``v2x:`` section, goes to
    every worker (``--v2x``): the geo-calibrated ones send roadside messages with it.
    """

    def __init__(
        self,
        cameras: Mapping[str, CameraConfig],
        config_dir: Path,
        outbox: Outbox,
        *,
        python: str = sys.executable,
        environ: Mapping[str, str] | None = None,
        v2x: V2xConfig | None = None,
    ) -> None:
        self._outbox = outbox
        self.kernel_cache = KernelCacheDir(environ)  # one for all: a fallback is made once
        self.workers = [
            CameraWorker(
                name,
                camera,
                config_dir,
                on_summary=self._record_summary,
                on_event=self._record_event,
                python=python,
                kernel_cache=self.kernel_cache,
                v2x=v2x,
            )
            for name, camera in cameras.items()
        ]

    def tasks(self) -> dict[str, Task]:
        return {f"camera:{worker.name}": worker.run for worker in self.workers}

    def status(self) -> list[dict[str, object]]:
        """Each camera's state, worker and latest ready and health lines (``diag cameras``)."""
        return [worker.status() for worker in self.workers]

    def problems(self) -> list[str]:
        """What a worker's latest health line says is doubtful about its video (a frame
        rate its timestamps contradict, ...) or wrong with its roadside unit's broker, for
        ``diag status``."""
        out = []
        for worker in self.workers:
            health = worker.last_health
            if health is None:
                continue
            for text in health["source_warnings"]:
                out.append(f"camera {worker.name}: {text}")
            v2x = health["v2x"]
            if v2x["state"] == "broker_down":
                out.append(
                    f"camera {worker.name}: the RSU's broker is unreachable; "
                    f"{v2x['dropped']} V2X messages dropped (never queued)"
                )
        return out

    def no_frames_since(self, device: str) -> float | None:
        """Since when a camera powered by ``device`` has delivered no frames (the earliest,
        if several), or None: power management treats the device as offline from then."""
        since = (w.no_frames_since for w in self.workers if w.config.device == device)
        return min((t for t in since if t is not None), default=None)

    def _record_summary(self, camera: str, summary: SummaryMessage) -> None:
        """A traffic summary goes up as the worker made it; frames never leave the worker."""
        payload = {k: v for k, v in summary.items() if k != "type"}
        # A failed append is counted and logged once by the outbox.
        with contextlib.suppress(OutboxError):
            self._outbox.append("traffic", payload, priority=Priority.NORMAL)

    def _record_event(self, camera: str, event: EventMessage) -> None:
        payload = {"source": "camera", **{k: v for k, v in event.items() if k != "type"}}
        with contextlib.suppress(OutboxError):
            self._outbox.append("events", payload, priority=Priority.HIGH)


class KernelCacheDir:
    """The Numba cache folder every worker is started with (``NUMBA_CACHE_DIR``).

    Which folder: ``NUMBA_CACHE_DIR`` from the daemon's environment (the systemd unit sets
    one in the state directory), else ``numba-cache`` in ``$STATE_DIRECTORY``, else none
    (Numba's own rules: a development checkout caches next to its sources). It is checked
    before each start because Numba does not cope with an unwritable one: with the package
    read-only (``ProtectSystem=strict``) and no writable home it cannot import the kernels
    at all. An unwritable folder is logged once (and once when it works again), shown in
    ``diag cameras``, and replaced by a private temporary folder: a compile per start,
    never a worker that cannot start.
    """

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = environ  # None: the daemon's environment at each start
        self.in_use: Path | None = None
        self.problem: str | None = None
        self.unwritable = 0  # starts that found the wanted folder unwritable
        self._fallback: Path | None = None

    def wanted(self) -> Path | None:
        environ = os.environ if self._environ is None else self._environ
        if environ.get(NUMBA_CACHE_ENV):
            return Path(environ[NUMBA_CACHE_ENV])
        state = environ.get("STATE_DIRECTORY", "").split(":")[0]  # systemd may list several
        return Path(state) / NUMBA_CACHE_IN_STATE if state else None

    def environment(self) -> dict[str, str] | None:
        """The environment for the next worker start; None: the daemon's own, unchanged."""
        wanted = self.wanted()
        if wanted is None:
            self.in_use = None
            return None if self._environ is None else dict(self._environ)
        error = _unwritable(wanted)
        if error is None:
            if self.problem is not None:
                log.info("numba_cache_writable", cache=str(wanted))
            self.problem = None
            self.in_use = wanted
        else:
            self.unwritable += 1
            fallback = self._fallback_dir()
            if self.problem is None:
                log.warning(
                    "numba_cache_unwritable",
                    cache=str(wanted),
                    error=error,
                    fallback=str(fallback) if fallback else None,
                )
            self.problem = f"{wanted}: {error}"
            self.in_use = fallback
        environ = dict(os.environ if self._environ is None else self._environ)
        if self.in_use is not None:
            environ[NUMBA_CACHE_ENV] = str(self.in_use)
        return environ

    def status(self) -> dict[str, object]:
        return {
            "folder": str(self.in_use) if self.in_use else None,
            "problem": self.problem,
            "unwritable_starts": self.unwritable,
        }

    def _fallback_dir(self) -> Path | None:
        if self._fallback is None:
            with contextlib.suppress(OSError):
                self._fallback = Path(tempfile.mkdtemp(prefix="smartpole-numba-"))
        return self._fallback


def _unwritable(folder: Path) -> str | None:
    """Why Numba could not write its cache in ``folder`` (its own test), or None."""
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        return f"{type(exc).__name__}: {exc.strerror or exc}"
    return None


class CameraWorker:
    """Runs and watches the worker of one camera until cancelled."""

    def __init__(
        self,
        name: str,
        config: CameraConfig,
        config_dir: Path,
        *,
        on_summary: SummaryListener,
        on_event: EventListener,
        python: str = sys.executable,
        kernel_cache: KernelCacheDir | None = None,
        v2x: V2xConfig | None = None,
    ) -> None:
        self.name = name
        self.config = config
        self._command = command(
            python,
            name,
            config.for_worker(config_dir),
            v2x=v2x.for_worker(config_dir) if v2x is not None else None,
        )
        self.kernel_cache = kernel_cache or KernelCacheDir()
        self._on_summary = on_summary
        self._on_event = on_event
        self.state = "starting"
        self.state_since = time.time()
        self.restarts = 0
        self.summaries = 0
        self.bad_lines = 0  # stdout lines that were not messages (a worker bug; logged each)
        self.last_error: str | None = None
        self.ready: ReadyMessage | None = None
        self.last_health: HealthMessage | None = None
        self.pid: int | None = None

    @property
    def no_frames_since(self) -> float | None:
        """Wall-clock time since which this camera has delivered no frames, or None."""
        if self.state in ("no_frames", "reconnecting", "worker_failed", "hung"):
            return self.state_since
        return None

    def status(self) -> dict[str, object]:
        return {
            "camera": self.name,
            "device": self.config.device,
            "state": self.state,
            "state_since": self.state_since,
            "pid": self.pid,
            "restarts": self.restarts,
            "summaries": self.summaries,
            "last_error": self.last_error,
            "ready": self.ready,
            "health": self.last_health,
            "numba_cache": self.kernel_cache.status(),
        }

    def _enter(self, state: str, **fields: object) -> None:
        if state == self.state:
            return
        bad = state not in ("ok", "starting")
        (log.warning if bad else log.info)(
            "camera_state", camera=self.name, state=state, previous=self.state, **fields
        )
        self.state = state
        self.state_since = time.time()

    async def run(self) -> None:
        delay = RESTART_MIN_S
        while True:
            started = time.monotonic()
            exit_code = await self._run_once()
            if exit_code == WorkerExit.BAD_INPUT:
                self._enter("config_error", error=self.last_error)
                await asyncio.sleep(CONFIG_ERROR_RETRY_S)
                continue
            if self.state not in ("hung",):
                self._enter("worker_failed", exit_code=exit_code, error=self.last_error)
            if time.monotonic() - started > 10 * RESTART_MAX_S:
                delay = RESTART_MIN_S  # it ran well for a long while: start over quickly
            self.restarts += 1
            await asyncio.sleep(delay)
            delay = min(delay * 2, RESTART_MAX_S)

    async def _run_once(self) -> int:
        process = await asyncio.create_subprocess_exec(
            *self._command,
            stdin=asyncio.subprocess.PIPE,  # held open, never written: closes if we die
            stdout=asyncio.subprocess.PIPE,
            stderr=None,  # the worker's log goes to the daemon's journal
            env=self.kernel_cache.environment(),
        )
        self.pid = process.pid
        assert process.stdout is not None
        silent_s = SILENT_PERIODS * self.config.health_period_s + 30.0  # first: model load
        try:
            while True:
                try:
                    async with asyncio.timeout(silent_s):
                        line = await process.stdout.readline()
                except TimeoutError:
                    self.last_error = f"no word from the worker for {silent_s:.0f} s"
                    self._enter("hung", error=self.last_error)
                    break
                if not line:
                    # The worker closed its output because it is exiting. Let asyncio's
                    # reaper see the exit before _stop signals it: signalling polls the
                    # child first, and a child reaped there reaches asyncio as exit 255,
                    # not as its own code (CPython gh-87744).
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(STOP_TIMEOUT_S):
                            await asyncio.shield(process.wait())
                    break
                silent_s = SILENT_PERIODS * self.config.health_period_s
                self._handle(line)
        finally:
            await _stop(process)
            self.pid = None
        return process.returncode if process.returncode is not None else -1

    def _handle(self, line: bytes) -> None:
        try:
            message = parse_line(line)
        except MalformedLineError as exc:
            self.bad_lines += 1
            log.warning(
                "camera_bad_line",
                camera=self.name,
                error=str(exc),
                line=line[:200].decode(errors="replace"),
            )
            return
        if message["type"] == "ready":
            self.ready = message
            log.info("camera_ready", camera=self.name, **_without(message, "type", "camera"))
        elif message["type"] == "health":
            self.last_health = message
            self._enter(message["state"])
        elif message["type"] == "summary":
            self.summaries += 1
            self._on_summary(self.name, message)
        elif message["type"] == "event":
            self._on_event(self.name, message)
        elif message["type"] == "error":
            self.last_error = f"{message['kind']}: {message['message']}"
            log.error("camera_error", camera=self.name, error=self.last_error)


def _without(message: Mapping[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in message.items() if k not in keys}


async def _stop(process: asyncio.subprocess.Process) -> None:
    """SIGTERM, then SIGKILL; also when we are being cancelled."""
    if process.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.terminate()
    try:
        await asyncio.shield(_wait_within(process, STOP_TIMEOUT_S))
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await asyncio.shield(process.wait())


async def _wait_within(process: asyncio.subprocess.Process, seconds: float) -> None:
    async with asyncio.timeout(seconds):
        await process.wait()
