"""``diag scan`` with its default timing against devices that listen to the line.

libmodbus and many RS-485 devices take the frame after a request for another unit for that
unit's answer and ignore it (for up to 0.5 s in libmodbus). The pty simulator listens that
way (``listen_window_s``); the scan runs as a subprocess, waited for off the event loop,
which serves the simulator, so every wait is on the scan's exit. Units 10-16 at 9600 baud
keep the run to seconds: the device at 13 is asked after three silent units, which a 0.1 s
pace meets while the device still waits for unit 12's answer.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess

import pytest

from helpers.paths import REPO
from helpers.processes import SMARTPOLE
from smartpole.drivers.modbus.points import RegisterKind
from smartpole.drivers.sim.modbus_bank import RegisterBank
from smartpole.drivers.sim.rtu_line import LIBMODBUS_REPLY_WINDOW_S
from smartpole.drivers.sim.rtu_pty import RtuPtyServer

UNIT = 13
UNITS = "10-16"


async def _smartpole(*args: str) -> tuple[int, str, str]:
    """The CLI in a subprocess, waited for off the loop, which serves the simulator."""
    done = await asyncio.to_thread(
        subprocess.run, [*SMARTPOLE, *args], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    return done.returncode, done.stdout, done.stderr


def _bank() -> RegisterBank:
    bank = RegisterBank()
    bank.set(RegisterKind.HOLDING, 0, [0x2A])
    return bank


@pytest.mark.asyncio
async def test_default_scan_finds_a_listening_device_among_silent_units() -> None:
    async with RtuPtyServer(
        {UNIT: _bank()}, baudrate=9600, listen_window_s=LIBMODBUS_REPLY_WINDOW_S
    ) as sim:
        path = sim.path
        code, out, err = await _smartpole(
            "diag", "scan", "--port", path, "--bauds", "9600", "--units", UNITS, "--json"
        )
    assert code == 0, (out, err)
    report = json.loads(out)
    assert [(d["unit"], d["values"], d["late"]) for d in report["devices"]] == [(UNIT, [42], False)]
    assert sim.stats.ignored == 0, "no request was taken for another unit's answer"

    # The estimate was printed before the scan started, and it held within 25 %.
    first = err.splitlines()[0]
    printed = re.fullmatch(
        rf"scanning {re.escape(path)}: units {UNITS} at 9600 baud, about (\d+\.\d) s", first
    )
    assert printed, err
    assert float(printed.group(1)) == pytest.approx(report["estimate_s"], abs=0.05)
    elapsed = report["elapsed_s"]
    assert 0.75 * elapsed <= report["estimate_s"] <= 1.25 * elapsed, (report, err)
    assert "9600 baud done: 1 found" in err, "progress off a terminal: a line per baud rate"


@pytest.mark.asyncio
async def test_a_scan_paced_too_fast_misses_it_and_says_what_helps() -> None:
    async with RtuPtyServer(
        {UNIT: _bank()}, baudrate=9600, listen_window_s=LIBMODBUS_REPLY_WINDOW_S
    ) as sim:
        code, out, err = await _smartpole(
            "diag", "scan", "--port", sim.path, "--bauds", "9600", "--units", UNITS, "--quiet", "0"
        )
    assert code == 1, (out, err)
    assert sim.stats.ignored >= 1, "the device took its own request for unit 12's answer"
    assert "--quiet 0 is shorter than devices that listen to the line" in out
    assert out.index("--quiet 0 is") < out.index("--thorough"), "the hint that helps comes first"
