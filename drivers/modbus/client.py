"""Modbus RTU client for one serial bus, on top of pymodbus, speaking our error family.

pymodbus is configured not to reconnect by itself: the bus task that owns this client is the
one place that decides when to retry, so a dead port is retried with our backoff and
reported once instead of being retried silently inside the library.
"""

from __future__ import annotations

import logging
import time
from types import TracebackType
from typing import Self

from pymodbus.client import AsyncModbusSerialClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException
from pymodbus.pdu import ExceptionResponse, ModbusPDU

from smartpole.drivers.errors import (
    DeviceExceptionError,
    DeviceTimeoutError,
    ProtocolError,
    TransportError,
)
from smartpole.drivers.profile import RegisterKind

MODBUS_EXCEPTIONS = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "server device failure",
    5: "acknowledge",
    6: "server device busy",
    10: "gateway path unavailable",
    11: "gateway target failed to respond",
}

# pymodbus logs every timeout at error level; the bus task reports failures once per
# episode instead, so the library's own chatter is kept out of the journal.
logging.getLogger("pymodbus").setLevel(logging.CRITICAL)


class ModbusRtuClient:
    """One serial port. Not shared: exactly one bus task owns an instance."""

    def __init__(
        self,
        port: str,
        *,
        baudrate: int,
        bytesize: int = 8,
        parity: str = "N",
        stopbits: int = 1,
        timeout_s: float = 0.5,
    ) -> None:
        self.port = port
        self._client = AsyncModbusSerialClient(
            port,
            baudrate=baudrate,
            bytesize=bytesize,
            parity=parity,
            stopbits=stopbits,
            timeout=timeout_s,
            retries=0,
            reconnect_delay=0,
        )

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def connected(self) -> bool:
        return bool(self._client.connected)

    async def connect(self) -> None:
        if not await self._client.connect():
            self._client.close()
            raise TransportError(f"cannot open serial port {self.port}")

    def close(self) -> None:
        self._client.close()

    async def read(self, kind: RegisterKind, address: int, count: int, unit_id: int) -> list[int]:
        """Read ``count`` registers or bits; bits come back as 0/1 integers."""
        started = time.monotonic()
        try:
            if kind is RegisterKind.HOLDING:
                reply = await self._client.read_holding_registers(
                    address, count=count, device_id=unit_id
                )
            elif kind is RegisterKind.INPUT:
                reply = await self._client.read_input_registers(
                    address, count=count, device_id=unit_id
                )
            elif kind is RegisterKind.COIL:
                reply = await self._client.read_coils(address, count=count, device_id=unit_id)
            else:
                reply = await self._client.read_discrete_inputs(
                    address, count=count, device_id=unit_id
                )
        except ModbusIOException as exc:
            waited = time.monotonic() - started
            raise DeviceTimeoutError(
                f"no valid reply from unit {unit_id} within {waited:.2f} s"
            ) from exc
        except ConnectionException as exc:
            raise TransportError(f"serial port {self.port} is not usable: {exc}") from exc
        except ModbusException as exc:
            raise ProtocolError(f"bad reply from unit {unit_id}: {exc}") from exc
        return _values_of(reply, kind, count, unit_id)


def _values_of(reply: ModbusPDU, kind: RegisterKind, count: int, unit_id: int) -> list[int]:
    if isinstance(reply, ExceptionResponse) or reply.isError():
        code = int(getattr(reply, "exception_code", 0))
        name = MODBUS_EXCEPTIONS.get(code, "unknown exception")
        raise DeviceExceptionError(f"unit {unit_id} answered exception {code} ({name})", code)
    if kind.is_bit:
        bits = list(reply.bits)
        if len(bits) < count:
            raise ProtocolError(f"unit {unit_id} returned {len(bits)} bits, asked for {count}")
        return [1 if bit else 0 for bit in bits[:count]]
    registers = list(reply.registers)
    if len(registers) != count:
        raise ProtocolError(
            f"unit {unit_id} returned {len(registers)} registers, asked for {count}"
        )
    return registers
