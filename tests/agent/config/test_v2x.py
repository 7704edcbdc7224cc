"""The ``v2x:`` section: checked with the pole config (file and line), handed to every camera
worker as ``--v2x JSON`` with absolute paths, and read back there by the same model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from helpers.paths import PROFILES, REPO
from smartpole.agent.buses.registry import load_config
from smartpole.agent.config import advice
from smartpole.agent.config.camera_worker import WorkerExit, command, parse_line
from smartpole.agent.config.cameras import CameraConfig
from smartpole.agent.config.v2x import V2xConfig
from smartpole.agent.core.errors import ConfigError
from smartpole.models.errors import AnalyticsConfigError
from smartpole.models.worker import Output, Worker, parse, parse_v2x

CAMERA = CameraConfig.model_validate(
    {"source": "/video/clip.mp4", "lines": {"road": {"from": [10, 10], "to": [100, 10]}}}
)


def pole(tmp_path: Path, v2x: str) -> Path:
    config = tmp_path / "pole.yaml"
    config.write_text(
        f"""pole: {{id: camera-rig}}
profiles_dir: {PROFILES}
buses:
  rs485-1: {{type: modbus-rtu, port: /dev/null}}
devices:
  weather: {{profile: cwt-uwd, bus: rs485-1, unit_id: 1}}
