"""Every shipped device profile loads cleanly and decodes its manual's examples; bad ones are
reported with file, line and key path."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from helpers.paths import PROFILES
from smartpole.agent.buses.registry import load_profile
from smartpole.agent.core.errors import ConfigError, Problem
from smartpole.drivers.modbus import codec, pdu, rtu
from smartpole.drivers.modbus.plan import plan_reads
from smartpole.drivers.modbus.points import DataType, RegisterKind
from smartpole.drivers.modbus.profile import ModbusProfile
from smartpole.drivers.schema import Value

PROFILE_FILES = sorted(PROFILES.glob("*.yaml"))
CWT_UWD = PROFILES / "cwt-uwd.yaml"
INTEGER_TYPES = {DataType.U16, DataType.I16, DataType.U32, DataType.I32}


def _is_modbus(path: Path) -> bool:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    return not isinstance(data, dict) or data.get("protocol", "modbus") == "modbus"


MODBUS_FILES = [path for path in PROFILE_FILES if _is_modbus(path)]
# One profile per real pole device model the product supports; each must stay shipped.
POLE_DEVICE_PROFILES = {
    "alfen-ng9xx",
    "chint-dtsu666",
    "cwt-uwd",
    "deltaohm-pmsense",
    "eastron-sdm120",
    "eastron-sdm630",
    "lamp-controller",
    "relay-8ch",
    "renke-rs-fsjt-n01",
    "rs485-level-transmitter",
    "sensorbee-air-pro",
    "sonbest-sm7901",
}
# Points a shipped profile's vectors do not cover yet (known gaps, to be closed from the
# manual, never to grow): none left.
VECTOR_GAPS: dict[str, set[str]] = {}


def test_there_are_profiles_to_check() -> None:
    assert PROFILE_FILES, f"no profiles found in {PROFILES}"
    assert CWT_UWD in PROFILE_FILES
    missing = POLE_DEVICE_PROFILES - {path.stem for path in MODBUS_FILES}
    assert not missing


@pytest.fixture(params=PROFILE_FILES, ids=[p.stem for p in PROFILE_FILES])
def profile_file(request: pytest.FixtureRequest) -> Path:
    path: Path = request.param
    return path


@pytest.fixture(params=MODBUS_FILES, ids=[p.stem for p in MODBUS_FILES])
def modbus_file(request: pytest.FixtureRequest) -> Path:
    path: Path = request.param
    return path


def _modbus(path: Path) -> ModbusProfile:
    profile = load_profile(path)
    assert isinstance(profile, ModbusProfile)
    return profile


def test_profile_loads_without_problems(profile_file: Path) -> None:
    profile = load_profile(profile_file)
    assert profile.cross_check() == []
    if isinstance(profile, ModbusProfile):
        assert profile.points


def _decode_vector(
    profile: ModbusProfile, areas: dict[RegisterKind, dict[int, list[int]]]
) -> dict[str, Value]:
    """Decode what the agent would read: each planned block, sliced into its points."""
    registers = {
        kind: {start + i: word for start, words in area.items() for i, word in enumerate(words)}
        for kind, area in areas.items()
    }
    decoded: dict[str, Value] = {}
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


def test_profile_test_vectors_decode(modbus_file: Path) -> None:
    profile = _modbus(modbus_file)
    for number, vector in enumerate(profile.test_vectors):
        areas = {kind: vector.area(kind) for kind in RegisterKind}
        decoded = _decode_vector(profile, areas)
        for name, expected in vector.expect.items():
            where = f"{modbus_file.name} test_vectors[{number}] {name}"
            assert name in decoded, f"{where}: the vector's registers do not cover this point"
            actual = decoded[name]
            spec = profile.points[name]
            if isinstance(expected, bool) or spec.is_bool:
                assert actual is expected, where
            elif isinstance(expected, str) or spec.type is DataType.STRING:
                assert actual == expected, f"{where}: {actual!r} != {expected!r}"
            elif spec.type in INTEGER_TYPES and spec.scale == 1 and spec.offset == 0:
                assert isinstance(actual, int), where
                assert actual == expected, f"{where}: {actual!r} != {expected!r}"
            else:
                assert isinstance(actual, float | int), where
                assert math.isclose(actual, expected, rel_tol=1e-6, abs_tol=1e-12), (
                    f"{where}: {actual!r} != {expected!r}"
                )


def test_profile_simulation_starts_inside_the_valid_range(modbus_file: Path) -> None:
    profile = _modbus(modbus_file)
    for name, simulated in profile.simulation.items():
        valid = profile.points[name].valid_range
        if valid is not None and simulated.start is not None:
            assert valid[0] <= simulated.low <= simulated.start <= simulated.high <= valid[1], (
                f"{modbus_file.name}: {name}"
            )


def test_profile_simulates_every_point(modbus_file: Path) -> None:
    """``smartpole sim`` plays every point of a shipped profile, not a neutral zero."""
    profile = _modbus(modbus_file)
    assert set(profile.simulation) == set(profile.points)


def test_profile_write_limits_lie_inside_the_valid_range(modbus_file: Path) -> None:
    """A write the profile allows must never produce a reading the agent calls uncertain."""
    profile = _modbus(modbus_file)
    for name, spec in profile.points.items():
        if spec.write_min is not None and spec.write_max is not None and spec.valid_range:
            low, high = spec.valid_range
            assert low <= spec.write_min <= spec.write_max <= high, f"{modbus_file.name}: {name}"


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


# --- the schema of strings, bits, writes, refused areas, addressing -----------------------


def _inline(tmp_path: Path, points: str, extra: str = "") -> Path:
    path = tmp_path / "inline.yaml"
    path.write_text(f"model: X\nmanufacturer: Y\n{extra}points:\n{points}", encoding="utf-8")
    return path


def _loads(tmp_path: Path, points: str, extra: str = "") -> ModbusProfile:
    return _modbus(_inline(tmp_path, points, extra))


@pytest.mark.parametrize(
    ("points", "extra", "key", "message"),
    [
        pytest.param(
            "  s: {address: 0, type: string}\n", "", "points.s", "needs length", id="string-length"
        ),
        pytest.param(
            "  n: {address: 0, length: 2}\n", "", "points.n", "only to type string", id="length"
        ),
        pytest.param(
            "  s: {address: 0, type: string, length: 2, word_order: little}\n",
            "",
            "points.s",
            "word_order must be big",
            id="string-word-order",
        ),
        pytest.param(
            "  s: {address: 0, type: string, length: 2, valid_range: [0, 1]}\n",
            "",
            "points.s",
            "only to numeric points",
            id="string-valid-range",
        ),
        pytest.param(
            "  b: {address: 0, type: f32, bit: 0}\n", "", "points.b", "u16 and u32", id="bit-f32"
        ),
        pytest.param(
            "  b: {address: 0, type: u16, bit: 16}\n", "", "points.b", "0..15", id="bit-16-of-u16"
        ),
        pytest.param(
            "  b: {address: 0, type: u32, bit: 32}\n",
            "",
            "points.b.bit",
            "less than or equal",
            id="bit-32",
        ),
        pytest.param(
            "  b: {address: 0, type: u16, bit: 3, scale: 0.1}\n",
            "",
            "points.b",
            "no scale or offset",
            id="bit-with-scale",
        ),
        pytest.param(
            "  b: {kind: coil, address: 0, type: bool, valid_range: [0, 1]}\n",
            "",
            "points.b",
            "only to numeric points",
            id="bool-valid-range",
        ),
        pytest.param(
            "  d: {address: 0, access: rw}\n",
            "",
            "points.d",
            "needs write_min and write_max",
            id="rw-without-limits",
        ),
        pytest.param(
            "  d: {address: 0, write_min: 0, write_max: 10}\n",
            "",
            "points.d",
            "only to access rw",
            id="limits-on-read-only",
        ),
        pytest.param(
            "  d: {address: 0, access: rw, write_min: 0, write_max: 70000}\n",
            "",
            "points.d",
            "can encode ([0, 65535])",
            id="limits-beyond-u16",
        ),
        pytest.param(
            "  d: {address: 0, type: i16, scale: 0.1, access: rw,"
            " write_min: -4000, write_max: 0}\n",
            "",
            "points.d",
            "can encode ([-3276.8, 3276.7])",
            id="limits-beyond-scaled-i16",
        ),
        pytest.param(
            "  d: {address: 0, access: rw, write_min: 10, write_max: 0}\n",
            "",
            "points.d",
            "not be greater",
            id="limits-reversed",
        ),
        pytest.param(
            "  d: {kind: input, address: 0, access: rw, write_min: 0, write_max: 1}\n",
            "",
            "points.d",
            "input point is read-only",
            id="rw-input",
        ),
        pytest.param(
            "  c: {kind: coil, address: 0, type: bool, access: rw, write_min: 0, write_max: 1}\n",
            "",
            "points.c",
            "True/False point takes no write_min",
            id="limits-on-bool",
        ),
        pytest.param(
            "  d: {address: 0, access: rw, write_min: 0, write_max: 9,"
            " write: {address: 9, encoding: channel_byte, channel: 1}}\n",
            "",
            "points.d",
            "switches a True/False point only",
            id="channel-byte-on-number",
        ),
        pytest.param(
            "  r: {address: 0, bit: 0, access: rw, write: {address: 9, encoding: channel_byte}}\n",
            "",
            "points.r.write",
            "needs channel",
            id="channel-byte-without-channel",
        ),
        pytest.param(
            "  r: {address: 0, bit: 0, access: rw, write: {address: 9, encoding: pulse}}\n",
            "",
            "points.r.write.encoding",
            "'channel_byte' or 'value'",
            id="unknown-encoding",
        ),
        pytest.param(
            "  r: {address: 0, bit: 0, access: rw, write: {address: 9}}\n",
            "",
            "points.r",
            "bit point cannot be written as a value elsewhere",
            id="bit-written-as-value",
        ),
        pytest.param(
            "  r: {address: 0, bit: 0, write: {address: 9, encoding: channel_byte, channel: 1}}\n",
            "",
            "points.r",
            "only to access rw",
            id="write-block-on-read-only",
        ),
        pytest.param(
            "  a: {address: 0}\n",
            "limits:\n  refused: [{start: 5, end: 4}]\n",
            "limits.refused[0]",
            "start <= end",
            id="refused-reversed",
        ),
        pytest.param(
            "  a: {address: 0}\n",
            "addressing: {address_register: 0x07D0, baud_codes: {0: 2400}}\n",
            "addressing",
            "baud_codes need baud_register",
            id="baud-codes-without-register",
        ),
        pytest.param(
            "  a: {address: 0}\n",
            "addressing: {address_register: 0x07D0, baud_register: 0x07D1,"
            " baud_codes: {0: 2400, 1: 4000}}\n",
            "addressing.baud_codes[1]",
            "4800",
            id="baud-code-not-a-baud-rate",
        ),
        pytest.param(
            "  a: {address: 0}\n",
            "transport_defaults: {baudrate: 9600, tcp_port: 502}\n",
            "transport_defaults",
            "either serial",
            id="serial-and-tcp",
        ),
    ],
)
def test_new_schema_errors_are_located(
    tmp_path: Path, points: str, extra: str, key: str, message: str
) -> None:
    problems = _problems(_inline(tmp_path, points, extra))
    matching = [p for p in problems if p.key == key]
    assert matching, f"no problem at {key}; got {[str(p) for p in problems]}"
    assert any(message in p.message for p in matching), [p.message for p in matching]
    assert all(p.line is not None for p in matching)


@pytest.mark.parametrize(
    ("points", "extra", "key", "message"),
    [
        pytest.param(
            "  a: {address: 0, type: u16, bit: 0}\n  b: {address: 0, type: u32, bit: 1}\n",
            "",
            "points.b",
            "overlaps point 'a'",
            id="bits-of-different-types",
        ),
        pytest.param(
            "  a: {address: 0, type: u16, bit: 0}\n  b: {address: 0, type: u16}\n",
            "",
            "points.b",
            "overlaps point 'a'",
            id="bit-and-whole-register",
        ),
        pytest.param(
            "  a: {address: 0, type: u32, bit: 0}\n  b: {address: 1, type: u32, bit: 0}\n",
            "",
            "points.b",
            "overlaps point 'a'",
            id="bits-of-overlapping-registers",
        ),
        pytest.param(
            "  a: {address: 0, type: u16, bit: 0}\n"
            "  b: {address: 0, type: u16, bit: 1, byte_order: little}\n",
            "",
            "points.b",
            "overlaps point 'a'",
            id="bits-read-in-another-order",
        ),
        pytest.param(
            "  s: {address: 0, type: string, length: 3}\n  n: {address: 2}\n",
            "",
            "points.n",
            "overlaps point 's'",
            id="string-overlap",
        ),
        pytest.param(
            "  a: {address: 0}\n  b: {address: 10}\n",
            "limits:\n  refused: [{kind: holding, start: 8, end: 12}]\n",
            "points.b",
            "lies in refused area limits.refused[0]",
            id="point-in-refused-area",
        ),
        pytest.param(
            "  s: {address: 0, type: string, length: 1}\n",
            "simulation:\n  s: {start: 1}\n",
            "simulation.s",
            "simulated with text",
            id="string-simulated-with-number",
        ),
        pytest.param(
            "  s: {address: 0, type: string, length: 1}\n",
            "simulation:\n  s: {text: abc}\n",
            "simulation.s",
            "does not fit 1 registers",
            id="simulated-text-too-long",
        ),
        pytest.param(
            "  n: {address: 0}\n",
            "simulation:\n  n: {text: abc}\n",
            "simulation.n",
            "only for string points",
            id="number-simulated-with-text",
        ),
        pytest.param(
            "  b: {address: 0, bit: 2}\n",
            "simulation:\n  b: {start: 0.5, min: 0, max: 1, step: 0.5}\n",
            "simulation.b",
            "0 or 1",
            id="bool-simulated-between",
        ),
        pytest.param(
            "  n: {address: 0, type: i16}\n",
            "simulation:\n  n: {start: 0, min: -40000, max: 10, step: 1}\n",
            "simulation.n",
            "what i16 can encode",
            id="simulation-beyond-type",
        ),
        pytest.param(
            "  n: {address: 0}\n",
            "test_vectors:\n  - holding: {0: [1]}\n    expect: {n: abc}\n",
            "test_vectors[0].expect.n",
            "expects a number",
            id="vector-text-for-number",
        ),
        pytest.param(
            "  b: {address: 0, bit: 0}\n",
            "test_vectors:\n  - holding: {0: [1]}\n    expect: {b: 1}\n",
            "test_vectors[0].expect.b",
            "expects true or false",
            id="vector-number-for-bit",
        ),
    ],
)
def test_cross_section_schema_errors_are_located(
    tmp_path: Path, points: str, extra: str, key: str, message: str
) -> None:
    path = _inline(tmp_path, points, extra)
    problems = _problems(path)
    matching = [p for p in problems if p.key == key]
    assert matching, f"no problem at {key}; got {[str(p) for p in problems]}"
    assert any(message in p.message for p in matching), [p.message for p in matching]
    assert all(p.line is not None for p in matching)


def test_bit_points_of_one_register_may_share_it(tmp_path: Path) -> None:
    points = "".join(
        f"  b{n}: {{kind: input, address: 7, type: u32, bit: {n}}}\n" for n in range(32)
    )
    profile = _loads(tmp_path, points + "  after: {kind: input, address: 9}\n")
    assert profile.cross_check() == []
    blocks = plan_reads(profile.points, profile.limits)
    assert [(b.address, b.count) for b in blocks] == [(7, 3)]


def test_the_new_schema_fields_load(tmp_path: Path) -> None:
    profile = _loads(
        tmp_path,
        "  name: {address: 0, type: string, length: 4}\n"
        "  relay: {address: 10, bit: 2, access: rw,"
        " write: {address: 0x00AA, encoding: channel_byte, channel: 3}}\n"
        "  level: {address: 11, access: rw, write_min: 0, write_max: 100}\n"
        "  setpoint: {address: 12, type: f32, access: rw, write_min: 0, write_max: 32,"
        " write: {address: 20}}\n",
        "transport_defaults: {baudrate: 4800, parity: N, stopbits: 1}\n"
        "addressing: {address_register: 0x07D0, baud_register: 0x07D1,"
        " baud_codes: {0: 2400, 1: 4800, 2: 9600}}\n"
        "limits:\n  max_gap: 3\n  refused: [{kind: holding, start: 4, end: 9}]\n",
    )
    assert profile.points["name"].register_count == 4
    assert profile.points["relay"].is_bool
    assert profile.points["relay"].write is not None
    assert profile.points["relay"].write.channel == 3
    assert profile.points["setpoint"].write is not None
    assert profile.points["setpoint"].write.encoding == "value"
    assert profile.transport_defaults is not None
    assert profile.transport_defaults.baudrate == 4800
    assert profile.addressing is not None
    assert profile.addressing.baud_codes == {0: 2400, 1: 4800, 2: 9600}
    (area,) = profile.limits.refused
    assert (area.kind, area.start, area.end) == (RegisterKind.HOLDING, 4, 9)


def test_addressing_is_declared_for_the_devices_shipped_on_one_address() -> None:
    for stem in ("cwt-uwd", "renke-rs-fsjt-n01"):
        addressing = _modbus(PROFILES / f"{stem}.yaml").addressing
        assert addressing is not None, stem
        assert (addressing.address_register, addressing.baud_register) == (0x07D0, 0x07D1)
    renke = _modbus(PROFILES / "renke-rs-fsjt-n01.yaml")
    assert renke.addressing is not None
    assert renke.addressing.baud_codes == {0: 2400, 1: 4800, 2: 9600}
    assert renke.transport_defaults is not None
    assert (renke.transport_defaults.baudrate, renke.transport_defaults.parity) == (4800, "N")


def test_every_profile_names_its_manual_and_proves_it_with_a_vector(modbus_file: Path) -> None:
    """A shipped device is checked against its manual: the decode test above needs a vector
    that covers every point, or a point could ship with a scale nobody ever checked."""
    profile = _modbus(modbus_file)
    assert profile.manual, modbus_file.name
    covered = {name for vector in profile.test_vectors for name in vector.expect}
    missing = set(profile.points) - covered - VECTOR_GAPS.get(modbus_file.stem, set())
    assert not missing, f"{modbus_file.name}: no test vector covers {sorted(missing)}"


def test_sonbest_noise_module_reads_the_manuals_frames() -> None:
    """The SM7901 manual prints a whole exchange: the agent's one read must be its request
    byte for byte, and its answer must decode to the manual's 53.6 dB."""
    noise = _modbus(PROFILES / "sonbest-sm7901.yaml")
    (block,) = plan_reads(noise.points, noise.limits)
    request = pdu.Request(1, pdu.READ_FUNCTION[block.kind], block.address, block.count)
    assert rtu.encode_request(request) == bytes.fromhex("010300000001840A")
    used, reply = rtu.decode_reply(bytes.fromhex("0103020218B92E"), at_end=True)
    assert reply is not None
    assert used == 7
    words = [int.from_bytes(reply.data[i : i + 2], "big") for i in range(0, len(reply.data), 2)]
    assert codec.decode(noise.points["noise"], words) == pytest.approx(53.6)


