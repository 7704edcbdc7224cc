"""The typed shape of a device profile: what a device model's manual says about its data.

A profile is declarative (kind, address, type, order, scale, unit) so that adding a device
model means writing YAML checked against its manual's examples, not writing a driver. The
agent's config loader turns YAML files into these models and reports errors with lines.

This module joins the protocols' schemas into one union and parses raw data into it. Each
protocol's models live with its driver (``modbus.points`` and ``modbus.profile``,
``dlt645.profile``, ``pelco_d.profile``, ``mcu.profile``); the Modbus names are re-exported
here, where the rest of the code base has always imported them from.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, TypeAdapter

from smartpole.drivers.dlt645.profile import Dlt645Profile
from smartpole.drivers.mcu.profile import McuProfile
from smartpole.drivers.modbus.points import (
    MAX_STRING_REGISTERS,
    Address,
    DataType,
    Order,
    PointSpec,
    RegisterKind,
    WriteEncoding,
    WriteSpec,
    encodable_range,
)
from smartpole.drivers.modbus.profile import (
    Baudrate,
    BitList,
    LeaseSpec,
    ModbusAddressing,
    ModbusLimits,
    ModbusProfile,
    RefusedArea,
    RegisterList,
    SimulatedValue,
    TestVector,
    TransportDefaults,
    Word,
)
from smartpole.drivers.pelco_d.profile import PelcoDProfile
from smartpole.drivers.schema import NAME_PATTERN, Location, PointName, ProfileInfo, StrictModel

__all__ = [
    "MAX_STRING_REGISTERS",
    "NAME_PATTERN",
    "PROFILE_MODELS",
    "Address",
    "Baudrate",
    "BitList",
    "DataType",
    "DeviceProfile",
    "Dlt645Profile",
    "LeaseSpec",
    "Location",
    "McuProfile",
    "ModbusAddressing",
    "ModbusLimits",
    "ModbusProfile",
    "Order",
    "PelcoDProfile",
    "PointName",
    "PointSpec",
    "ProfileInfo",
    "RefusedArea",
    "RegisterKind",
    "RegisterList",
    "SimulatedValue",
    "StrictModel",
    "TestVector",
    "TransportDefaults",
    "Word",
    "WriteEncoding",
    "WriteSpec",
    "encodable_range",
    "parse_profile",
]

# Any device profile; the ``protocol`` key picks the schema (Modbus when it is absent).
DeviceProfile = ModbusProfile | Dlt645Profile | PelcoDProfile | McuProfile
PROFILE_MODELS: dict[str, type[DeviceProfile]] = {
    "modbus": ModbusProfile,
    "dlt645": Dlt645Profile,
    "pelco-d": PelcoDProfile,
    "pole-mcu": McuProfile,
}
_PROFILE_ADAPTER: TypeAdapter[DeviceProfile] = TypeAdapter(
    Annotated[DeviceProfile, Field(discriminator="protocol")]
)


def parse_profile(data: object) -> DeviceProfile:
    """Validate raw profile data (a mapping from YAML); raises pydantic's ValidationError."""
    if isinstance(data, dict) and "protocol" not in data:
        data = {**data, "protocol": "modbus"}
    return _PROFILE_ADAPTER.validate_python(data)
