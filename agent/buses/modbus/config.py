"""The ``modbus-rtu``, ``modbus-tcp`` and ``modbus-rtu-over-tcp`` entries of ``buses:``."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from smartpole.agent.config.buses import Addressing, SerialBusConfig, TcpBusConfig


class ModbusRtuBus(SerialBusConfig):
    """Modbus RTU on one RS-485 port; devices are told apart by unit id (1-247, the
    broadcast 0 and the reserved 248-255 excluded)."""

    addressing: ClassVar = Addressing("unit_id", "a Modbus unit id", 1, 247)
    profile_protocol: ClassVar = "modbus"

    type: Literal["modbus-rtu"]
    # libmodbus and many RS-485 devices take the frame after a request for another unit for
    # that unit's answer (libmodbus waits 0.5 s for it): after a request nobody answered,
    # the next request to anyone waits until this long after it, or they do not hear it.
    listen_window_s: float = Field(
        0.6, ge=0, le=5, description="quiet after an unanswered request, from its sending"
    )

    def describe(self) -> str:
        return f"Modbus RTU {self.settings()}"


class ModbusTcpBus(TcpBusConfig):
    """A Modbus TCP endpoint; devices behind it are told apart by unit id."""

    addressing: ClassVar = Addressing("unit_id", "a Modbus unit id")
    profile_protocol: ClassVar = "modbus"

    type: Literal["modbus-tcp"]

    def describe(self) -> str:
        return "Modbus TCP"


class ModbusRtuOverTcpBus(TcpBusConfig):
    """Raw RTU frames through a serial-to-Ethernet gateway in transparent mode."""

    addressing: ClassVar = Addressing("unit_id", "a Modbus unit id")
    profile_protocol: ClassVar = "modbus"

    type: Literal["modbus-rtu-over-tcp"]

    def describe(self) -> str:
        return "Modbus RTU over TCP"


ModbusBus = ModbusRtuBus | ModbusTcpBus | ModbusRtuOverTcpBus
