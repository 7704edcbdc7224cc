"""The unit table: every unit a pole can expose has a UNECE code, and UnitIds are Part 8's."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from helpers.paths import PROFILES
from smartpole.drivers.dlt645.profile import Dlt645PointSpec
from smartpole.drivers.mcu.profile import INPUT_POINTS, STATUS_POINTS
from smartpole.drivers.modbus.points import PointSpec
from smartpole.drivers.units import UNITS, known_unit, unit_id

# Rows of the OPC Foundation's UNECE_to_OPCUA.csv (code, UnitId, DisplayName): the table
# Part 8 points to, checked here against our computation.
FOUNDATION_ROWS = [
    ("VLT", 5655636, "V"),
    ("AMP", 4279632, "A"),
    ("4K", 13387, "mA"),
    ("WTT", 5723220, "W"),
    ("KWH", 4937544, "kW·h"),
    ("D46", 4469814, "V·A"),
    ("D44", 4469812, "var"),
    ("HTZ", 4740186, "Hz"),
    ("CEL", 4408652, "°C"),
    ("LUX", 5002584, "lx"),
    ("KPA", 4935745, "kPa"),
    ("MTS", 5067859, "m/s"),
    ("MMT", 5066068, "mm"),
    ("DD", 17476, "°"),
    ("2N", 12878, "dB"),
    ("GQ", 18257, "µg/m³"),
    ("SEC", 5457219, "s"),
    ("HUR", 4740434, "h"),
    ("K40", 4928560, "gn"),
]


def _decode(value: int) -> str:
    out = ""
    while value:
        out = chr(value & 0xFF) + out
        value >>= 8
    return out


@pytest.mark.parametrize(("code", "expected", "symbol"), FOUNDATION_ROWS)
def test_unit_id_and_symbol_match_the_foundation_table(
    code: str, expected: int, symbol: str
) -> None:
    assert unit_id(code) == expected
    assert any(info.code == code and info.symbol == symbol for info in UNITS.values())


@given(st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", min_size=1, max_size=4))
def test_unit_id_round_trips_every_common_code(code: str) -> None:
    # Part 8: the code's characters, most significant first; codes never start with NUL.
    value = unit_id(code)
    assert 0 < value < 2**31  # an Int32 in EUInformation
    assert _decode(value) == code


@pytest.mark.parametrize("code", ["", "ABCDE", "µg"])
def test_unit_id_refuses_what_is_no_common_code(code: str) -> None:
    with pytest.raises(ValueError, match="common code"):
        unit_id(code)


def test_every_unit_maps_to_one_well_formed_code() -> None:
    for unit, info in UNITS.items():
        assert unit
        assert info.symbol
        assert info.name
        assert re.fullmatch(r"[A-Z0-9]{2,3}", info.code), unit


def _profile_units() -> set[str]:
    units: set[str] = set()
    for path in PROFILES.glob("*.yaml"):
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        for spec in (data.get("points") or {}).values():
            if spec.get("unit"):
                units.add(spec["unit"])
    return units


def test_every_unit_a_pole_exposes_is_in_the_table() -> None:
    """The shipped profiles, and the MCU's points, which the agent registers itself (the
    OPC UA test checks every point of the demo pole, a PTZ head's too)."""
    own = {*INPUT_POINTS.values(), *STATUS_POINTS.values()}
    missing = sorted(u for u in own | _profile_units() if u and u not in UNITS)
    assert not missing


def test_point_models_refuse_an_unknown_unit_with_a_hint() -> None:
    with pytest.raises(ValueError, match=r"unknown unit 'deg'.*did you mean '°'"):
        PointSpec.model_validate({"address": 0, "unit": "deg"})
    with pytest.raises(ValueError, match=r"unknown unit 'kwh'.*did you mean 'kWh'"):
        Dlt645PointSpec.model_validate({"di": 0x00010000, "format": "XXXXXX.XX", "unit": "kwh"})
    assert PointSpec.model_validate({"address": 0, "unit": "kWh"}).unit == "kWh"
    assert known_unit("") == ""
