"""Fixtures and hooks for the whole suite: real simulator and daemon processes over real ptys.

What a test imports (process handles, waiting, paths, the broker) lives in ``helpers/``.
"""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, settings

from helpers.leaks import PendingTasks
from helpers.processes import SERVING, SMARTPOLE, Proc, pole_config
from helpers.waiting import wait_until
from smartpole.agent.api import SOCKET_NAME, call
from smartpole.agent.core.errors import ApiError

# The suite shares two cores with broker, simulator and daemon processes, so how fast
# Hypothesis can generate inputs says nothing about the code under test: its "too slow"
# health check only made runs flaky. Every property is still checked on every example.
settings.register_profile("smartpole", suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("smartpole")


@pytest.fixture(scope="session", autouse=True)
def _pending_tasks() -> Iterator[PendingTasks]:
    pending = PendingTasks()
    with pending.watching():
        yield pending


@pytest.fixture(autouse=True)
def _no_leaks(_pending_tasks: PendingTasks) -> Iterator[None]:
    """A test that leaves a thread running or an asyncio task pending hides a resource that
    was never closed.

    Being autouse, this is set up before the test's event loop and torn down after it, so
    the tasks are those its runner found pending when it closed (see ``helpers.leaks``).
    """
    stale = _pending_tasks.take()
    assert not stale, f"an event loop closed between tests with asyncio tasks pending: {stale}"
    before = set(threading.enumerate())
    yield
    for thread in threading.enumerate():
        if thread not in before and thread.name.startswith("asyncio-waitpid"):
            # asyncio's child watcher: its thread hands the exit status to the loop and then
            # ends; a test that awaited its process can finish a moment before it does.
            thread.join(timeout=5)
    leaked = [t for t in threading.enumerate() if t not in before and t.is_alive()]
    pending = _pending_tasks.take()
    assert not leaked, f"test left threads running: {leaked}"
    assert not pending, f"test left asyncio tasks pending: {pending}"


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., Proc]]:
    """Start ``smartpole ARGS`` with JSON logs to a file; every process is killed at the end."""
    started: list[Proc] = []

    def start(*args: str, env: dict[str, str] | None = None, name: str = "proc") -> Proc:
        log_path = tmp_path / f"{name}-{len(started)}.log"
        with log_path.open("w") as log:
            process = subprocess.Popen(
                [*SMARTPOLE, *args, "--log-format", "json"],
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                env={**os.environ, **(env or {})},
            )
        proc = Proc(process, log_path)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.kill()


@pytest.fixture
def simulator(spawn: Callable[..., Proc]) -> Callable[..., Proc]:
    """Start ``smartpole sim`` for a config; ``proc.extra[bus]`` is the pty it serves."""

    def start(config: Path, *args: str) -> Proc:
        proc = spawn("sim", "--config", str(config), *args, name="sim")
        assert proc.process.stdout is not None
        buses = yaml.safe_load(config.read_text())["buses"]
        for _ in buses:
            line = proc.process.stdout.readline()
            match = SERVING.match(line)
            assert match, (
                f"simulator did not print its endpoint, got {line!r}: {proc.log_path.read_text()}"
            )
            proc.extra[match.group(1)] = match.group(2)
        return proc

    return start


@pytest.fixture
def daemon(spawn: Callable[..., Proc], tmp_path: Path) -> Callable[..., Proc]:
    """Start ``smartpole run``; waits until its API answers."""

    def start(config: Path, *args: str, env: dict[str, str] | None = None) -> Proc:
        state = tmp_path / "state"
        proc = spawn(
            "run", "--config", str(config), "--state-dir", str(state), *args, env=env, name="daemon"
        )
        proc.extra["socket"] = str(state / SOCKET_NAME)

        def answering() -> bool:
            assert proc.process.poll() is None, f"daemon exited: {proc.log_path.read_text()}"
            try:
                call(Path(proc.extra["socket"]), "status", timeout_s=1.0)
            except ApiError:
                return False
            return True

        wait_until(answering, 15, "the daemon's API")
        return proc

    return start


@pytest.fixture
def polled_pole(
    tmp_path: Path, simulator: Callable[..., Proc], daemon: Callable[..., Proc]
) -> Callable[..., Proc]:
    """The daemon polling a simulated weather station; ``sim_args`` go to ``smartpole sim``."""

    def start(*sim_args: str, env: dict[str, str] | None = None) -> Proc:
        config = pole_config(tmp_path)
        sim = simulator(config, *sim_args)
        return daemon(config, "--bus-port", f"rs485-1={sim.extra['rs485-1']}", env=env)

    return start
