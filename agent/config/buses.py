"""What every entry of the ``buses:`` section shares; each bus protocol adds its own keys.

The protocols themselves are plug-ins (``agent/buses/<protocol>``): each subclasses one of
these models with its ``type`` literal and declares, as class variables, how its devices
are addressed and which profile protocol they must speak. The pole config's ``buses``
union is built from the registered models (``pole.pole_model``), so this package never
imports a bus task and a new protocol never edits the config tree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, ClassVar, Literal, Self

from pydantic import BaseModel, ConfigDict, Field

from smartpole.drivers.schema import WHOLE_NUMBER

Baudrate = Annotated[Literal[1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200], WHOLE_NUMBER]
PointKinds = dict[str, tuple[bool, bool]]  # point -> (is_bool, writable)


@dataclass(frozen=True)
class Addressing:
    """How the devices on one type of bus are told apart, for the config checks.

    ``key`` is the device key that names a device on the bus (``unit_id`` or ``address``),
    or None for a bus that carries exactly one device and no address (the pole MCU).
    """

    key: Literal["unit_id", "address"] | None
    what: str = ""  # "a Modbus unit id", for "unit_id is required: a Modbus unit id"
    low: int | None = None
    high: int | None = None

    @property
    def label(self) -> str:
        return "unit id" if self.key == "unit_id" else "address"


class BusConfig(BaseModel):
    """One bus of the pole; exactly one task owns it and every device on it."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    #: how devices on this type of bus are addressed
    addressing: ClassVar[Addressing]
    #: the ``protocol`` of the profiles its devices must have
    profile_protocol: ClassVar[str]

    type: str

    @property
    def endpoint(self) -> str:
        raise NotImplementedError

    def describe(self) -> str:
        """The protocol and line settings, for logs and ``diag status``."""
        raise NotImplementedError

    def at(self, where: str) -> Self:
        """The same bus at another endpoint (a rig's pseudo-terminal or simulator port);
        ValueError when ``where`` is no endpoint of this kind of bus."""
        raise NotImplementedError

    def device_points(self) -> PointKinds | None:
        """The points of its device when the bus config names them rather than the
        profile (the MCU's relays); None: the device's profile lists them."""
        return None


class SerialBusConfig(BusConfig):
    """One RS-485 (or UART) port."""

    port: str = Field(min_length=1, description="serial device, e.g. /dev/ttyUSB0")
    baudrate: Baudrate = 9600
    bytesize: Annotated[Literal[7, 8], WHOLE_NUMBER] = 8
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Annotated[Literal[1, 2], WHOLE_NUMBER] = 1
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

    def at(self, where: str) -> Self:
        return self.model_copy(update={"port": where})


class TcpBusConfig(BusConfig):
    """One TCP endpoint (a device or a serial-to-Ethernet gateway)."""

    host: str = Field(min_length=1)
    port: int = Field(502, ge=1, le=65535)
    timeout_s: float = Field(1.0, gt=0, le=30, description="reply timeout per request")
    frame_gap_ms: float = Field(0.0, ge=0, le=1000)
    retries: int = Field(1, ge=0, le=5)

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"

    def at(self, where: str) -> Self:
        host, _, port = where.removeprefix("tcp://").rpartition(":")
        if not host or not port.isdigit():
            raise ValueError("is TCP, expected HOST:PORT")
        return self.model_copy(update={"host": host, "port": int(port)})
