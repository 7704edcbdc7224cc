"""Every shipped device profile loads cleanly and decodes its manual's examples; bad ones are
reported with file, line and key path."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from conftest import PROFILES

from smartpole.agent.config.loader import load_profile
from smartpole.agent.errors import ConfigError, Problem
from smartpole.drivers.modbus import codec
from smartpole.drivers.modbus.plan import plan_reads
from smartpole.drivers.profile import DataType, ModbusProfile, RegisterKind

PROFILE_FILES = sorted(PROFILES.glob("*.yaml"))
CWT_UWD = PROFILES / "cwt-uwd.yaml"
INTEGER_TYPES = {DataType.U16, DataType.I16, DataType.U32, DataType.I32}


def test_there_are_profiles_to_check() -> None:
    assert PROFILE_FILES, f"no profiles found in {PROFILES}"
    assert CWT_UWD in PROFILE_FILES


@pytest.fixture(params=PROFILE_FILES, ids=[p.stem for p in PROFILE_FILES])
def profile_file(request: pytest.FixtureRequest) -> Path:
    path: Path = request.param
    return path


def test_profile_loads_without_problems(profile_file: Path) -> None:
    profile = load_profile(profile_file)
    assert isinstance(profile, ModbusProfile)
    assert profile.points
    assert profile.cross_check() == []


def _decode_vector(
    profile: ModbusProfile, areas: dict[RegisterKind, dict[int, list[int]]]
) -> dict[str, codec.Value]:
    """Decode what the agent would read: each planned block, sliced into its points."""
    registers = {
        kind: {start + i: word for start, words in area.items() for i, word in enumerate(words)}
        for kind, area in areas.items()
    }
    decoded: dict[str, codec.Value] = {}
    for block in plan_reads(profile.points, profile.limits):
        known = registers.get(block.kind, {})
        addresses = range(block.address, block.end)
        block_words = [known[a] for a in addresses] if all(a in known for a in addresses) else None
        for name in block.points:
            spec = profile.points[name]
            if block_words is not None:
                offset = spec.address - block.address
                words = block_words[offset : offset + spec.register_count]
            elif all(a in known for a in range(spec.address, spec.end)):
                words = [known[a] for a in range(spec.address, spec.end)]
            else:
                continue
            decoded[name] = codec.decode(spec, words)
    return decoded


def test_profile_test_vectors_decode(profile_file: Path) -> None:
    profile = load_profile(profile_file)
    for number, vector in enumerate(profile.test_vectors):
        areas = {RegisterKind.HOLDING: vector.holding, RegisterKind.INPUT: vector.input}
        decoded = _decode_vector(profile, areas)
        for name, expected in vector.expect.items():
            where = f"{profile_file.name} test_vectors[{number}] {name}"
            assert name in decoded, f"{where}: the vector's registers do not cover this point"
            actual = decoded[name]
            spec = profile.points[name]
            if isinstance(expected, bool) or spec.type is DataType.BOOL:
                assert actual is expected, where
            elif spec.type in INTEGER_TYPES and spec.scale == 1 and spec.offset == 0:
                assert isinstance(actual, int), where
                assert actual == expected, f"{where}: {actual!r} != {expected!r}"
            else:
                assert math.isclose(actual, expected, rel_tol=1e-6, abs_tol=1e-12), (
                    f"{where}: {actual!r} != {expected!r}"
                )


def test_profile_simulation_starts_inside_the_valid_range(profile_file: Path) -> None:
    profile = load_profile(profile_file)
    for name, simulated in profile.simulation.items():
        valid = profile.points[name].valid_range
        if valid is not None:
            assert valid[0] <= simulated.start <= valid[1], f"{profile_file.name}: {name}"


def test_cwt_uwd_vector_decodes_to_the_documented_values() -> None:
    """The shared decoder above must be able to fail: a wrong register gives a wrong value."""
    profile = load_profile(CWT_UWD)
    vector = profile.test_vectors[0]
    decoded = _decode_vector(profile, {RegisterKind.HOLDING: vector.holding})
    assert decoded["temperature"] == -10.0
    assert decoded["illuminance"] == 100000
    assert decoded["rainfall"] == 1.2
    shifted = {0x01F5: vector.holding[0x01F4]}
    assert _decode_vector(profile, {RegisterKind.HOLDING: shifted})["wind_force"] == 35


# --- errors are located -------------------------------------------------------------------


def _broken(tmp_path: Path, old: str, new: str) -> tuple[Path, str]:
    text = CWT_UWD.read_text(encoding="utf-8")
    assert text.count(old) == 1, f"edit target {old!r} is not unique in {CWT_UWD}"
    text = text.replace(old, new)
    path = tmp_path / "broken.yaml"
    path.write_text(text, encoding="utf-8")
    return path, text


def _line_of(text: str, needle: str) -> int:
    hits = [n for n, line in enumerate(text.splitlines(), start=1) if needle in line]
    assert len(hits) == 1, f"{needle!r} found on lines {hits}"
    return hits[0]


def _problems(path: Path) -> list[Problem]:
    with pytest.raises(ConfigError) as caught:
        load_profile(path)
    return caught.value.problems


@pytest.mark.parametrize(
    ("old", "new", "line_needle", "key", "message"),
    [
        pytest.param(
            "wind_speed:      {kind: holding, address: 0x01F4, type: i16, scale: 0.1,",
            "wind_speed:      {kind: holding, address: 0x01F4, type: i16, sacle: 0.1,",
            "sacle: 0.1",
            "points.wind_speed.sacle",
            "did you mean 'scale'?",
            id="unknown-key-in-point",
        ),
        pytest.param(
            "wind_force:      {kind: holding, address: 0x01F5, type: i16,",
            "wind_force:      {kind: holding, address: 0x01F5, type: int16,",
            "type: int16",
            "points.wind_force.type",
            "'int16'",
            id="bad-type-name",
        ),
        pytest.param(
            "wind_sector:     {kind: holding, address: 0x01F6, type: i16,",
            "wind_sector:     {kind: holding, address: 0x01F6, type: bool,",
            "type: bool",
            "points.wind_sector",
            "does not fit register kind holding",
            id="bool-on-holding",
        ),
        pytest.param(
            "rainfall:        {kind: holding, address: 0x0201,",
            "rainfall:        {kind: holding, address: 0x01FF,",
            "address: 0x01FF",
            "points.rainfall",
            "overlaps point 'illuminance'",
            id="overlapping-points",
        ),
        pytest.param(
            "  rainfall:       {start: 0,",
            "  rainfal:        {start: 0,",
            "rainfal:",
            "simulation.rainfal",
            "no point named 'rainfal'",
            id="simulation-unknown-point",
        ),
        pytest.param(
            "      rainfall: 1.2",
            "      rain_total: 1.2",
            "rain_total:",
            "test_vectors[0].expect.rain_total",
            "no point named 'rain_total'",
            id="vector-unknown-point",
        ),
        pytest.param(
            "  pm2_5:           {kind: holding",
            "  PM2_5:           {kind: holding",
            "PM2_5:",
            "points.PM2_5",
            "pattern",
            id="point-name-with-capitals",
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
    (problem,) = matching
    assert problem.file == path
    assert problem.line == _line_of(text, line_needle)
    assert message in problem.message
    assert str(problem).startswith(f"{path}:{problem.line}: {key}: ")


def test_several_profile_errors_are_all_reported(tmp_path: Path) -> None:
    path, text = _broken(
        tmp_path,
        "  rainfall:       {start: 0,",
        "  rainfal:        {start: 0,",
    )
    text = text.replace("      rainfall: 1.2", "      rain_total: 1.2")
    path.write_text(text, encoding="utf-8")
    keys = {p.key for p in _problems(path)}
    assert keys == {"simulation.rainfal", "test_vectors[0].expect.rain_total"}


def test_duplicate_point_is_reported_with_both_lines(tmp_path: Path) -> None:
    path, text = _broken(
        tmp_path,
        "  pm10:            {kind: holding",
        "  pm2_5:           {kind: holding",
    )
    first = text.splitlines().index(next(ln for ln in text.splitlines() if "pm2_5:  " in ln)) + 1
    problems = _problems(path)
    duplicates = [p for p in problems if p.key == "points.pm2_5" and "duplicate" in p.message]
    assert len(duplicates) == 1
    assert duplicates[0].line == first + 1
    assert f"line {first}" in duplicates[0].message


# Regression: only neighbours in address order were compared, so a point inside a wide
# point that was not its direct predecessor went unreported.
def test_every_overlap_with_a_wide_point_is_reported(tmp_path: Path) -> None:
    text = (
        "model: X\n"
        "manufacturer: Y\n"
        "points:\n"
        "  big:  {address: 0, type: f64}\n"
        "  mid:  {address: 1}\n"
        "  late: {address: 3}\n"
    )
    path = tmp_path / "overlap.yaml"
    path.write_text(text, encoding="utf-8")
    found = sorted((p.line, p.key) for p in _problems(path))
    assert found == [(5, "points.mid"), (6, "points.late")]
