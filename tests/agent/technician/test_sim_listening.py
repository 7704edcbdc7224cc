"""``smartpole sim --listen-window-ms``: a rig's simulated RS-485 devices listen to the line
the way libmodbus and many real devices do, so a rig can check its own master's pacing.

The scan is the master here: paced with no quiet period (``--quiet 0``) it asks unit 13
right after silent units 10-12, which a listening device takes for unit 12's answer.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from helpers.paths import REPO
from helpers.processes import SMARTPOLE, Proc, pole_config

UNIT = 13


def _fast_scan(port: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SMARTPOLE, "diag", "scan", "--port", port, "--bauds", "9600",
         "--units", "10-16", "--quiet", "0", "--json"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


@pytest.mark.parametrize(("window_ms", "found"), [("500", False), ("0", True)])
def test_a_listening_simulated_device_ignores_a_request_sent_too_soon(
    simulator: Callable[..., Proc], tmp_path: Path, window_ms: str, found: bool
) -> None:
    sim = simulator(pole_config(tmp_path, unit_id=UNIT), "--listen-window-ms", window_ms)
    scan = _fast_scan(sim.extra["rs485-1"])
    assert (scan.returncode == 0) is found, (scan.stdout, scan.stderr)
    if found:
        assert f'"unit": {UNIT}' in scan.stdout, scan.stdout


def test_a_negative_listen_window_is_refused(tmp_path: Path) -> None:
    done = subprocess.run(
        [*SMARTPOLE, "sim", "--config", str(pole_config(tmp_path)), "--listen-window-ms", "-1"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2, done
    assert "--listen-window-ms must be 0 or more" in done.stderr
