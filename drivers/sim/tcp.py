"""A loopback TCP endpoint for simulators: a listener whose every connection is one line.

Devices behind Ethernet (a relay module, a charger, a serial gateway) are simulated on a
port of 127.0.0.1, so the agent's real TCP transports run against them. Each accepted
connection is handed to the simulator as a :class:`TcpLine`, which reads and writes like
a pty does, so one conversation loop serves either.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Final

_READ_CHUNK: Final = 4096


class TcpLine:
    """One accepted connection; ``read`` returns ``b""`` once the peer has closed it."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        peer = writer.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)

    async def read(self) -> bytes:
        return await self._reader.read(_READ_CHUNK)

    def write(self, data: bytes) -> bool:
        """Queue ``data`` for the peer; False once the connection is closing."""
        if self._writer.is_closing():
            return False
        self._writer.write(data)
        return True

    async def drain(self) -> None:
        """Until the peer has taken enough of what was written (TCP's back-pressure)."""
        await self._writer.drain()

    async def aclose(self, *, abort: bool) -> None:
        """Close; at once (``abort``, or data the peer never read) or after a clean FIN.

        Never waits on a peer that is not reading: either way the socket is closed on the
        loop's next pass, even if we are cancelled while waiting for it."""
        transport = self._writer.transport
        if abort or transport.get_write_buffer_size():
            transport.abort()
        else:
            self._writer.close()
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()


class TcpListener:
    """Listens on one address; ``on_line`` is called (on the loop, synchronously) with every
    accepted connection, so its owner registers the connection before anything can await.
    After :meth:`close` late arrivals are aborted instead."""

    def __init__(self, on_line: Callable[[TcpLine], None]) -> None:
        self._on_line = on_line
        self._server: asyncio.Server | None = None
        self.host = ""
        self.port = 0

    async def open(self, host: str, port: int) -> None:
        """Listen on ``host``:``port`` (0: a free port); ValueError when ``host`` resolves
        to several addresses, since clients are told exactly one."""
        server = await asyncio.start_server(self._accepted, host, port)
        addresses = {sock.getsockname()[:2] for sock in server.sockets}
        if len(addresses) != 1:
            server.close()
            await server.wait_closed()
            raise ValueError(f"{host!r} binds {sorted(addresses)}; give one address")
        ((bound_host, bound_port),) = addresses
        self._server, self.host, self.port = server, str(bound_host), int(bound_port)

    def close(self) -> None:
        """Stop listening; the connections already accepted are their owner's to close."""
        server, self._server = self._server, None
        if server is not None:
            server.close()

    def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._server is None:  # accepted just before close(): nobody will serve it
            writer.transport.abort()
            return
        self._on_line(TcpLine(reader, writer))
