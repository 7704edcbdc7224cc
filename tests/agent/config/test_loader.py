"""Pole configs through `smartpole config check` and `load_config`: every problem, located."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from helpers.paths import PROFILES, REPO
from helpers.processes import SMARTPOLE, pole_config
from smartpole.agent.buses.modbus.config import ModbusRtuBus
from smartpole.agent.buses.registry import load_config
from smartpole.agent.config.loader import LoadedConfig
from smartpole.agent.config.pole import DeviceConfig, PoleConfig
from smartpole.agent.core.errors import ConfigError, Problem
from smartpole.drivers.modbus.profile import ModbusProfile

DEMO = REPO / "configs" / "poles" / "demo.yaml"

# Each wrong line carries a marker comment, so expected line numbers come from the text.
BROKEN = f"""\
pole:
  id: broken-pole
  name: first
  name: second                  # @dup-yaml-key
profiles_dir: {PROFILES}
buses:
  rs485-1:
    type: modbus-rtu
    port: /dev/ttyUSB0
    baudrate: 9601              # @baud
devices:
  weather:
    profile: cwt-uwd
    bus: rs485-1
    unit_id: 5
    poll_periods_s: 2           # @near-miss
  weather2:
    profile: cwt-uwd
    bus: rs485-1
    unit_id: 5                  # @dup-unit
  far:
    profile: cwt-uwd
    bus: rs485-9                # @unknown-bus
    unit_id: 300                # @unit-range
  mystery:
    profile: no-such-profile    # @unknown-profile
    bus: rs485-1
    unit_id: 7
