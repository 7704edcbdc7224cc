"""The daemon process: run one pole until asked to stop, and keep systemd informed.

The pole is assembled by ``pole.py``; this module owns what belongs to the process: the
signals, the sd_notify protocol (READY once the API answers, a STATUS line, the watchdog),
the periodic flush of last values, and a clean stop. On SIGTERM every task is cancelled,
the ports close, last values are flushed to disk, and the process exits well inside
systemd's stop timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import resource
import signal
import time
from collections.abc import Callable
from pathlib import Path

import structlog

from smartpole.agent.config.loader import LoadedConfig
from smartpole.agent.core.clock import clock_is_synchronised
from smartpole.agent.pole import Pole
from smartpole.agent.sdnotify import Notifier, run_watchdog

log = structlog.get_logger("smartpole.daemon")

FLUSH_PERIOD_S = 60.0
STATUS_PERIOD_S = 5.0
#: how long a task may take to end after it was cancelled before it is cancelled again
#: (longer than a camera worker's SIGTERM-to-SIGKILL wait; three rounds fit in systemd's
#: 15 s stop timeout)
CANCEL_GRACE_S = 4.0


class _StopRequestedError(Exception):
    """Raised inside the task group to end it; never escapes the daemon."""


class Daemon:
    def __init__(
        self,
        config: LoadedConfig,
        *,
        state_dir: Path,
        runtime_dir: Path,
        notifier: Notifier,
        clock_trusted: Callable[[], bool] | None = None,
    ) -> None:
        self.config = config
        self.notifier = notifier
        self.pole = Pole(
            config,
            state_dir=state_dir,
            runtime_dir=runtime_dir,
            clock_trusted=clock_trusted or clock_is_synchronised,
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set; raises only on a bug (so systemd restarts us)."""
        pole = self.pole
        raise_open_files_limit()
        async with pole:
            log.info(
                "daemon_started",
                pole=self.config.pole.pole.id,
                config=str(self.config.path),
                buses=len(pole.buses),
                devices=len(self.config.pole.devices),
                restored_points=pole.restored,
                pid=os.getpid(),
            )
            self.notifier.ready()
            # Everything built so far (config models, profiles, plans) lives as long as the
            # process: keep it out of the collector's full passes, which otherwise walk it
            # every few seconds on a busy gateway (about a tenth of its CPU).
            gc.collect()
            gc.freeze()
            try:
                async with asyncio.TaskGroup() as group:
                    running = [
                        group.create_task(task(), name=name) for name, task in pole.tasks().items()
                    ]
                    running.append(group.create_task(run_watchdog(self.notifier), name="watchdog"))
                    running.append(group.create_task(self._report_status(), name="status"))
                    running.append(group.create_task(self._flush_periodically(), name="flush"))
                    group.create_task(_stop_when_set(stop, running), name="stop")
            except* _StopRequestedError:
                pass
        log.info("daemon_stopped", uptime_s=round(time.time() - pole.started_at, 1))

    async def _report_status(self) -> None:
        last = ""
        while True:
            text = self.pole.buses.summary()
            if text != last:
                self.notifier.status(text)
                last = text
            await asyncio.sleep(STATUS_PERIOD_S)

    async def _flush_periodically(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_PERIOD_S)
            self.pole.store.flush(self.pole.table)


def raise_open_files_limit() -> None:
    """Lift the soft descriptor limit to the hard one: the API caps its connections, but
    buses, cameras, the outbox and the uplink all need descriptors, and the usual soft
    limit of 1,024 is a needless edge to fall off."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft == resource.RLIM_INFINITY or soft >= hard:
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (OSError, ValueError) as exc:
        log.warning("open_files_limit_kept", soft=soft, hard=hard, error=str(exc))
        return
    log.info("open_files_limit_raised", soft=soft, to=hard)


async def _stop_when_set(stop: asyncio.Event, tasks: list[asyncio.Task[None]]) -> None:
    """Once ``stop`` is set, cancel ``tasks`` until every one has ended, then end the group.

    A task group cancels its tasks once. A library that loses that cancellation (Python
    3.11's ``wait_for`` does, see drivers/cancellation.py) would leave its task running and
    the daemon stopping until systemd kills it, with the last values unsaved; so a task
    still running after CANCEL_GRACE_S is named in the log and cancelled again.
    """
    await stop.wait()
    pending = {task for task in tasks if not task.done()}
    named: set[str] = set()
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=CANCEL_GRACE_S)
        for task in pending:
            if task.get_name() not in named:
                named.add(task.get_name())
                log.warning("task_outlived_cancel", task=task.get_name(), waited_s=CANCEL_GRACE_S)
    raise _StopRequestedError


async def serve(daemon: Daemon) -> None:
    """Run ``daemon`` with SIGTERM/SIGINT handling; the process' main coroutine."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def request_stop(signum: int) -> None:
        if not stop.is_set():
            log.info("stop_requested", signal=signal.Signals(signum).name)
            daemon.notifier.stopping()
            stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, request_stop, signum)
    try:
        await daemon.run(stop)
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(ValueError, RuntimeError):
                loop.remove_signal_handler(signum)
