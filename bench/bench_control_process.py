"""Resident memory and CPU of the control process while it polls the whole demo pole.

Runs the simulator and the daemon as separate processes, exactly as `make demo` does, for
60 s (``--seconds`` to change), and samples the daemon from /proc. The baseline, run side by
side, is a bare Python interpreter doing nothing: the floor no Python daemon can go under.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from smartpole.agent.api import SOCKET_NAME, call
from smartpole.agent.core.errors import ApiError

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / "configs" / "poles" / "demo.yaml"
TICKS = os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
    assert match, status
    return int(match.group(1))


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def total_polls(status: dict[str, Any]) -> int:
    return sum(int(device["polls"]) for device in status["devices"])


def wait_for_api(socket: Path, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            call(socket, "status", timeout_s=1.0)
            return
        except ApiError:
            time.sleep(0.1)
    raise SystemExit(f"daemon API did not come up at {socket}")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    cli = [sys.executable, "-m", "smartpole.agent"]
    with tempfile.TemporaryDirectory(prefix="smartpole-bench-") as tmp:
        sim = subprocess.Popen(
            [*cli, "sim", "--config", str(CONFIG), "--log-level", "warning"],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert sim.stdout is not None
        overrides = []
        for _ in yaml.safe_load(CONFIG.read_text())["buses"]:
            match = re.match(r"serving bus (\S+) at (?:tcp://)?(\S+)", sim.stdout.readline())
            assert match, "simulator did not start"
            overrides += ["--bus-port", f"{match.group(1)}={match.group(2)}"]
        daemon = subprocess.Popen(
            [*cli, "run", "--config", str(CONFIG), "--state-dir", tmp, "--log-level", "warning",
             *overrides]
        )  # fmt: skip
        bare = subprocess.Popen(
            [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
        )
        try:
            wait_for_api(Path(tmp) / SOCKET_NAME)
            polls_before = total_polls(call(Path(tmp) / SOCKET_NAME, "status"))
            cpu_before, started = cpu_s(daemon.pid), time.monotonic()
            peak = 0
            while time.monotonic() - started < args.seconds:
                peak = max(peak, rss_kib(daemon.pid))
                time.sleep(1.0)  # the sampling interval
            elapsed = time.monotonic() - started
            cpu = cpu_s(daemon.pid) - cpu_before
            status = call(Path(tmp) / SOCKET_NAME, "status")
            polls = total_polls(status) - polls_before
            bare_rss = rss_kib(bare.pid)
        finally:
            for process in (daemon, sim):
                process.send_signal(signal.SIGTERM)
            bare.communicate(b"")
            daemon_code = daemon.wait(timeout=10)
            sim.wait(timeout=10)
    print(f"BENCH control_rss_peak {peak / 1024:.1f} MiB")
    print(f"BENCH control_rss_vs_bare_python {peak / bare_rss:.2f} ratio")
    print(f"BENCH control_cpu_per_minute {cpu * 60 / elapsed:.3f} cpu-s/min")
    print(f"BENCH control_cpu_per_poll {1000 * cpu / max(polls, 1):.2f} cpu-ms/poll")
    print(f"BENCH control_polls_per_minute {polls * 60 / elapsed:.1f} polls/min")
    return daemon_code


if __name__ == "__main__":
    sys.exit(main())
