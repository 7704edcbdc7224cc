"""The DL/T 645 profile schema and the shipped meter profile; bad profiles are located."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers.paths import PROFILES
from smartpole.agent.buses.registry import load_profile
from smartpole.agent.core.errors import ConfigError, Problem
from smartpole.drivers.dlt645.frame import decode_bcd
from smartpole.drivers.dlt645.profile import Dlt645Profile

METER = PROFILES / "dlt645-meter.yaml"
DLT645_FILES = sorted(PROFILES.glob("dlt645-*.yaml"))

# The standard's layouts for the identifiers the generic profile reads.
STANDARD = {
    "voltage": (0x02010100, "XXX.X", False),
    "current": (0x02020100, "XXX.XXX", True),
    "active_power": (0x02030000, "XX.XXXX", True),
    "power_factor": (0x02060000, "X.XXX", True),
    "frequency": (0x02800002, "XX.XX", False),
    "combined_active_energy": (0x00000000, "XXXXXX.XX", True),
    "forward_active_energy": (0x00010000, "XXXXXX.XX", False),
}


def _load(path: Path) -> Dlt645Profile:
    profile = load_profile(path)
    assert isinstance(profile, Dlt645Profile)
    return profile


@pytest.mark.parametrize("path", DLT645_FILES, ids=[p.stem for p in DLT645_FILES])
def test_profile_loads_and_its_vectors_decode(path: Path) -> None:
    profile = _load(path)
    assert profile.cross_check() == []
    assert profile.test_vectors, f"{path.name} has no test vectors"
    for number, vector in enumerate(profile.test_vectors):
        assert set(vector.raw) == set(vector.expect), f"{path.name} test_vectors[{number}]"
        for name, expected in vector.expect.items():
            spec = profile.points[name]
            actual = decode_bcd(bytes.fromhex(vector.raw[name]), spec.format, spec.signed)
            assert actual == expected, f"{path.name} test_vectors[{number}] {name}"
    for name, simulated in profile.simulation.items():
        spec = profile.points[name]
        assert spec.representable(simulated.min), name
        assert spec.representable(simulated.max), name
        if spec.valid_range is not None:
            assert spec.valid_range[0] <= simulated.start <= spec.valid_range[1], name


def test_generic_meter_reads_what_the_standard_defines() -> None:
    profile = _load(METER)
    assert profile.protocol == "dlt645"
    got = {name: (p.di, p.format, p.signed) for name, p in profile.points.items()}
    assert got == STANDARD
    assert profile.points["voltage"].byte_length == 2
    assert profile.points["current"].byte_length == 3
    assert profile.points["forward_active_energy"].byte_length == 4
    assert set(profile.simulation) == set(STANDARD)
    covered = {name for vector in profile.test_vectors for name in vector.expect}
    assert covered == set(STANDARD)
    negative = {n for v in profile.test_vectors for n, x in v.expect.items() if x < 0}
    assert negative == {n for n, (_, _, signed) in STANDARD.items() if signed}


# --- errors are located -------------------------------------------------------------------


def _broken(tmp_path: Path, old: str, new: str) -> tuple[Path, str]:
    text = METER.read_text(encoding="utf-8")
    assert text.count(old) == 1, f"edit target {old!r} is not unique in {METER}"
    text = text.replace(old, new)
    path = tmp_path / "broken.yaml"
    path.write_text(text, encoding="utf-8")
    return path, text


def _problems(path: Path) -> list[Problem]:
    with pytest.raises(ConfigError) as caught:
        load_profile(path)
    return caught.value.problems


def _line_of(text: str, needle: str) -> int:
    hits = [n for n, line in enumerate(text.splitlines(), start=1) if needle in line]
    assert len(hits) == 1, f"{needle!r} found on lines {hits}"
    return hits[0]


@pytest.mark.parametrize(
    ("old", "new", "line_needle", "key", "message"),
    [
        pytest.param(
            'voltage:                {di: 0x02010100, format: "XXX.X",',
            'voltage:                {di: 0x02010100, format: "XXX.XX",',
            '"XXX.XX"',
            "points.voltage.format",
            "even",
            id="odd-digit-format",
        ),
        pytest.param(
            'frequency:              {di: 0x02800002, format: "XX.XX",',
            'frequency:              {di: 0x02800002, format: "NN.NN",',
            '"NN.NN"',
            "points.frequency.format",
            "'X' digits",
            id="unknown-format-letter",
        ),
        pytest.param(
            'frequency:              {di: 0x02800002, format: "XX.XX",',
            'frequency:              {di: 0x02010100, format: "XX.XX",',
            "frequency:              {di: 0x02010100",
            "points.frequency",
            "also point 'voltage'",
            id="duplicate-di",
        ),
        pytest.param(
            "voltage:                {start: 220.0,   step: 0.5,   min: 198,  max: 242}",
            "voltage:                {start: 220.0,   step: 0.5,   min: 198,  max: 1242}",
            "max: 1242",
            "simulation.voltage.max",
            "does not fit XXX.X",
            id="simulation-outside-the-format",
        ),
        pytest.param(
            "frequency:              {start: 50.0,",
            "frequncy:               {start: 50.0,",
            "frequncy:",
            "simulation.frequncy",
            "no point named 'frequncy'",
            id="simulation-unknown-point",
        ),
        pytest.param(
            '      voltage: "01 22"',
            '      voltage: "01 2G"',
            '"01 2G"',
            "test_vectors[0].raw.voltage",
            "not hex bytes",
            id="raw-not-hex",
        ),
        pytest.param(
            '      voltage: "01 22"',
            '      voltage: "0A 22"',
            '"0A 22"',
            "test_vectors[0].raw.voltage",
            "not BCD",
            id="raw-not-bcd",
        ),
        pytest.param(
            '      voltage: "01 22"',
            '      voltage: "01 22 00"',
            '"01 22 00"',
            "test_vectors[0].raw.voltage",
            "takes 2 bytes",
            id="raw-wrong-length",
        ),
        pytest.param(
            "      voltage: 220.1",
            "      voltage: 221.0",
            "voltage: 221.0",
            "test_vectors[0].expect.voltage",
            "decodes to 220.1, not 221.0",
            id="vector-disagrees",
        ),
        pytest.param(
            "      power_factor: -0.5",
            "      powerfactor: -0.5",
            "powerfactor: -0.5",
            "test_vectors[1].expect.powerfactor",
            "no point named 'powerfactor'",
            id="vector-unknown-point",
        ),
    ],
)
def test_profile_error_is_located(
    tmp_path: Path, old: str, new: str, line_needle: str, key: str, message: str
) -> None:
    path, text = _broken(tmp_path, old, new)
    problems = _problems(path)
    matching = [p for p in problems if p.key == key]
    assert matching, f"no problem at {key}; got {[str(p) for p in problems]}"
    problem = matching[0]
    assert message in problem.message
    assert problem.line == _line_of(text, line_needle)
