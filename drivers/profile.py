"""Any device profile: the protocols' profile schemas joined into one union, and its parser.

A profile is declarative (kind, address, type, order, scale, unit) so that adding a device
model means writing YAML checked against its manual's examples, not writing a driver. Each
protocol's schema lives with its driver; the ``protocol`` key picks one.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, TypeAdapter

from smartpole.drivers.dlt645.profile import Dlt645Profile
from smartpole.drivers.mcu.profile import McuProfile
from smartpole.drivers.modbus.profile import ModbusProfile
from smartpole.drivers.pelco_d.profile import PelcoDProfile

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
