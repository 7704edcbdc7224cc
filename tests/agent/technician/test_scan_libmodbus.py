"""``diag scan`` with its default timing finds a libmodbus RTU device among silent units.

libmodbus is a Modbus implementation we did not write; as an RTU server it takes the frame
after a request for another unit for that unit's answer and drops it, the way many RS-485
devices listen to the line. A scan paced for devices that do not listen asked the next unit
too soon and never found it. The bounded test scans seven units around the device in the
middle of the address range; the soak test scans every unit (about 2.5 min at 9600 baud).
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from helpers.libmodbus_device import DeviceConfig, LibmodbusDevice
from helpers.paths import REPO
from helpers.processes import SMARTPOLE

UNIT = 124  # the middle of 1..247


def _scan(tmp_path: Path, units: str) -> tuple[dict[str, object], str, list[int]]:
    config = DeviceConfig(unit=UNIT, holding={0: [42]}, baudrate=9600)
    with LibmodbusDevice(config, "rtu", tmp_path) as device:
        done = subprocess.run(
            [*SMARTPOLE, "diag", "scan", "--port", device.path, "--bauds", "9600",
             "--units", units, "--json"],
            cwd=REPO, capture_output=True, text=True, timeout=600, check=False,
        )  # fmt: skip
        asked = [request.unit for request in device.requests()]
    assert done.returncode == 0, (done.stdout, done.stderr)
    return json.loads(done.stdout), done.stderr, asked


def _check(report: dict[str, object], err: str, asked: list[int], units: str) -> None:
    devices = report["devices"]
    assert isinstance(devices, list)
    assert [(d["unit"], d["values"]) for d in devices] == [(UNIT, [42])], (report, err)
    assert asked == [UNIT], "the device answered the first time it was asked"
    printed = re.search(rf"units {units} at 9600 baud, about ([\d.]+) (s|min)", err.splitlines()[0])
    assert printed, err  # the estimate comes before the scan starts
    estimate, elapsed = report["estimate_s"], report["elapsed_s"]
    assert isinstance(estimate, float)
    assert isinstance(elapsed, float)
    assert 0.75 * elapsed <= estimate <= 1.25 * elapsed, (estimate, elapsed)


def test_default_scan_finds_a_libmodbus_device_among_the_units_around_it(tmp_path: Path) -> None:
    units = f"{UNIT - 4}-{UNIT + 3}"
    report, err, asked = _scan(tmp_path, units)
    _check(report, err, asked, units)


@pytest.mark.soak
@pytest.mark.timeout(600)  # 247 units at 9600 baud take about 2.5 min
def test_default_scan_of_every_unit_finds_a_libmodbus_device_in_the_middle(tmp_path: Path) -> None:
    report, err, asked = _scan(tmp_path, "1-247")
    _check(report, err, asked, "1-247")