"""

# marker -> (key path, a part of the message that must be there)
EXPECTED = {
    "@dup-yaml-key": ("pole.name", "duplicate key (first given on line 3)"),
    "@baud": ("buses.rs485-1.baudrate", "9600"),
    "@near-miss": ("devices.weather.poll_periods_s", "unknown key; did you mean 'poll_period_s'?"),
    "@dup-unit": (
        "devices.weather2.unit_id",
        "unit id 5 on bus 'rs485-1' is already used by device 'weather'",
    ),
    "@unknown-bus": ("devices.far.bus", "no bus named 'rs485-9'"),
    "@unit-range": ("devices.far.unit_id", "less than or equal to 255 (got 300)"),
    "@unknown-profile": ("devices.mystery.profile", "unknown profile 'no-such-profile'"),
}


def line_of(text: str, marker: str) -> int:
    hits = [n for n, line in enumerate(text.splitlines(), start=1) if marker in line]
    assert len(hits) == 1, f"marker {marker} on lines {hits}"
    return hits[0]


def check(path: Path, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SMARTPOLE, "config", "check", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        cwd=cwd,
    )


def problem_lines(stderr: str, path: Path) -> list[str]:
    """The per-problem lines: everything but the final count summary."""
    return [
        line
        for line in stderr.splitlines()
        if line.startswith(f"{path}") and not line.endswith(("problem", "problems"))
    ]


@pytest.fixture
def broken(tmp_path: Path) -> Path:
    path = tmp_path / "broken.yaml"
    path.write_text(BROKEN, encoding="utf-8")
    return path


# --- through the CLI ----------------------------------------------------------------------


def test_cli_demo_config_is_ok() -> None:
    result = check(Path("configs/poles/demo.yaml"))
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout
    assert "cwt-uwd" in result.stdout


def test_cli_demo_config_is_ok_from_another_folder(tmp_path: Path) -> None:
    """profiles_dir is relative to the config file, not to the working directory."""
    result = check(DEMO, cwd=tmp_path)
    assert result.returncode == 0, result.stderr


def test_cli_prints_every_problem_with_file_line_and_key(broken: Path) -> None:
    result = check(broken)
    assert result.returncode == 2, result.stdout + result.stderr
    printed = problem_lines(result.stderr, broken)
    assert len(printed) == len(EXPECTED), result.stderr
    for marker, (key, message) in EXPECTED.items():
        prefix = f"{broken}:{line_of(BROKEN, marker)}: {key}: "
        hits = [line for line in printed if line.startswith(prefix)]
        assert len(hits) == 1, f"{marker}: no line starting {prefix!r} in\n{result.stderr}"
        assert message in hits[0], hits[0]
    assert f"{broken}: {len(EXPECTED)} configuration problems" in result.stderr
    assert result.stdout == ""


def test_cli_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    result = check(path)
    assert result.returncode == 2
    assert f"{path}: (top level): file not found" in result.stderr.splitlines()


def test_cli_file_that_is_not_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "list.yaml"
    path.write_text("- pole\n- buses\n")
    result = check(path)
    assert result.returncode == 2
    assert problem_lines(result.stderr, path) == [
        f"{path}:1: (top level): expected a mapping of keys at the top of the file"
    ]


def test_cli_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("")
    result = check(path)
    assert result.returncode == 2
    (line,) = problem_lines(result.stderr, path)
    assert line.startswith(f"{path}:1: (top level): ")


def test_cli_missing_profiles_folder(tmp_path: Path) -> None:
    path = pole_config(tmp_path)
    text = path.read_text().replace(f"profiles_dir: {PROFILES}", "profiles_dir: no-such-folder")
    assert "no-such-folder" in text
    path.write_text(text)
    result = check(path)
    assert result.returncode == 2
    line = line_of(text, "no-such-folder")
    (printed,) = problem_lines(result.stderr, path)
    assert printed.startswith(f"{path}:{line}: profiles_dir: no profiles folder ")
    assert str(tmp_path / "no-such-folder") in printed


def test_cli_syntax_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("pole:\n  id: x\n buses: {}\n")
    result = check(path)
    assert result.returncode == 2
    (printed,) = problem_lines(result.stderr, path)
    assert printed.startswith(f"{path}:3: (top level): invalid YAML: ")


# --- in process ---------------------------------------------------------------------------


def problems_of(path: Path) -> list[Problem]:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return caught.value.problems


def test_load_demo_returns_typed_models() -> None:
    config = load_config(DEMO)
    assert isinstance(config, LoadedConfig)
    assert config.path == DEMO
    assert isinstance(config.pole, PoleConfig)
    assert config.pole.pole.id == "demo-pole-001"
    bus = config.pole.buses["rs485-1"]
    assert isinstance(bus, ModbusRtuBus)
    assert (bus.baudrate, bus.parity, bus.stopbits, bus.timeout_s) == (9600, "N", 1, 0.5)
    device = config.pole.devices["weather"]
    assert isinstance(device, DeviceConfig)
    assert (device.profile, device.bus, device.unit_id) == ("cwt-uwd", "rs485-1", 1)
    assert device.poll_period_s == 2.0
    assert set(config.profiles) == {d.profile for d in config.pole.devices.values()}
    assert config.profile_of("utility-meter").protocol == "dlt645"
    assert config.profile_of("camera").protocol == "pelco-d"
    profile = config.profile_of("weather")
    assert isinstance(profile, ModbusProfile)
    assert profile.model == "CWT-UWD"


def test_load_applies_defaults(tmp_path: Path) -> None:
    config = load_config(pole_config(tmp_path))
    bus = config.pole.buses["rs485-1"]
    assert (bus.baudrate, bus.bytesize, bus.parity, bus.stopbits) == (9600, 8, "N", 1)
    assert config.pole.devices["weather"].offline_after == 2


def test_load_reports_every_problem(broken: Path) -> None:
    problems = problems_of(broken)
    assert len(problems) == len(EXPECTED)
    for marker, (key, message) in EXPECTED.items():
        (problem,) = [p for p in problems if p.key == key]
        assert problem.file == broken
        assert problem.line == line_of(BROKEN, marker), marker
        assert message in problem.message


def test_load_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    assert [(p.file, p.line, p.message) for p in problems_of(path)] == [
        (path, None, "file not found")
    ]


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "42\n"])
def test_load_file_that_is_not_a_mapping(tmp_path: Path, text: str) -> None:
    path = tmp_path / "pole.yaml"
    path.write_text(text)
    (problem,) = problems_of(path)
    assert (problem.file, problem.line, problem.key) == (path, 1, "")
    assert "mapping" in problem.message


@pytest.mark.parametrize("text", ["", "# nothing\n", "# the package's template\n#pole:\n"])
def test_load_file_of_comments_only_says_what_to_fill_in(tmp_path: Path, text: str) -> None:
    """An installed pole's /etc/smartpole/pole.yaml starts as comments only."""
    path = tmp_path / "pole.yaml"
    path.write_text(text)
    (problem,) = problems_of(path)
    assert (problem.file, problem.line, problem.key) == (path, 1, "")
    assert problem.message.startswith("the file holds no settings, only comments: fill in")


