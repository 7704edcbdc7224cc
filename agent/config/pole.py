"""The typed shape of a pole configuration file (``configs/poles/*.yaml``).

Strict on purpose: unknown keys are errors, because a misspelt key that is silently ignored
on a pole in the street becomes a wrong light schedule nobody notices.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from smartpole.agent.config.alarms import AlarmRule
from smartpole.agent.config.cameras import CameraConfig
from smartpole.agent.config.lighting import LightingConfig
from smartpole.agent.config.mcu_bus import McuSettings
from smartpole.agent.config.opcua import OpcUaConfig
from smartpole.agent.config.power import PowerRule
from smartpole.agent.config.site import SiteConfig
from smartpole.agent.config.uplink import UplinkConfig

NamePattern = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
Name = Annotated[str, Field(pattern=NamePattern, max_length=64)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PoleInfo(_Strict):
    id: Name = Field(description="unique in the city fleet; used in topics and logs")
    name: str = ""
    location: str = ""


Baudrate = Literal[1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200]


class _SerialBus(_Strict):
    """One RS-485 port; exactly one task owns it and all devices on it share it."""

    port: str = Field(min_length=1, description="serial device, e.g. /dev/ttyUSB0")
    baudrate: Baudrate = 9600
    bytesize: Literal[7, 8] = 8
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    timeout_s: float = Field(0.5, gt=0, le=10, description="reply timeout per request")
    frame_gap_ms: float = Field(
        0.0, ge=0, le=1000, description="extra silence between frames for slow devices"
    )
    retries: int = Field(1, ge=0, le=5, description="retries of a failed request")

    @property
    def endpoint(self) -> str:
        return self.port

    def settings(self) -> str:
        return f"{self.baudrate} {self.bytesize}{self.parity}{self.stopbits}"


class ModbusRtuBus(_SerialBus):
    type: Literal["modbus-rtu"]

    def describe(self) -> str:
        return f"Modbus RTU {self.settings()}"


class Dlt645Bus(_SerialBus):
    type: Literal["dlt645"]
    baudrate: Baudrate = 2400
    parity: Literal["N", "E", "O"] = "E"
    timeout_s: float = Field(1.0, gt=0, le=10)

    def describe(self) -> str:
        return f"DL/T 645-2007 {self.settings()}"


class PelcoDBus(_SerialBus):
    type: Literal["pelco-d"]
    baudrate: Baudrate = 2400

    def describe(self) -> str:
        return f"Pelco-D {self.settings()}"


class PoleMcuBus(_SerialBus, McuSettings):
    """The UART to the cabinet MCU (firmware-bridge/PROTOCOL.md); one MCU per bus."""

    type: Literal["pole-mcu"]
    baudrate: Baudrate = 115200
    timeout_s: float = Field(
        1.0, gt=0, le=10, description="deadline of one request, its resends included"
    )

    def describe(self) -> str:
        return f"pole MCU bridge {self.settings()}"


class _TcpBus(_Strict):
    host: str = Field(min_length=1)
    port: int = Field(502, ge=1, le=65535)
    timeout_s: float = Field(1.0, gt=0, le=30, description="reply timeout per request")
    frame_gap_ms: float = Field(0.0, ge=0, le=1000)
    retries: int = Field(1, ge=0, le=5)

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"


class ModbusTcpBus(_TcpBus):
    """A Modbus TCP endpoint; devices behind it are told apart by unit id."""

    type: Literal["modbus-tcp"]

    def describe(self) -> str:
        return "Modbus TCP"


class ModbusRtuOverTcpBus(_TcpBus):
    """Raw RTU frames through a serial-to-Ethernet gateway in transparent mode."""

    type: Literal["modbus-rtu-over-tcp"]

    def describe(self) -> str:
        return "Modbus RTU over TCP"


Bus = Annotated[
    ModbusRtuBus | ModbusTcpBus | ModbusRtuOverTcpBus | Dlt645Bus | PelcoDBus | PoleMcuBus,
    Field(discriminator="type"),
]
BUS_PROTOCOL = {
    "modbus-rtu": "modbus",
    "modbus-tcp": "modbus",
    "modbus-rtu-over-tcp": "modbus",
    "dlt645": "dlt645",
    "pelco-d": "pelco-d",
    "pole-mcu": "pole-mcu",
}


class DeviceConfig(_Strict):
    """One device on a bus, described by a profile."""

    profile: Name = Field(description="file name (without .yaml) in the profiles folder")
    bus: Name
    unit_id: int | None = Field(None, ge=0, le=255, description="Modbus unit id")
    address: str | None = Field(
        None,
        pattern=r"^[0-9]{1,12}$",
        description="DL/T 645 meter address (up to 12 digits) or Pelco-D camera address",
    )
    poll_period_s: float = Field(10.0, ge=0.1, le=86400)
    offline_after: int = Field(
        3, ge=1, le=100, description="consecutive failed polls before the device is offline"
    )
    offline_probe_s: float = Field(
        60.0, ge=0.1, le=3600, description="longest interval between probes of an offline device"
    )
    description: str = ""


class PoleConfig(_Strict):
    pole: PoleInfo
    profiles_dir: str = Field(
        "../profiles", description="folder of device profiles, relative to this file"
    )
    buses: dict[Name, Bus] = Field(min_length=1)
    devices: dict[Name, DeviceConfig] = Field(min_length=1)
    alarms: dict[str, AlarmRule] = Field(
        default_factory=dict, description="alarm kind -> thresholds, sources and actions"
    )
    power: dict[Name, PowerRule] = Field(
        default_factory=dict, description="device -> the relay channel feeding it (power cycling)"
    )
    site: SiteConfig | None = None
    lighting: LightingConfig | None = None
    cameras: dict[Name, CameraConfig] = Field(
        default_factory=dict, description="camera -> its source, detector and counting lines"
    )
    uplink: UplinkConfig | None = None
    opcua: OpcUaConfig | None = Field(
        None, description="OPC UA server for SCADA clients (secure policies only)"
    )

    @model_validator(mode="after")
    def _site_for_lighting(self) -> Self:
        if self.lighting is not None and self.site is None:
            raise ValueError("a lighting section needs a site (latitude, longitude, timezone)")
        return self

    def lamps(self, has_lease: Callable[[str], bool]) -> list[str]:
        """Devices the lighting controller drives: those whose profile leases a level."""
        return [name for name in self.devices if has_lease(name)]