def test_level_transmitter_publishes_the_decimals_its_scale_assumes() -> None:
    """The level's scale holds only while the unit keeps 2 decimals: another setting must show
    as a reading outside the valid range, not as a silently wrong depth."""
    level = _modbus(PROFILES / "rs485-level-transmitter.yaml")
    decimals = level.points["decimal_places"]
    assert decimals.valid_range == (2, 2)
    assert level.points["level"].scale == pytest.approx(10.0**-2)
    (block,) = plan_reads(level.points, level.limits)
    assert (block.kind, block.address, block.count) == (RegisterKind.HOLDING, 3, 3)


def test_relay_module_writes_go_to_the_channel_register() -> None:
    relay = _modbus(PROFILES / "relay-8ch.yaml")
    for channel in range(1, 9):
        spec = relay.points[f"relay{channel}"]
        assert (spec.address, spec.bit) == (0x009D, channel - 1)
        assert codec.encode_write(spec, True) == (RegisterKind.HOLDING, 0x00AA, [channel << 8 | 1])
        assert codec.encode_write(spec, False).words == [channel << 8]
    blocks = plan_reads(relay.points, relay.limits)
    assert [(b.kind, b.address, b.count) for b in blocks] == [(RegisterKind.HOLDING, 0x009D, 1)]


def test_alfen_socket_reads_and_its_lease_setpoint() -> None:
    alfen = _modbus(PROFILES / "alfen-ng9xx.yaml")
    blocks = plan_reads(alfen.points, alfen.limits)
    assert [(b.address, b.count) for b in blocks] == [(306, 72), (1200, 15)]
    setpoint = alfen.points["max_current"]
    request = codec.encode_write(setpoint, 10.0)
    assert request == (RegisterKind.HOLDING, 1210, [0x4120, 0x0000])
    assert request.function == 16
    with pytest.raises(codec.CodecError):
        codec.encode_write(setpoint, 32.5)
    with pytest.raises(codec.CodecError):
        codec.encode_write(alfen.points["safe_current"], 6.0)


def test_a_point_wider_than_one_read_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "wide.yaml"
    path.write_text(
        "model: X\nmanufacturer: Y\nlimits: {max_registers_per_read: 1}\n"
        "points:\n  energy: {address: 0, type: u32}\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_profile(path)
    (problem,) = caught.value.problems
    assert (problem.line, problem.key) == (5, "points.energy")
    assert "needs 2 registers in one read" in problem.message
