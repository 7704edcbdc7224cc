"""A boolean or a float is never an integer: unit ids, addresses, ports, counts.

Lax pydantic takes ``true`` and ``1.0`` as 1, which made ``unit_id: true`` a silent second
unit 1 on a bus. Every config model is strict now; these tests hold every integer of the
shipped configs to it, not only the ones someone thought of.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args

import pytest
import yaml
from pydantic import BaseModel

from helpers.paths import PROFILES, REPO
from smartpole.agent.buses.registry import load_config, load_profile, registry
from smartpole.agent.config.yamlsource import format_key_path
from smartpole.agent.core.errors import ConfigError, Problem

DEMO = REPO / "configs" / "poles" / "demo.yaml"
KeyPath = tuple[str | int, ...]


RTU = "type: modbus-rtu\n    port: /dev/null"


def _config(tmp_path: Path, devices: str, bus: str = RTU) -> Path:
    path = tmp_path / "pole.yaml"
    path.write_text(
        f"pole:\n  id: p\nprofiles_dir: {PROFILES}\nbuses:\n  b1:\n    {bus}\ndevices:\n{devices}"
    )
    return path


def _problems(path: Path) -> list[Problem]:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return caught.value.problems


@pytest.mark.parametrize("spelling", ["true", "1.0", "'1'", "1.5", "false", "0.0"])
def test_a_unit_id_must_be_an_integer(tmp_path: Path, spelling: str) -> None:
    path = _config(tmp_path, f"  w:\n    profile: cwt-uwd\n    bus: b1\n    unit_id: {spelling}\n")
    found = [(p.line, p.key) for p in _problems(path)]
    assert (12, "devices.w.unit_id") in found


@pytest.mark.parametrize("spelling", ["true", "1.0", "'1'", "0x01", "01", "+1"])
def test_a_duplicate_unit_id_however_written_names_both_places(
    tmp_path: Path, spelling: str
) -> None:
    devices = (
        "  first:\n    profile: cwt-uwd\n    bus: b1\n    unit_id: 1\n"
        f"  second:\n    profile: cwt-uwd\n    bus: b1\n    unit_id: {spelling}\n"
    )
    duplicates = [p for p in _problems(_config(tmp_path, devices)) if "already used" in p.message]
    (problem,) = duplicates
    assert (problem.line, problem.key) == (16, "devices.second.unit_id")
    assert "by device 'first' (line 12)" in problem.message


@pytest.mark.parametrize(("spelling", "value"), [("0x10", 16), ("0b11", 3), ("1_0", 10), ("+4", 4)])
def test_yaml_integers_are_integers(tmp_path: Path, spelling: str, value: int) -> None:
    path = _config(tmp_path, f"  w:\n    profile: cwt-uwd\n    bus: b1\n    unit_id: {spelling}\n")
    assert load_config(path).pole.devices["w"].unit_id == value


def test_a_duplicate_meter_address_with_leading_zeros(tmp_path: Path) -> None:
    devices = (
        "  m1:\n    profile: dlt645-meter\n    bus: b1\n    address: '000000000001'\n"
        "  m2:\n    profile: dlt645-meter\n    bus: b1\n    address: '1'\n"
    )
    path = _config(tmp_path, devices, bus="type: dlt645\n    port: /dev/null")
    (problem,) = [p for p in _problems(path) if "already used" in p.message]
    assert problem.line == 16
    assert "address '1' on bus 'b1' is already used by device 'm1' (line 12)" in problem.message


@pytest.mark.parametrize("address", ["'²'", "'" + "1" * 5000 + "'", "'" + "0" * 5000 + "7'"])
def test_an_address_no_number_type_can_hold_is_a_problem(tmp_path: Path, address: str) -> None:
    devices = (
        "  m1:\n    profile: pelco-d-ptz\n    bus: b1\n    address: '7'\n"
        f"  m2:\n    profile: pelco-d-ptz\n    bus: b1\n    address: {address}\n"
    )
    path = _config(tmp_path, devices, bus="type: pelco-d\n    port: /dev/null")
    assert "devices.m2.address" in [p.key for p in _problems(path)]


@pytest.mark.parametrize(
    ("bus", "key"),
    [
        ("type: modbus-tcp\n    host: h\n    port: true", "buses.b1.port"),
        ("type: modbus-tcp\n    host: h\n    port: 502.0", "buses.b1.port"),
        ("type: modbus-rtu\n    port: /dev/null\n    stopbits: true", "buses.b1.stopbits"),
        ("type: modbus-rtu\n    port: /dev/null\n    baudrate: 9600.0", "buses.b1.baudrate"),
        ("type: modbus-rtu\n    port: /dev/null\n    retries: true", "buses.b1.retries"),
    ],
)
def test_bus_numbers_are_strict(tmp_path: Path, bus: str, key: str) -> None:
    path = _config(tmp_path, "  w:\n    profile: cwt-uwd\n    bus: b1\n    unit_id: 1\n", bus)
    assert key in [p.key for p in _problems(path)]


# ----- every integer of the shipped configs -----


def _int_leaves(value: Any, path: KeyPath = ()) -> Iterator[KeyPath]:
    if isinstance(value, dict):
        for key, child in value.items():
            yield from _int_leaves(child, (*path, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from _int_leaves(child, (*path, index))
    elif isinstance(value, int) and not isinstance(value, bool):
        yield path


def _at(data: Any, path: KeyPath) -> Any:
    for part in path:
        data = data[part]
    return data


def _swapped(data: Any, path: KeyPath, value: object) -> Any:
    out = copy.deepcopy(data)
    _at(out, path[:-1])[path[-1]] = value
    return out


def _refused_at(problems: list[Problem], path: KeyPath) -> bool:
    key = format_key_path(path)
    return any(p.key == key or key.startswith(f"{p.key}.") for p in problems if p.key)


def _is_int_field(validated: Any, path: KeyPath) -> bool:
    """Whether the schema kept the value an int (a float field makes it a float)."""
    try:
        return type(_at(validated, path)) is int
    except (KeyError, IndexError, TypeError):
        return False


def _sweep(file: Path, data: Any, validated: Any, load: Any, every: int) -> list[str]:
    """Swap every ``every``-th integer of ``data`` for a bool and, where the schema has an
    int, a float; list the swaps the loader accepted or refused somewhere else."""
    accepted = []
    for path in list(_int_leaves(data))[::every]:
        swaps: list[object] = [True]
        # Expected values of test vectors are decoded readings: any number fits.
        if _is_int_field(validated, path) and "test_vectors" not in path:
            swaps.append(float(_at(data, path)))
        for swap in swaps:
            file.write_text(yaml.safe_dump(_swapped(data, path, swap)))
            try:
                load(file)
            except ConfigError as exc:
                if _refused_at(exc.problems, path):
                    continue
            accepted.append(f"{format_key_path(path)} = {swap!r}")
    return accepted


# A load takes ~0.1 s here, and the shipped configs hold ~900 integers: the normal run
# takes a spread sample, the soak run every one.
SAMPLE = [pytest.param(7, id="sample"), pytest.param(1, id="all", marks=pytest.mark.soak)]


@pytest.mark.parametrize("every", SAMPLE)
def test_no_integer_of_the_demo_config_takes_a_bool_or_float(tmp_path: Path, every: int) -> None:
    data = yaml.safe_load(DEMO.read_text())
    data["profiles_dir"] = str(PROFILES)
    validated = load_config(DEMO).pole.model_dump(by_alias=True)
    assert _sweep(tmp_path / "pole.yaml", data, validated, load_config, every) == []


@pytest.mark.parametrize("every", [pytest.param(25, id="sample"), SAMPLE[1]])
@pytest.mark.parametrize("profile", sorted(PROFILES.glob("*.yaml")), ids=lambda p: p.stem)
def test_no_integer_of_a_profile_takes_a_bool_or_float(
    tmp_path: Path, profile: Path, every: int
) -> None:
    data = yaml.safe_load(profile.read_text())
    validated = load_profile(profile).model_dump(by_alias=True)
    assert _sweep(tmp_path / profile.name, data, validated, load_profile, every) == []


def _models_in(annotation: Any, found: set[type[BaseModel]]) -> None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        if annotation in found:
            return
        found.add(annotation)
        for field in annotation.model_fields.values():
            _models_in(field.annotation, found)
        return
    for arg in get_args(annotation):
        _models_in(arg, found)


def test_every_config_model_is_strict() -> None:
    # A model added later without strict=True would take `true` for 1 again (the sweeps
    # above only see the keys the shipped configs use).
    schema = registry().schema
    found: set[type[BaseModel]] = set()
    for root in (schema.pole, *schema.profiles):
        _models_in(root, found)
    assert len(found) > 20
    lax = sorted(m.__qualname__ for m in found if m.model_config.get("strict") is not True)
    assert lax == []
