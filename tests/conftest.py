"""Shared fixtures: real simulator and daemon processes talking over real pseudo-terminals."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, settings

from smartpole.agent.api import SOCKET_NAME, call
from smartpole.agent.core.errors import ApiError

# The suite shares two cores with broker, simulator and daemon processes, so how fast
# Hypothesis can generate inputs says nothing about the code under test: its "too slow"
# health check only made runs flaky. Every property is still checked on every example.
settings.register_profile("smartpole", suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("smartpole")

REPO = Path(__file__).resolve().parent.parent
PROFILES = REPO / "configs" / "profiles"
SMARTPOLE = [sys.executable, "-m", "smartpole.agent"]
SERVING = re.compile(r"^serving bus (\S+) at (?:tcp://)?(\S+)")


@pytest.fixture(autouse=True)
def _no_leaked_threads() -> Iterator[None]:
    """A test that leaves a thread running hides a resource that was never closed."""
    before = set(threading.enumerate())
    yield
    leaked = [t for t in threading.enumerate() if t not in before and t.is_alive()]
    assert not leaked, f"test left threads running: {leaked}"


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "") -> Any:
    """Poll an observable condition until it holds; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")
        time.sleep(0.02)


async def eventually(predicate: Callable[[], Any], limit_s: float = 10.0, what: str = "") -> Any:
    """``wait_until`` for asyncio tests: polls without blocking the loop under test."""
    deadline = time.monotonic() + limit_s
    while not (result := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {limit_s} s waiting for {what or predicate}")
        await asyncio.sleep(0.02)
    return result


def pole_config(tmp_path: Path, *, port: str = "/dev/ttyUSB0", **device: Any) -> Path:
    """A one-bus, one-weather-station pole config tuned for fast tests."""
    settings = {
        "profile": "cwt-uwd",
        "bus": "rs485-1",
        "unit_id": 1,
        "poll_period_s": 0.2,
        "offline_after": 2,
        **device,
    }
    data = {
        "pole": {"id": "test-pole"},
        "profiles_dir": str(PROFILES),
        "buses": {"rs485-1": {"type": "modbus-rtu", "port": port, "timeout_s": 0.3}},
        "devices": {"weather": settings},
    }
    path = tmp_path / "pole.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@dataclass
class Proc:
    """A smartpole subprocess whose stderr (JSON log lines) goes to a file."""

    process: subprocess.Popen[str]
    log_path: Path
    extra: dict[str, str] = field(default_factory=dict)

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        out = []
        for line in self.log_path.read_text().splitlines():
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            if name is None or event.get("event") == name:
                out.append(event)
        return out

    def stop(self, timeout: float = 5.0) -> tuple[int, float]:
        """SIGTERM and wait; return (exit code, seconds it took)."""
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=timeout)
        return code, time.monotonic() - started

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., Proc]]:
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


def bus_ports(sim: Proc) -> list[str]:
    """``--bus-port`` arguments pointing the daemon at everything ``sim`` serves."""
    return [arg for bus, where in sim.extra.items() for arg in ("--bus-port", f"{bus}={where}")]


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


def api(proc: Proc, method: str) -> Any:
    return call(Path(proc.extra["socket"]), method)


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
