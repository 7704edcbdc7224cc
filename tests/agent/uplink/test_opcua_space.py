"""What an OPC UA client learns about each point: EngineeringUnits and EURange, read with
asyncua's client from the server serving every point of the demo pole."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from asyncua import ua
from asyncua.common.node import Node

from helpers.opcua import Env, connected, point_node, serving
from helpers.paths import REPO
from smartpole.agent.buses.kind import BusContext
from smartpole.agent.buses.registry import registry
from smartpole.agent.core.audit import AuditLog
from smartpole.agent.core.points import PointTable
from smartpole.agent.uplink.opcua_space import valid_ranges

UNECE = "http://www.opcfoundation.org/UA/units/un/cefact"
# Every unit of the demo pole -> (UnitId, DisplayName, Description), copied from the OPC
# Foundation's UNECE_to_OPCUA.csv (UA-Nodeset/Schema), not computed by our code. P1
# (percent) is not in that extract: Rec. 20's symbol and name, and UnitId by Part 8's rule
# by hand: "P" = 0x50, "1" = 0x31, 0x5031 = 20529.
EXPECTED = {
    "m/s": (5067859, "m/s", "metre per second"),
    "°": (17476, "°", "degree [unit of angle]"),
    "%RH": (20529, "%", "percent"),
    "%": (20529, "%", "percent"),
    "°C": (4408652, "°C", "degree Celsius"),
    "dB": (12878, "dB", "decibel"),
    "µg/m³": (18257, "µg/m³", "microgram per cubic metre"),
    "kPa": (4935745, "kPa", "kilopascal"),
    "lx": (5002584, "lx", "lux"),
    "mm": (5066068, "mm", "millimetre"),
    "s": (5457219, "s", "second [unit of time]"),
    "h": (4740434, "h", "hour"),
    "V": (5655636, "V", "volt"),
    "A": (4279632, "A", "ampere"),
    "mA": (13387, "mA", "milliampere"),
    "W": (5723220, "W", "watt"),
    "kW": (4937556, "kW", "kilowatt"),
    "var": (4469812, "var", "var"),
    "Wh": (5720146, "W·h", "watt hour"),
    "kWh": (4937544, "kW·h", "kilowatt hour"),
    "Hz": (4740186, "Hz", "hertz"),
    "gn": (4928560, "gn", "standard acceleration of free fall"),
}


def _demo_table(tmp_path: Path) -> tuple[PointTable, dict[tuple[str, str], tuple[float, float]]]:
    """Every point of the demo pole, registered by the real bus tasks (the MCU's and the PTZ
    head's own points included), and the valid ranges of its profiles."""
    config = registry().load_config(REPO / "configs" / "poles" / "demo.yaml")
    table = PointTable()
    audit = tmp_path / "audit"
    audit.mkdir()
    registry().create_buses(BusContext(config, table, AuditLog(audit), lambda: True))
    return table, valid_ranges(config)


async def _properties(node: Node) -> dict[str, object]:
    out: dict[str, object] = {}
    for child in await node.get_properties():
        name = (await child.read_browse_name()).Name
        out[name] = await child.read_value()
    return out


@pytest.mark.asyncio
async def test_every_point_with_a_unit_has_its_unece_engineering_units(
    env: Env, tmp_path: Path
) -> None:
    table, ranges = _demo_table(tmp_path)
    samples = table.snapshot()
    assert len(samples) == 103
    demo = dataclasses.replace(env, table=table)
    checked_units = checked_ranges = 0
    async with serving(demo, ranges=ranges), connected(demo) as client:
        for sample in samples:
            node = await point_node(client, sample.device, sample.point)
            properties = await _properties(node)
            where = f"{sample.device}.{sample.point}"
            if not sample.unit:  # a state, an enum, a count or a ratio: no unit to give
                assert "EngineeringUnits" not in properties, where
            else:
                units = properties["EngineeringUnits"]
                assert isinstance(units, ua.EUInformation), where
                unit_id, symbol, name = EXPECTED[sample.unit]
                assert units.NamespaceUri == UNECE, where
                assert units.UnitId == unit_id, where
                assert units.DisplayName.Text == symbol, where
                assert units.Description.Text == name, where
                checked_units += 1
            span = ranges.get((sample.device, sample.point))
            if span is None:
                assert "EURange" not in properties, where
            else:  # no reading yet: every variable is a Double, so each range is shown
                found = properties["EURange"]
                assert isinstance(found, ua.Range), where
                assert (found.Low, found.High) == span, where
                checked_ranges += 1
    # Every point the demo pole exposes with a unit was checked, and every range.
    assert checked_units == sum(1 for s in samples if s.unit) == 68
    assert checked_ranges == len(ranges) > 60
    assert ranges[("weather", "temperature")] == (-40.0, 80.0)
