"""Commands through the local API: range-checked, executed ahead of polls, read back, audited."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from helpers.paths import PROFILES
from helpers.processes import SMARTPOLE, Proc, api, bus_ports
from helpers.waiting import wait_until
from smartpole.agent.api import call
from smartpole.agent.core.errors import ApiError


@pytest.fixture
def pole(tmp_path: Path, simulator: Callable[..., Proc], daemon: Callable[..., Proc]) -> Proc:
    config = tmp_path / "pole.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "pole": {"id": "rig"},
                "profiles_dir": str(PROFILES),
                "buses": {
                    "rs485-1": {"type": "modbus-rtu", "port": "/dev/null", "timeout_s": 0.3},
                    "lan": {"type": "modbus-tcp", "host": "127.0.0.1", "timeout_s": 0.5},
                    "ptz": {"type": "pelco-d", "port": "/dev/null"},
                },
                "devices": {
                    "lamp": {"profile": "lamp-controller", "bus": "rs485-1", "unit_id": 4},
                    "relays": {"profile": "relay-8ch", "bus": "lan", "unit_id": 1},
                    "charger": {"profile": "alfen-ng9xx", "bus": "lan", "unit_id": 2},
                    "camera": {"profile": "pelco-d-ptz", "bus": "ptz", "address": "1"},
                },
            }
        )
    )
    sim = simulator(config)
    run = daemon(config, *bus_ports(sim))
    wait_until(lambda: "4/4 devices online" in api(run, "status")["summary"], 15, "online")
    return run


def _write(run: Proc, device: str, point: str, value: object) -> Any:
    return call(Path(run.extra["socket"]), "write", device=device, point=point, value=value)


def _audit(run: Proc) -> list[dict[str, Any]]:
    return call(Path(run.extra["socket"]), "audit", count=50)  # type: ignore[no-any-return]


def test_writes_are_checked_read_back_and_audited(pole: Proc) -> None:
    actor = f"local:uid={os.getuid()},pid={os.getpid()}"
    assert _write(pole, "lamp", "dim_level", 55) == 55
    assert _write(pole, "charger", "max_current", 10.5) == 10.5
    # The relay module is switched through its command register and read back from its
    # status bitmask; the profile's write block says how.
    assert _write(pole, "relays", "relay3", False) is False
    assert _write(pole, "relays", "relay3", True) is True

    with pytest.raises(ApiError, match=r"outside the allowed range 0\.0 to 100\.0 %"):
        _write(pole, "lamp", "dim_level", 150)
    with pytest.raises(ApiError, match="read-only"):
        _write(pole, "lamp", "supply_voltage", 230)
    with pytest.raises(ApiError, match="expected true or false"):
        _write(pole, "relays", "relay1", 1)
    with pytest.raises(ApiError, match="no point 'brightness'"):
        _write(pole, "lamp", "brightness", 1)
    assert _write(pole, "lamp", "dim_level", 55) == 55  # the refused write changed nothing

    records = _audit(pole)
    done = [(r["target"], r["requested"], r["read_back"]) for r in records if r["ok"]]
    assert done[:4] == [
        ("lamp.dim_level", 55, 55),
        ("charger.max_current", 10.5, 10.5),
        ("relays.relay3", False, False),
        ("relays.relay3", True, True),
    ]
    refused = [r for r in records if not r["ok"]]
    assert [r["target"] for r in refused] == [
        "lamp.dim_level",
        "lamp.supply_voltage",
        "relays.relay1",
        "lamp.brightness",
    ]
    assert all(r["actor"] == actor and r["error"] for r in refused)
    assert all(r["actor"] == actor for r in records)
    # The trail survives in the state directory as JSON lines.
    trail = (Path(pole.extra["socket"]).parent / "audit.jsonl").read_text().splitlines()
    assert len(trail) == len(records)
    assert pole.stop()[0] == 0


def test_ptz_preset_is_audited_with_the_position_read_back(pole: Proc) -> None:
    socket = Path(pole.extra["socket"])
    position = call(socket, "ptz", device="camera", preset=2)
    assert set(position) == {"pan", "tilt"}
    with pytest.raises(ApiError, match="95"):
        call(socket, "ptz", device="camera", preset=95)  # reserved: opens the camera's menu
    with pytest.raises(ApiError, match="not a PTZ camera"):
        call(socket, "ptz", device="lamp", preset=1)
    records = [r for r in _audit(pole) if r["action"] == "ptz_preset"]
    assert [(r["requested"], r["ok"]) for r in records] == [(2, True), (95, False)]
    assert records[0]["read_back"] == position
    assert pole.stop()[0] == 0


def test_readings_that_are_not_physical_are_never_good(
    tmp_path: Path, simulator: Callable[..., Proc], daemon: Callable[..., Proc]
) -> None:
    config = tmp_path / "pole.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "pole": {"id": "rig"},
                "profiles_dir": str(PROFILES),
                "buses": {"lan": {"type": "modbus-tcp", "host": "127.0.0.1"}},
                "devices": {
                    "charger": {
                        "profile": "alfen-ng9xx",
                        "bus": "lan",
                        "unit_id": 1,
                        "poll_period_s": 0.2,
                    }
                },
            }
        )
    )
    control = tmp_path / "sim.sock"
    sim = simulator(config, "--control", str(control))
    run = daemon(config, *bus_ports(sim))
    wait_until(lambda: "1/1 devices online" in api(run, "status")["summary"], 10, "online")
    subprocess.run(
        [*SMARTPOLE, "simctl", "--control", str(control), "charger",
         "--set", "voltage_l1=nan", "--set", "current_l1=55.5"],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip

    def flagged() -> dict[str, Any] | None:
        points = {p["point"]: p for p in api(run, "points")}
        done = points["current_l1"]["value"] == 55.5 and points["voltage_l1"]["quality"] == "bad"
        return points if done else None

    points = wait_until(flagged, 10, "the scripted readings to arrive")
    assert points["current_l1"]["quality"] == "uncertain"  # above the 40 A the profile allows
    assert points["voltage_l2"]["quality"] == "good"
    status = api(run, "status")
    assert status["devices"][0]["suspect_values"] >= 2
    assert any("not physical or outside" in p for p in status["problems"])
    assert run.stop()[0] == 0
