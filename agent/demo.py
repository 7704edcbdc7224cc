"""``smartpole demo``: a whole simulated pole in one terminal, for newcomers.

Starts ``smartpole sim`` and ``smartpole run`` as separate processes, exactly as a test rig
would, then shows the daemon's live point table through the local API. Nothing here is a
shortcut around the product: every value on screen crossed a pseudo-terminal as Modbus RTU
and came back through the Unix-socket API.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any

from smartpole.agent import diag
from smartpole.agent.api import SOCKET_NAME, call
from smartpole.agent.core.errors import AgentError, ApiError

START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 5.0
SERVING = re.compile(r"^serving bus (\S+) at (?:tcp://)?(\S+)")
CLEAR = "\x1b[H\x1b[2J"


def _command() -> list[str]:
    return [sys.executable, "-m", "smartpole.agent"]


def _read_serving(sim: subprocess.Popen[str], buses: int) -> dict[str, str]:
    assert sim.stdout is not None
    ports: dict[str, str] = {}
    deadline = time.monotonic() + START_TIMEOUT_S
    while len(ports) < buses and time.monotonic() < deadline:
        line = sim.stdout.readline()
        if not line:
            raise AgentError("the simulator exited before serving its buses (see its log)")
        if match := SERVING.match(line):
            ports[match.group(1)] = match.group(2)
            print(line.rstrip())
    return ports


def _wait_for_api(socket: Path, daemon: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if daemon.poll() is not None:
            raise AgentError(f"the daemon exited with code {daemon.returncode} (see its log)")
        with contextlib.suppress(ApiError):
            call(socket, "status", timeout_s=1.0)
            return
        time.sleep(0.1)  # polling a condition with a deadline, not standing in for one
    raise AgentError(f"the daemon did not open its API at {socket} in {START_TIMEOUT_S} s")


def _stop(process: subprocess.Popen[str], name: str) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        print(f"{name} did not stop within {STOP_TIMEOUT_S} s and was killed", file=sys.stderr)
        return -9


def _screen(
    status: dict[str, Any], points: list[dict[str, Any]], left: str, rows: int | None
) -> str:
    """One frame of the demo; with ``rows`` (a terminal), each device's points are cut to fit."""
    header = [
        f"smartpole demo - {diag.clock()} - {left}",
        f"pole {status['pole']}: {status['summary']}",
        "Every device below is simulated on a pseudo-terminal or a loopback port and speaks",
        "its real protocol; the table is the daemon's point table, read through its local API.",
        "",
        diag.render_devices(status),
        "",
    ]
    footer = ["", "More: smartpole diag status | points | plan.  Ctrl-C stops the demo."]
    if rows is not None:
        room = rows - len("\n".join(header).splitlines()) - len(footer) - 4
        points = _fit(points, max(len(status["devices"]), room))
    return "\n".join([*header, diag.render_points(points), *footer])


def _fit(points: list[dict[str, Any]], room: int) -> list[dict[str, Any]]:
    """Keep the first points of every device so that all devices show within ``room`` rows."""
    devices = list(dict.fromkeys(p["device"] for p in points))
    if len(points) <= room:
        return points
    each = max(1, room // len(devices))
    kept: list[dict[str, Any]] = []
    for device in devices:
        own = [p for p in points if p["device"] == device]
        kept += own[:each]
    return kept


def run_demo(config: Path, *, duration_s: float, refresh_s: float) -> int:
    from smartpole.agent.buses.registry import load_config

    pole = load_config(config).pole
    interactive = sys.stdout.isatty()
    with tempfile.TemporaryDirectory(prefix="smartpole-demo-") as tmp:
        state = Path(tmp)
        log_path = state / "daemon.log"
        sim_log: IO[str]
        with (state / "sim.log").open("w") as sim_log, log_path.open("w") as daemon_log:
            sim = subprocess.Popen(
                [*_command(), "sim", "--config", str(config), "--log-format", "json"],
                stdout=subprocess.PIPE,
                stderr=sim_log,
                text=True,
            )
            daemon: subprocess.Popen[str] | None = None
            try:
                ports = _read_serving(sim, len(pole.buses))
                overrides = [
                    arg for bus, port in ports.items() for arg in ("--bus-port", f"{bus}={port}")
                ]
                daemon = subprocess.Popen(
                    [
                        *_command(),
                        "run",
                        "--config",
                        str(config),
                        "--state-dir",
                        str(state),
                        "--log-format",
                        "json",
                        *overrides,
                    ],
                    stderr=daemon_log,
                    text=True,
                )
                socket = state / SOCKET_NAME
                _wait_for_api(socket, daemon)
                _show(socket, duration_s, refresh_s, interactive)
            except KeyboardInterrupt:
                print()
            finally:
                code = _stop(daemon, "daemon") if daemon is not None else 1
                _stop(sim, "simulator")
        if code != 0:
            print(f"the daemon exited with code {code}; its log:", file=sys.stderr)
            print(log_path.read_text(), file=sys.stderr)
            return 1
    print(f"demo finished: the daemon stopped cleanly (exit {code}).")
    return 0


def _show(socket: Path, duration_s: float, refresh_s: float, interactive: bool) -> None:
    started = time.monotonic()
    while True:
        elapsed = time.monotonic() - started
        left = f"{elapsed:.0f} s of {duration_s:.0f} s" if duration_s else f"{elapsed:.0f} s"
        rows = shutil.get_terminal_size().lines if interactive else None
        screen = _screen(call(socket, "status"), call(socket, "points"), left, rows)
        print(CLEAR + screen if interactive else screen + "\n", flush=True)
        if duration_s and elapsed >= duration_s:
            return
        time.sleep(refresh_s)  # the refresh rate of the display