def test_load_missing_profiles_folder(tmp_path: Path) -> None:
    path = pole_config(tmp_path)
    text = path.read_text().replace(f"profiles_dir: {PROFILES}", "profiles_dir: no-such-folder")
    path.write_text(text)
    (problem,) = problems_of(path)
    assert (problem.line, problem.key) == (line_of(text, "no-such-folder"), "profiles_dir")
    assert str(tmp_path / "no-such-folder") in problem.message


def test_load_default_profiles_folder_missing(tmp_path: Path) -> None:
    path = pole_config(tmp_path)
    text = "\n".join(ln for ln in path.read_text().splitlines() if "profiles_dir" not in ln)
    path.write_text(text)
    (problem,) = problems_of(path)
    assert (problem.line, problem.key) == (1, "")
    assert "no profiles folder" in problem.message


def test_load_reports_a_broken_profile_in_its_own_file(tmp_path: Path) -> None:
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    text = (PROFILES / "cwt-uwd.yaml").read_text(encoding="utf-8")
    text = text.replace("address: 0x01F5, type: i16,", "address: 0x01F5, type: int16,")
    (profiles / "cwt-uwd.yaml").write_text(text, encoding="utf-8")
    path = pole_config(tmp_path)
    path.write_text(path.read_text().replace(str(PROFILES), str(profiles)))
    (problem,) = problems_of(path)
    assert problem.file == profiles / "cwt-uwd.yaml"
    assert problem.key == "points.wind_force.type"
    assert problem.line == line_of(text, "address: 0x01F5, type: int16, valid_range: [0, 17], ")


def test_a_profile_unit_without_a_unece_code_is_an_error_where_it_is_written(
    tmp_path: Path,
) -> None:
    """A new profile cannot silently lose its units upstream: each unit must map to a UNECE
    code (OPC UA EngineeringUnits), or `config check` names the file, line and key."""
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    text = (PROFILES / "cwt-uwd.yaml").read_text(encoding="utf-8")
    text = text.replace('unit: "°C", valid_range: [-40, 80]', "unit: degC, valid_range: [-40, 80]")
    text = text.replace("unit: lx,", "unit: Lux,")
    (profiles / "cwt-uwd.yaml").write_text(text, encoding="utf-8")
    path = pole_config(tmp_path)
    path.write_text(path.read_text().replace(str(PROFILES), str(profiles)))
    result = check(path)
    assert result.returncode == 2, result.stdout + result.stderr
    file = profiles / "cwt-uwd.yaml"
    celsius = line_of(text, "unit: degC,")
    lux = line_of(text, "unit: Lux,")
    lines = result.stderr.splitlines()
    assert any(
        line.startswith(f"{file}:{celsius}: points.temperature.unit: unknown unit 'degC'")
        and "did you mean '°C'?" in line
        for line in lines
    ), result.stderr
    assert any(
        line.startswith(f"{file}:{lux}: points.illuminance.unit: unknown unit 'Lux'")
        and "'lx'" in line
        for line in lines
    ), result.stderr


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ({"unit_id": 0}, "devices.weather.unit_id"),
        ({"poll_period_s": 0}, "devices.weather.poll_period_s"),
        ({"offline_after": 0}, "devices.weather.offline_after"),
        ({"profile": "Bad Name"}, "devices.weather.profile"),
    ],
)
def test_load_out_of_range_device_settings(
    tmp_path: Path, override: dict[str, object], key: str
) -> None:
    problems = problems_of(pole_config(tmp_path, **override))
    assert key in [p.key for p in problems]
    assert all(p.line is not None for p in problems)
