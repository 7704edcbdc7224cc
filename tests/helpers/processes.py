"""Real smartpole processes for the tests: the command line, the pole config, the log, the API.

The ``spawn``, ``simulator``, ``daemon`` and ``polled_pole`` fixtures in ``conftest.py`` start
them; what a test does with a running one (read its JSON log, ask its API, point a daemon at
what a simulator serves) is here.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from helpers.paths import PROFILES
from smartpole.agent.api import call

SMARTPOLE = [sys.executable, "-m", "smartpole.agent"]
# The line ``smartpole sim`` prints on stdout for each bus it serves.
SERVING = re.compile(r"^serving bus (\S+) at (?:tcp://)?(\S+)")


def pole_config(
    tmp_path: Path,
    *,
    port: str = "/dev/ttyUSB0",
    sections: Mapping[str, Any] | None = None,
    **device: Any,
) -> Path:
    """A one-bus, one-weather-station pole config tuned for fast tests, with ``sections``
    (``cameras``, ``v2x``, ``site``, ...) added at the top."""
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
        **(sections or {}),
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


def bus_ports(sim: Proc) -> list[str]:
    """``--bus-port`` arguments pointing the daemon at everything ``sim`` serves."""
    return [arg for bus, where in sim.extra.items() for arg in ("--bus-port", f"{bus}={where}")]


def api(proc: Proc, method: str) -> Any:
    """Ask a running daemon's local API."""
    return call(Path(proc.extra["socket"]), method)
