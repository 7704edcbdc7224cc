"""The real daemon under ``smartpole-release`` (direct mode, no systemd): it says READY over
the switcher's notify socket, keeps running after that socket is gone, and reports a failed
upgrade found in ``releases.json`` without losing the switcher's own record."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from helpers.processes import pole_config
from helpers.release_tool import TOOL_ARGV
from helpers.waiting import wait_until
from smartpole.agent.api import SOCKET_NAME, call

ROLLED = {
    "version": "9.8", "from": "9.7", "at": 1767225950.5, "outcome": "rolled_back",
    "reason": "release 9.8: not ready within 120 s", "reported": False,
}  # fmt: skip


def test_real_daemon_under_smartpole_release(tmp_path: Path) -> None:
    root = tmp_path / "r"
    release = root / "opt/smartpole/releases/9.9"
    (release / "bin").mkdir(parents=True)
    exe = release / "bin" / "smartpole"
    exe.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m smartpole.agent "$@"\n')
    exe.chmod(0o755)
    (release / ".complete").write_text("9.9")
    (root / "etc/smartpole").mkdir(parents=True)
    shutil.copy(pole_config(tmp_path), root / "etc/smartpole/pole.yaml")
    state = root / "var/lib/smartpole"
    state.mkdir(parents=True)
    (state / "releases.json").write_text(json.dumps({"version": 1, "history": [ROLLED]}))

    result = subprocess.run(
        [*TOOL_ARGV, "--root", str(root), "--timeout", "60", "activate", "9.9"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    pidfile = root / "run/smartpole-release/daemon.pid"
    pid = int(pidfile.read_text()) if pidfile.exists() else None
    log = root / "var/log/smartpole/daemon.log"
    try:
        assert result.returncode == 0, result.stderr + log.read_text()
        assert pid is not None
        # The switcher has exited, its socket with it: the daemon's next STATUS (the
        # weather station going offline) cannot be delivered. Logged once, and it runs on.
        wait_until(lambda: "sd_notify_failed" in log.read_text(), 30, "a failed sd_notify")
        status = call(root / "run/smartpole" / SOCKET_NAME, "status", timeout_s=10)
        assert status["pid"] == pid
        assert log.read_text().count("sd_notify_failed") == 1
        assert status["releases"]["unreported"] == 0
        history = json.loads((state / "releases.json").read_text())["history"]
        # The daemon marked the old failure before READY; the switcher appended after it.
        assert [(e["version"], e["outcome"], e["reported"]) for e in history] == [
            ("9.8", "rolled_back", True),
            ("9.9", "running", True),
        ]
        assert "release_failure_reported" in log.read_text()
    finally:
        if pid is not None:
            os.killpg(pid, signal.SIGTERM)
            wait_until(lambda: not Path(f"/proc/{pid}").exists() or _zombie(pid), 20, "stop")


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True
