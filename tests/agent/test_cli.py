"""The technician's commands against a running daemon, and the newcomer's demo."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

from helpers.paths import REPO
from helpers.processes import SMARTPOLE, Proc, api, pole_config
from helpers.waiting import wait_until


def _smartpole(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SMARTPOLE, *args], capture_output=True, text=True, timeout=timeout, cwd=REPO
    )


def test_diag_points_status_and_plan(tmp_path: Path, polled_pole: Callable[..., Proc]) -> None:
    run = polled_pole()
    wait_until(lambda: all(p["quality"] == "good" for p in api(run, "points")), 10, "good points")
    state = str(tmp_path / "state")

    points = _smartpole("diag", "points", "--state-dir", state)
    assert points.returncode == 0, points.stderr
    lines = points.stdout.splitlines()
    assert lines[0].split() == ["DEVICE", "POINT", "VALUE", "UNIT", "QUALITY", "AGE"]
    temperature = next(line for line in lines if " temperature " in line).split()
    assert temperature[0] == "weather"
    assert temperature[3:5] == ["°C", "good"]
    assert "quality: good = fresh reading" in points.stdout

    status = _smartpole("diag", "status", "--socket", run.extra["socket"])
    assert status.returncode == 0, status.stderr
    assert "pole test-pole: 1/1 devices online" in status.stdout
    assert "no problems" in status.stdout

    as_json = _smartpole("diag", "status", "--json", "--state-dir", state)
    assert json.loads(as_json.stdout)["devices"][0]["state"] == "online"

    plan = json.loads(_smartpole("diag", "plan", "--state-dir", state).stdout)
    (block,) = plan["rs485-1"]["weather"]
    assert (block["kind"], block["address"], block["count"]) == ("holding", 0x01F4, 14)
    assert run.stop()[0] == 0


def test_run_refuses_a_bad_config_before_starting(tmp_path: Path) -> None:
    config = pole_config(tmp_path, unit_id=300, bus="rs485-7")
    result = _smartpole(
        "run", "--config", str(config), "--state-dir", str(tmp_path / "s"), "--log-format", "json"
    )
    assert result.returncode == 2
    (event,) = [json.loads(line) for line in result.stderr.splitlines()]
    assert event["event"] == "config_invalid"
    assert event["level"] == "error"
    problems = event["problems"]
    assert len(problems) == 2
    assert any(p.startswith(f"{config}:") and "devices.weather.unit_id" in p for p in problems)
    assert any("devices.weather.bus" in p for p in problems)
    assert not (tmp_path / "s").exists(), "nothing may start with a bad config"


def test_run_reports_an_unusable_state_directory_once(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = _smartpole(
        "run", "--config", str(pole_config(tmp_path)), "--state-dir", str(blocker / "state"),
        "--log-format", "json",
    )  # fmt: skip
    assert result.returncode == 1
    (event,) = [json.loads(line) for line in result.stderr.splitlines()]
    assert event["event"] == "failed"
    assert "cannot use directory" in event["error"]
    assert "Traceback" not in result.stderr


def test_run_rejects_a_bus_port_for_an_unknown_bus(tmp_path: Path) -> None:
    config = pole_config(tmp_path)
    result = _smartpole(
        "run", "--config", str(config), "--state-dir", str(tmp_path), "--bus-port", "rs485-9=/x"
    )
    assert result.returncode == 2
    assert "no bus 'rs485-9'" in result.stderr


def test_sim_rejects_an_unknown_fault(tmp_path: Path) -> None:
    result = _smartpole("sim", "--config", str(pole_config(tmp_path)), "--fault", "weather=fire")
    assert result.returncode == 2
    assert "unknown mode 'fire'" in result.stderr


def test_demo_runs_a_simulated_pole_and_exits_cleanly() -> None:
    result = _smartpole("demo", "--duration", "4", "--refresh", "2", timeout=60)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for bus in ("rs485-1", "rs485-2", "rs485-3", "lan-relays", "lan-charger"):
        assert f"serving bus {bus} at " in out
    assert "DEVICE         POINT" in out
    assert "weather        temperature" in out
    last_frame = out.rsplit("smartpole demo - ", 1)[1]
    assert "pole demo-pole-001: 9/9 devices online on 6 bus(es)" in last_frame
    table = last_frame.split("quality: good")[0]
    assert "  bad  " not in table, "no point of a simulated device may read bad"
    assert "demo finished: the daemon stopped cleanly (exit 0)." in out
