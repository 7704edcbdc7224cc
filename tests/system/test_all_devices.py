"""Every device profile at once, over every transport: the daemon reads what the manual says.

The simulators serve each profile's first test vector (raw registers or meter data from the
manual's examples); the daemon polls them over pseudo-terminals (Modbus RTU, DL/T 645,
Pelco-D) and loopback TCP (Modbus TCP, RTU over TCP), and every decoded value must equal the
vector's expected value.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from helpers.paths import PROFILES
from helpers.processes import Proc, api, bus_ports
from helpers.waiting import wait_until
from smartpole.agent.buses.registry import load_profile

BUSES = {
    "rs485-a": {"type": "modbus-rtu", "port": "/dev/null", "timeout_s": 0.3},
    "gateway": {"type": "modbus-rtu-over-tcp", "host": "127.0.0.1", "port": 1, "timeout_s": 0.5},
    "lan": {"type": "modbus-tcp", "host": "127.0.0.1", "port": 1, "timeout_s": 0.5},
    # A pseudo-terminal cannot keep even parity across reopens; real meters use 8E1.
    "meters": {"type": "dlt645", "port": "/dev/null", "parity": "N", "timeout_s": 1.0},
    "ptz": {"type": "pelco-d", "port": "/dev/null", "timeout_s": 0.5},
}
DEVICES = {
    "weather": {"profile": "cwt-uwd", "bus": "rs485-a", "unit_id": 1},
    "wind": {"profile": "renke-rs-fsjt-n01", "bus": "rs485-a", "unit_id": 2},
    "supply": {"profile": "chint-dtsu666", "bus": "rs485-a", "unit_id": 3},
    "lamp": {"profile": "lamp-controller", "bus": "rs485-a", "unit_id": 4},
    "three-phase": {"profile": "eastron-sdm630", "bus": "rs485-a", "unit_id": 5},
    "single-phase": {"profile": "eastron-sdm120", "bus": "gateway", "unit_id": 1},
    "relays": {"profile": "relay-8ch", "bus": "lan", "unit_id": 1},
    "charger": {"profile": "alfen-ng9xx", "bus": "lan", "unit_id": 2},
    "billing": {"profile": "dlt645-meter", "bus": "meters", "address": "000000000001"},
    "camera": {"profile": "pelco-d-ptz", "bus": "ptz", "address": "3"},
    "cabinet": {"profile": "cabinet-monitor", "bus": "rs485-a", "unit_id": 9},
    "noise": {"profile": "sonbest-sm7901", "bus": "rs485-a", "unit_id": 10},
    "particulates": {"profile": "deltaohm-pmsense", "bus": "rs485-a", "unit_id": 11},
    "air": {"profile": "sensorbee-air-pro", "bus": "rs485-a", "unit_id": 12},
    "flood": {"profile": "rs485-level-transmitter", "bus": "rs485-a", "unit_id": 13},
}


def test_the_demo_of_every_profile_is_covered() -> None:
    # The pole MCU's byte-exact vectors are firmware-bridge/vectors, run by the C tests and
    # tests/drivers/mcu/test_vectors.py; tests/system/test_mcu_bridge.py drives it through the
    # daemon.
    shipped = {path.stem for path in PROFILES.glob("*.yaml")} - {"pole-mcu"}
    assert shipped == {d["profile"] for d in DEVICES.values()}, "add new profiles here"


def _same(expected: object, got: object) -> bool:
    if isinstance(expected, bool | str):
        return expected == got
    if not isinstance(got, int | float) or isinstance(got, bool):
        return False
    return math.isclose(float(got), float(expected), rel_tol=1e-6, abs_tol=1e-9)  # type: ignore[arg-type]


def test_daemon_decodes_every_profile_vector_over_ptys_and_tcp(
    tmp_path: Path, simulator: Callable[..., Proc], daemon: Callable[..., Proc]
) -> None:
    config = tmp_path / "pole.yaml"
    devices = {name: {**d, "poll_period_s": 0.5} for name, d in DEVICES.items()}
    config.write_text(
        yaml.safe_dump(
            {
                "pole": {"id": "rig"},
                "profiles_dir": str(PROFILES),
                "buses": BUSES,
                "devices": devices,
            },
            sort_keys=False,
        )
    )
    sim = simulator(config, "--values", "vectors")
    assert set(sim.extra) == set(BUSES)
    run = daemon(config, *bus_ports(sim))

    expected: dict[tuple[str, str], Any] = {}
    for name, device in DEVICES.items():
        profile = load_profile(PROFILES / f"{device['profile']}.yaml")
        vectors = getattr(profile, "test_vectors", [])
        if vectors:
            for point, value in vectors[0].expect.items():
                expected[(name, point)] = value
    assert {device for device, _ in expected} == set(DEVICES) - {"camera"}

    def everything_read() -> dict[tuple[str, str], dict[str, Any]] | None:
        points = {(p["device"], p["point"]): p for p in api(run, "points")}
        ready = all(points[key]["timestamp"] for key in expected)
        camera = points[("camera", "pan")]["quality"] == "good"
        return points if ready and camera else None

    points = wait_until(everything_read, 30, "every device to be read")
    wrong = {
        f"{device}.{point}": (value, points[(device, point)]["value"])
        for (device, point), value in expected.items()
        if not _same(value, points[(device, point)]["value"])
    }
    assert not wrong, f"decoded differently from the profiles' vectors: {wrong}"
    status = api(run, "status")
    assert status["summary"].startswith(f"{len(DEVICES)}/{len(DEVICES)} devices online")
    assert all(bus["state"] == "connected" for bus in status["buses"])
    assert run.stop()[0] == 0
