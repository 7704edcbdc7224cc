"""The daemon against meters we did not write: libmodbus over RTU on a pty and over loopback TCP.

The bus-level quirks (wrong unit, slow, dead, hung) are in
``tests/agent/buses/test_libmodbus_device.py``; here the whole process reads two field-like
SDM120s (input registers only, float32 big-endian, exception 2 between the parameters) and
its API shows every value right, both devices online and the holes learnt into its plan.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from helpers.libmodbus_device import DeviceConfig, LibmodbusDevice, as_f32, f32_words
from helpers.paths import PROFILES
from helpers.processes import Proc, api
from helpers.waiting import wait_until

READINGS = {"voltage": 230.2, "current": 1.25, "frequency": 50.0, "total_energy": 1234.5}
ADDRESSES = {"voltage": 0x0000, "current": 0x0006, "frequency": 0x0046, "total_energy": 0x0156}
METER = DeviceConfig(unit=3, input={ADDRESSES[p]: f32_words(v) for p, v in READINGS.items()})


def test_the_daemon_reads_libmodbus_meters_over_rtu_and_tcp(
    tmp_path: Path, daemon: Callable[..., Proc]
) -> None:
    with (
        LibmodbusDevice(METER, "rtu", tmp_path) as rtu,
        LibmodbusDevice(METER, "tcp", tmp_path) as tcp,
    ):
        meter = {"profile": "eastron-sdm120", "unit_id": 3, "poll_period_s": 0.1}
        config = tmp_path / "pole.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "pole": {"id": "libmodbus-pole"},
                    "profiles_dir": str(PROFILES),
                    "buses": {"rs485": rtu.bus(timeout_s=0.3), "lan": tcp.bus(timeout_s=0.3)},
                    "devices": {
                        "rtu-meter": {**meter, "bus": "rs485"},
                        "tcp-meter": {**meter, "bus": "lan"},
                    },
                },
                sort_keys=False,
            )
        )
        run = daemon(config)

        def read_right() -> dict[tuple[str, str], Any] | None:
            points = {(p["device"], p["point"]): p for p in api(run, "points")}
            right = all(
                points[(device, point)]["quality"] == "good"
                and math.isclose(points[(device, point)]["value"], as_f32(value), rel_tol=1e-6)
                for device in ("rtu-meter", "tcp-meter")
                for point, value in READINGS.items()
            )
            return points if right else None

        wait_until(read_right, 20, "both meters read right")
        status = api(run, "status")
        assert status["summary"].startswith("2/2 devices online"), status["summary"]
        for device in status["devices"]:
            # Refusals only (the holes, and the parameters this meter lacks): nothing lost.
            assert device["counters"]["timeout"] == 0, device
            assert device["counters"]["wrong_unit"] == 0, device
        assert run.stop()[0] == 0
        for served in (rtu, tcp):
            seen = served.requests()
            assert seen
            assert all(r.unit == 3 and r.function == 4 for r in seen)
