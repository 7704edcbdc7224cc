"""The point metadata the pole publishes (retained ``meta``), built from the shipped demo
pole with every bus protocol, checked with ``jsonschema`` against the published schema and
its hash recomputed from the schema's words, not with our code."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from helpers.paths import REPO
from smartpole.agent.buses.kind import BusContext
from smartpole.agent.buses.registry import registry
from smartpole.agent.core.audit import AuditLog
from smartpole.agent.core.points import PointTable
from smartpole.agent.uplink.meta import PoleMeta, build_meta, devices_of

DEMO = REPO / "configs" / "poles" / "demo.yaml"
SCHEMA = json.loads((REPO / "schemas" / "uplink" / "meta.schema.json").read_text())
VALIDATOR = jsonschema.Draft202012Validator(
    SCHEMA, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
)


def meta_of(config_path: Path, state: Path) -> tuple[PoleMeta, PointTable]:
    config = registry().load_config(config_path)
    table = PointTable()
    registry().create_buses(BusContext(config, table, AuditLog(state), lambda: True))
    return build_meta(table.described(), devices_of(config)), table


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[PoleMeta, PointTable]:
    """The demo pole's meta, built once: building its buses takes a while."""
    return meta_of(DEMO, tmp_path_factory.mktemp("demo"))


def independent_hash(devices: object) -> str:
    text = json.dumps(devices, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def test_every_point_of_every_device_is_described_in_the_schema(
    demo: tuple[PoleMeta, PointTable],
) -> None:
    meta, table = demo
    payload = json.loads(json.dumps(meta.payload("pole-0042", 3, 1767225600.0)))
    VALIDATOR.validate(payload)
    assert payload["hash"] == independent_hash(payload["devices"])
    described = {(d, p) for d, info in payload["devices"].items() for p in info["points"]}
    assert described == {(s.device, s.point) for s in table.snapshot()}
    protocols = {info["protocol"] for info in payload["devices"].values()}
    assert protocols == {"modbus", "dlt645", "pole-mcu", "pelco-d"}
    for device, info in payload["devices"].items():
        for point, entry in info["points"].items():
            assert {"type", "wire"} <= entry.keys(), (device, point)
            if entry["access"] == "rw" and entry["type"] in ("number", "integer"):
                assert {"write_min", "write_max"} <= entry.keys(), (device, point)


def test_each_protocol_describes_its_points_as_its_codec_delivers_them(
    demo: tuple[PoleMeta, PointTable],
) -> None:
    devices = json.loads(json.dumps(demo[0].devices))
    # Modbus: an integer register with scale 1 stays an integer; a scaled one is a number
    # whose resolution is its scale; a float has the resolution its profile declares.
    assert devices["lamp1"]["points"]["dim_level"] == {
        "type": "integer", "wire": "u16", "unit": "%", "access": "rw", "range": [0.0, 100.0],
        "write_min": 0.0, "write_max": 100.0, "resolution": 1.0,
    }  # fmt: skip
    assert devices["weather"]["points"]["wind_speed"]["type"] == "number"
    assert devices["weather"]["points"]["wind_speed"]["resolution"] == 0.1
    assert devices["supply"]["points"]["voltage_a"]["wire"] == "f32"
    assert devices["supply"]["points"]["voltage_a"]["resolution"] == 0.1
    assert devices["relays"]["points"]["relay4"] == {
        "type": "boolean", "wire": "u16 bit 3", "unit": "", "access": "rw"
    }  # fmt: skip
    assert devices["charger"]["points"]["mode3_state"]["type"] == "string"
    # DL/T 645: BCD with the format's decimals.
    voltage = devices["utility-meter"]["points"]["voltage"]
    assert (voltage["wire"], voltage["resolution"]) == ("bcd XXX.X", 0.1)
    # The MCU: its bridge arguments' steps; the level is writable 0..100.
    assert devices["mcu"]["points"]["temperature"]["resolution"] == 0.01
    assert devices["mcu"]["points"]["level"]["access"] == "rw"
    # Pelco-D position in hundredths of a degree.
    assert devices["camera"]["points"]["pan"]["resolution"] == 0.01
    assert devices["camera"]["protocol"] == "pelco-d"


def test_the_hash_changes_with_the_configuration_and_only_with_it(tmp_path: Path) -> None:
    configs = tmp_path / "configs"
    shutil.copytree(REPO / "configs", configs)
    first, _ = meta_of(configs / "poles" / "demo.yaml", tmp_path)
    again, _ = meta_of(configs / "poles" / "demo.yaml", tmp_path)
    assert first.hash == again.hash
    assert first.payload("p", 1, 1.0)["hash"] == first.payload("p", 2, 9.0)["hash"]
    profile = configs / "profiles" / "cwt-uwd.yaml"
    text = profile.read_text()
    assert "unit: m/s" in text
    profile.write_text(text.replace("unit: m/s", "unit: km/h", 1))
    changed, _ = meta_of(configs / "poles" / "demo.yaml", tmp_path)
    assert changed.hash != first.hash
    assert changed.hash == independent_hash(json.loads(json.dumps(changed.devices)))


@pytest.mark.parametrize(
    ("path", "bad"),
    [
        (("hash",), "not-a-hash"),
        (("session",), 0),
        (("devices", "lamp1", "points", "dim_level", "type"), "float"),
        (("devices", "lamp1", "points", "dim_level", "access"), "w"),
        (("devices", "lamp1", "points", "dim_level", "resolution"), 0),
        (("devices", "lamp1", "points", "dim_level", "range"), [0]),
        (("devices", "lamp1", "points", "dim_level", "colour"), "red"),
    ],
)
def test_the_schema_rejects_a_wrong_shape(
    demo: tuple[PoleMeta, PointTable], path: tuple[str, ...], bad: Any
) -> None:
    meta, _ = demo
    payload = json.loads(json.dumps(meta.payload("pole-0042", 3, 1.0)))
    VALIDATOR.validate(payload)
    target = payload
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = bad
    assert list(VALIDATOR.iter_errors(payload)), path


def test_a_point_without_a_description_still_goes_up_with_its_unit() -> None:
    meta = build_meta([("dev", "x", "V", None)], {})
    assert meta.devices == {"dev": {"points": {"x": {"unit": "V", "access": "r"}}}}
    VALIDATOR.validate(json.loads(json.dumps(meta.payload("p", 1, 1.0))))
