"""The typed shape of a pole configuration file (``configs/poles/*.yaml``).

Strict on purpose: unknown keys are errors, because a misspelt key that is silently ignored
on a pole in the street becomes a wrong light schedule nobody notices.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

NamePattern = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
Name = Annotated[str, Field(pattern=NamePattern, max_length=64)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PoleInfo(_Strict):
    id: Name = Field(description="unique in the city fleet; used in topics and logs")
    name: str = ""
    location: str = ""


class ModbusRtuBus(_Strict):
    """One RS-485 port; exactly one task owns it and all devices on it share it."""

    type: Literal["modbus-rtu"]
    port: str = Field(min_length=1, description="serial device, e.g. /dev/ttyUSB0")
    baudrate: Literal[1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200] = 9600
    bytesize: Literal[7, 8] = 8
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    timeout_s: float = Field(0.5, gt=0, le=10, description="reply timeout per request")

    def describe(self) -> str:
        return f"Modbus RTU {self.baudrate} {self.bytesize}{self.parity}{self.stopbits}"


class DeviceConfig(_Strict):
    """One device on a bus, described by a profile."""

    profile: Name = Field(description="file name (without .yaml) in the profiles folder")
    bus: Name
    unit_id: int = Field(ge=1, le=247)
    poll_period_s: float = Field(10.0, ge=0.1, le=86400)
    offline_after: int = Field(
        3, ge=1, le=100, description="consecutive failed polls before the device is offline"
    )
    description: str = ""


class PoleConfig(_Strict):
    pole: PoleInfo
    profiles_dir: str = Field(
        "../profiles", description="folder of device profiles, relative to this file"
    )
    buses: dict[Name, ModbusRtuBus] = Field(min_length=1)
    devices: dict[Name, DeviceConfig] = Field(min_length=1)
