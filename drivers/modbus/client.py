"""Modbus client for one bus (RTU serial, TCP, or RTU over TCP).

Plain Modbus TCP goes through our own MBAP client (``tcp_client``): on a gateway polling
many devices ten times a second, pymodbus' per-request overhead was most of the daemon's
CPU. The serial framings (RTU on a port, RTU frames through a TCP socket) stay with
pymodbus (``pymodbus_client``), imported only when such a bus exists, so a TCP-only
gateway does not pay its memory.

Both sides fail the same way: TransportError when the line is unusable (the bus task
reconnects), :class:`~smartpole.drivers.modbus.faults.ReplyTimeoutError` with a
:class:`~smartpole.drivers.modbus.faults.ReplyFault` when no valid answer came,
DeviceExceptionError for exception answers, ProtocolError for answers that make no sense.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from smartpole.drivers.lifecycle import Lifecycle
from smartpole.drivers.modbus.faults import ReplyFault
from smartpole.drivers.modbus.points import RegisterKind
from smartpole.drivers.modbus.tcp_client import ModbusTcpClient

if TYPE_CHECKING:
    from smartpole.drivers.modbus.pymodbus_client import PymodbusClient

Framing = Literal["rtu", "tcp", "rtu-over-tcp"]


@dataclass(frozen=True)
class Endpoint:
    """Where a bus is: a serial port with its line settings, or a TCP host and port."""

    framing: Framing
    port: str = ""
    host: str = ""
    tcp_port: int = 502
    baudrate: int = 9600
    bytesize: int = 8
    parity: str = "N"
    stopbits: int = 1
    # RTU: after an unanswered request the line is quiet until this long after it was sent
    # (listening devices ignore what comes sooner; ``pymodbus_client``).
    listen_window_s: float = 0.0

    def __str__(self) -> str:
        return self.port if self.framing == "rtu" else f"{self.host}:{self.tcp_port}"


class ModbusClient(Lifecycle):
    """One bus. Not shared: exactly one bus task owns an instance, and reconnects it with
    ``connect()``/``close()``; ``async with`` connects and closes it once."""

    def __init__(self, endpoint: Endpoint, *, timeout_s: float) -> None:
        super().__init__()
        self.endpoint = endpoint
        self.timeout_s = timeout_s
        self._impl: ModbusTcpClient | PymodbusClient
        if endpoint.framing == "tcp":
            self._impl = ModbusTcpClient(endpoint.host, endpoint.tcp_port, timeout_s=timeout_s)
        else:
            from smartpole.drivers.modbus.pymodbus_client import PymodbusClient

            self._impl = PymodbusClient(endpoint, timeout_s=timeout_s)

    async def _start(self) -> None:
        await self.connect()

    def _release(self) -> None:
        self.close()

    @property
    def connected(self) -> bool:
        return self._impl.connected

    @property
    def stream_broken(self) -> bool:
        """Bytes nobody asked for broke the link; the next request reports it as garbage
        (Modbus TCP only: a serial line has no stream to break)."""
        impl = self._impl
        return isinstance(impl, ModbusTcpClient) and impl.stream_broken

    @property
    def late_answers(self) -> int:
        """Answers dropped in the quiet period after a timeout (RTU framing only: TCP has
        transaction ids, so a late answer is never taken for the next one)."""
        impl = self._impl
        return 0 if isinstance(impl, ModbusTcpClient) else impl.late_answers

    @property
    def stray_bytes(self) -> int:
        """Bytes that came while no request was waiting (RTU framing only)."""
        impl = self._impl
        return 0 if isinstance(impl, ModbusTcpClient) else impl.stray_bytes

    async def connect(self) -> None:
        await self._impl.connect()

    def close(self) -> None:
        self._impl.close()

    async def read(self, kind: RegisterKind, address: int, count: int, unit_id: int) -> list[int]:
        """Read ``count`` registers or bits; bits come back as 0/1 integers."""
        return await self._impl.read(kind, address, count, unit_id)

    async def write(
        self, kind: RegisterKind, address: int, values: Sequence[int], unit_id: int
    ) -> None:
        """Write registers (FC 06/16) or coils (FC 05/15)."""
        await self._impl.write(kind, address, values, unit_id)

    def last_fault(self, unit_id: int) -> ReplyFault:
        """What came instead of a valid answer to the last failed request."""
        impl = self._impl
        return impl.last_fault if isinstance(impl, ModbusTcpClient) else impl.last_fault(unit_id)
