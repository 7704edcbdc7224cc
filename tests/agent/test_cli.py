"""The technician's commands against a running daemon, and the newcomer's demo."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import yaml

from helpers.paths import PROFILES, REPO
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

    plan = json.loads(_smartpole("diag", "plan", "--json", "--state-dir", state).stdout)
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


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def test_version_names_the_package_the_config_and_its_profiles(tmp_path: Path) -> None:
    bare = _smartpole("--version")
    assert bare.returncode == 0, bare.stderr
    assert bare.stdout.splitlines()[0] == f"smartpole {metadata.version('smartpole')}"
    config = pole_config(tmp_path)
    given = _smartpole("--version", str(config))
    assert given.returncode == 0, given.stderr
    assert given.stdout.splitlines() == [
        f"smartpole {metadata.version('smartpole')}",
        f"config {config} sha256:{_sha(config)}",
        f"  profile cwt-uwd sha256:{_sha(PROFILES / 'cwt-uwd.yaml')} {PROFILES / 'cwt-uwd.yaml'}",
    ]
    missing = _smartpole("--version", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 0, missing.stderr
    assert "cannot read" in missing.stdout.splitlines()[1]


def _into_closed_pipe(*args: str) -> subprocess.CompletedProcess[str]:
    """The command with its stdout a pipe whose reader has gone, as ``| head`` leaves it
    once it has its lines: every write fails with EPIPE."""
    read, write = os.pipe()
    os.close(read)
    try:
        return subprocess.run(
            [*SMARTPOLE, *args], stdout=write, stderr=subprocess.PIPE, text=True, timeout=30
        )
    finally:
        os.close(write)


def test_diag_for_technicians(tmp_path: Path, polled_pole: Callable[..., Proc]) -> None:
    """Units in ``diag read``, a table for ``diag plan``, latency below a millisecond's
    resolution, and ``diag status``/``points`` into a closed pipe exit 0 quietly."""
    run = polled_pole()
    wait_until(lambda: all(p["quality"] == "good" for p in api(run, "points")), 10, "good points")
    where = ("--socket", run.extra["socket"])

    read = _smartpole("diag", "read", "weather", "temperature", *where)
    assert read.returncode == 0, read.stderr
    assert re.fullmatch(r"weather\.temperature: read -?\d+(\.\d+)? °C\n", read.stdout), read.stdout

    plan = _smartpole("diag", "plan", *where)
    assert plan.returncode == 0, plan.stderr
    lines = plan.stdout.splitlines()
    assert lines[0].split() == ["BUS", "DEVICE", "READ", "REGS", "POINTS"]
    assert lines[2].split()[:5] == ["rs485-1", "weather", "holding", "500..513", "14"]
    assert "temperature" in lines[2]

    status = _smartpole("diag", "status", *where)
    weather = next(line for line in status.stdout.splitlines() if line.startswith("weather"))
    # A pty at 9600 baud answers in tens of ms: shown to 0.1 ms (0.01 ms below 10 ms).
    assert re.search(r" (\d+\.\d{1,2}|\d{3,}) ms$", weather), weather

    for what in ("status", "points"):
        cut = _into_closed_pipe("diag", what, *where)
        assert cut.returncode == 0, cut.stderr
        assert cut.stderr == "", cut.stderr  # no BrokenPipeError traceback
    assert run.stop()[0] == 0


GAP_PROFILE = {
    "model": "gap-test",
    "manufacturer": "smartpole test",
    "description": "two values far apart that a wide max_gap merges",
    "manual": "none",
    "protocol": "modbus",
    "transport_defaults": {"baudrate": 2400},
    "limits": {"max_registers_per_read": 40, "max_gap": 100},
    "points": {
        "low": {"kind": "input", "address": 0, "type": "f32"},
        "high": {"kind": "input", "address": 74, "type": "f32"},
    },
}


def test_config_check_warns_apart_from_errors_without_failing(tmp_path: Path) -> None:
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    (profiles / "gap-test.yaml").write_text(yaml.safe_dump(GAP_PROFILE))
    pole = {
        "pole": {"id": "warn-pole"},
        "profiles_dir": str(profiles),
        "buses": {"rs485-1": {"type": "modbus-rtu", "port": "/dev/ttyUSB0", "baudrate": 9600}},
        "devices": {"meter": {"profile": "gap-test", "bus": "rs485-1", "unit_id": 1}},
    }
    config = tmp_path / "pole.yaml"
    config.write_text(yaml.safe_dump(pole))
    result = _smartpole("config", "check", str(config))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    first, *warnings = result.stdout.splitlines()
    assert first.startswith(f"{config}: OK"), first
    assert first.endswith("2 warning(s)"), first
    assert len(warnings) == 2, warnings
    assert all(w.startswith("warning: ") for w in warnings)
    assert "runs at 9600 baud; profile gap-test ships at 2400 (meter)" in warnings[0]
    assert "max_gap 100 would merge input 0..75 into one read of 76 registers" in warnings[1]
    assert "declared limit of 40" in warnings[1]

    pole["buses"]["rs485-1"]["baudrate"] = 2400
    (profiles / "gap-test.yaml").write_text(
        yaml.safe_dump({**GAP_PROFILE, "limits": {"max_registers_per_read": 40, "max_gap": 0}})
    )
    config.write_text(yaml.safe_dump(pole))
    clean = _smartpole("config", "check", str(config))
    assert clean.returncode == 0, clean.stderr
    assert "warning" not in clean.stdout

    pole["devices"]["meter"]["unit_id"] = 300  # an error: fails, and no warning is mixed in
    config.write_text(yaml.safe_dump(pole))
    bad = _smartpole("config", "check", str(config))
    assert bad.returncode == 2
    assert "warning" not in bad.stdout + bad.stderr