v2x:
{v2x}"""
    )
    return config


def line_of(config: Path, marker: str) -> int:
    lines = config.read_text().splitlines()
    return next(n for n, text in enumerate(lines, 1) if marker in text)


def test_the_defaults_and_the_topics() -> None:
    v2x = V2xConfig.model_validate({"host": "rsu.local", "rsu_id": "R328328"})
    assert (v2x.rate_hz, v2x.max_age_s, v2x.queue_vehicles) == (10, 0.2, 5)
    assert (v2x.broker_port(), v2x.model_copy(update={"tls": {}}).broker_port()) == (1883, 8883)
    # OpenV2X's edge: the standard RSM parser, and the one that reads detection events.
    assert v2x.rsm_topic() == "V2X/RSU/R328328/RSM/UP"
    assert v2x.rsi_topic() == "V2X/RSU/R328328/RSI/UP/dawnline"


def test_a_pole_config_with_a_v2x_section_loads(tmp_path: Path) -> None:
    (tmp_path / "rsu.user").write_text("pole")
    config = pole(
        tmp_path,
        "  host: 10.0.0.9\n  rsu_id: R328328\n  rate_hz: 5\n  username_file: rsu.user\n",
    )
    v2x = load_config(config).pole.v2x
    assert v2x is not None
    assert (v2x.host, v2x.rsu_id, v2x.rate_hz, v2x.username_file) == (
        "10.0.0.9",
        "R328328",
        5.0,
        "rsu.user",
    )


@pytest.mark.parametrize(
    ("settings", "marker", "key", "message"),
    [
        ("  host: h\n  rsu_id: R1\n  rate: 10\n", "rate:", "v2x.rate", "did you mean 'rate_hz'?"),
        ("  host: h\n  rsu_id: R/1\n", "rsu_id:", "v2x.rsu_id", "String should match pattern"),
        (
            "  host: h\n  rsu_id: R1\n  rsm_topic_suffix: '#'\n",
            "rsm_topic_suffix:",
            "v2x.rsm_topic_suffix",
            "should match",
        ),
        ("  host: h\n  rsu_id: R1\n  rate_hz: 0\n", "rate_hz:", "v2x.rate_hz", "greater than 0"),
        ("  host: h\n  rsu_id: R1\n  max_age_s: 5\n", "max_age_s:", "v2x.max_age_s", "less than"),
        ("  host: h\n", "v2x:", "v2x.rsu_id", "required key is missing"),
        (
            "  host: h\n  rsu_id: R1\n  password_file: p\n",
            "v2x:",
            "v2x",
            "v2x: password_file needs a username_file",
        ),
        (
            "  host: h\n  rsu_id: R1\n  username_file: rsu.user\n",
            "username_file:",
            "v2x.username_file",
            "no file 'rsu.user'",
        ),
        (
            "  host: h\n  rsu_id: R1\n  tls: {ca_file: /no/such/ca.pem}\n",
            "tls:",
            "v2x.tls.ca_file",
            "no file '/no/such/ca.pem'",
        ),
    ],
)
def test_a_bad_v2x_section_is_located_by_file_line_and_key(
    tmp_path: Path, settings: str, marker: str, key: str, message: str
) -> None:
    config = pole(tmp_path, settings)
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    (problem,) = caught.value.problems
    assert str(problem).startswith(f"{config}:{line_of(config, marker)}: {key}: "), str(problem)
    assert message in problem.message


files = st.none() | st.sampled_from(["rsu.user", "secrets/rsu.pass", "/etc/smartpole/rsu.pem"])
sections = st.fixed_dictionaries(
    {"host": st.sampled_from(["10.0.0.9", "rsu.local"]), "rsu_id": st.just("R328328")},
    optional={
        "port": st.integers(1, 65535),
        "rsi_topic_suffix": st.sampled_from(["dawnline", "pole-17"]),
        "rate_hz": st.floats(0.1, 50),
        "max_age_s": st.floats(0.01, 1),
        "queue_vehicles": st.integers(1, 200),
        "tls": st.fixed_dictionaries({}, optional={"ca_file": files, "insecure": st.booleans()}),
        "username_file": files,
    },
)


@given(sections)
def test_the_worker_reads_the_section_the_daemon_sends(section: dict[str, Any]) -> None:
    v2x = V2xConfig.model_validate(section)
    sent = v2x.for_worker(Path("/etc/smartpole"))
    argv = command(sys.executable, "street", CAMERA, v2x=sent)
    assert parse_v2x(argv[argv.index("--v2x") + 1]) == sent
    assert argv[-1] == "--exit-with-stdin"
    for name in (sent.username_file, sent.tls.ca_file if sent.tls else None):
        assert name is None or Path(name).is_absolute()
    assert sent.username_file == (
        None if v2x.username_file is None else str(Path("/etc/smartpole", v2x.username_file))
    )


def test_without_a_v2x_section_the_command_has_no_v2x() -> None:
    assert "--v2x" not in command(sys.executable, "street", CAMERA)


def test_the_worker_keeps_the_section() -> None:
    v2x = parse_v2x(json.dumps({"host": "rsu.local", "rsu_id": "R328328"}))
    assert Worker(Output("street"), CAMERA, v2x).v2x == v2x
    assert Worker(Output("street"), CAMERA).v2x is None
    with pytest.raises(AnalyticsConfigError, match=r"^--v2x: rsu_id: required key is missing$"):
        parse_v2x(json.dumps({"host": "rsu.local"}))


def run_worker(config: str, v2x: str) -> tuple[int, list[Any]]:
    argv = [sys.executable, "-m", "smartpole.models.worker", "--camera", "street"]
    done = subprocess.run(
        [*argv, "--config", config, "--v2x", v2x], capture_output=True, timeout=60, check=False
    )
    return done.returncode, [parse_line(line) for line in done.stdout.splitlines()]


def test_the_worker_process_takes_v2x_and_names_it_when_it_is_bad() -> None:
    good = CAMERA.model_dump_json(by_alias=True)
    code, lines = run_worker(good, json.dumps({"host": "rsu.local", "rsu_id": "R/1"}))
    assert code == WorkerExit.BAD_INPUT
    (error,) = lines
    assert error["type"] == "error"
    assert error["kind"] == "config"
    assert error["message"].startswith("--v2x: rsu_id: String should match pattern")
    # A good --v2x is taken: what fails then is the config given with it.
    bad = json.dumps({**json.loads(good), "lines": {}})
    code, lines = run_worker(bad, json.dumps({"host": "rsu.local", "rsu_id": "R1"}))
    assert code == WorkerExit.BAD_INPUT
    assert [line["message"] for line in lines] == [
        "--config: lines: Dictionary should have at least 1 item after validation, not 0"
    ]
    assert parse(good) == CAMERA


def test_the_check_warns_of_cameras_that_cannot_feed_the_rsu(tmp_path: Path) -> None:
    """Valid, but the RSU hears nothing from a camera without a geo-calibration."""
    v2x = "  host: h\n  rsu_id: R1\n"
    assert advice.warnings(load_config(pole(tmp_path, v2x))) == [
        "v2x: this pole has no camera, so nothing is sent to the RSU"
    ]
    example = load_config(REPO / "configs" / "poles" / "v2x-camera.yaml")
    assert advice.warnings(example) == []
    (tmp_path / "clip.mp4").write_bytes(b"")
    cameras = """cameras:
  counts:
    source: clip.mp4
    lines: {road: {from: [10, 10], to: [100, 10]}}
    calibration:
      image: [[300, 200], [520, 200], [640, 340], [160, 340]]
      ground_m: [[0, 30], [7, 30], [7, 0], [0, 0]]
"""
    config = pole(tmp_path, v2x + cameras)
    assert advice.warnings(load_config(config)) == [
        "camera counts has no geo-calibration (calibration with origin and ground_en_m or "
        "ground_latlon): it sends no V2X messages"
    ]
