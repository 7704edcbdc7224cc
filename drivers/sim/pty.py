"""A pseudo-terminal endpoint for simulators: the device side of a virtual serial line.

Clients open ``.path`` exactly as they would open ``/dev/ttyUSB0``; the simulator reads and
writes the master side here. The slave side is kept open by us too, so the master never
sees EIO when a client closes the port, and a client can reopen the same path.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tty
from types import TracebackType
from typing import Final, Self

_READ_CHUNK: Final = 4096


class PtyEndpoint:
    """Owns one pty pair; one task reads from it, any code on the loop may write."""

    def __init__(self) -> None:
        self._master: int | None = None
        self._slave: int | None = None
        self._path: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._chunks: asyncio.Queue[bytes] = asyncio.Queue()
        self._pending = bytearray()

    @property
    def path(self) -> str:
        if self._path is None:
            raise RuntimeError("the pty is not open")
        return self._path

    async def __aenter__(self) -> Self:
        loop = asyncio.get_running_loop()
        master, slave = os.openpty()
        try:
            tty.setraw(slave)  # binary protocols: no echo, no CR/LF translation
            os.set_blocking(master, False)
            path = os.ttyname(slave)
        except OSError:
            os.close(master)
            os.close(slave)
            raise
        self._master, self._slave, self._path, self._loop = master, slave, path, loop
        self._chunks = asyncio.Queue()
        loop.add_reader(master, self._on_readable)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        master, slave, loop = self._master, self._slave, self._loop
        self._master = self._slave = self._path = None
        if master is not None and loop is not None:
            loop.remove_reader(master)
            loop.remove_writer(master)
            os.close(master)
        if slave is not None:
            os.close(slave)

    async def read(self) -> bytes:
        """The next chunk the client wrote (as the kernel delivered it; frames may be split)."""
        return await self._chunks.get()

    def write(self, data: bytes) -> None:
        """Queue ``data`` for the client; never blocks the loop."""
        if self._master is None or self._loop is None:
            return
        self._pending += data
        self._flush()

    def _flush(self) -> None:
        master, loop = self._master, self._loop
        if master is None or loop is None:
            return
        with contextlib.suppress(BlockingIOError):
            while self._pending:
                written = os.write(master, self._pending)
                del self._pending[:written]
        if self._pending:
            loop.add_writer(master, self._flush)
        else:
            loop.remove_writer(master)

    def _on_readable(self) -> None:
        if self._master is None:
            return
        try:
            chunk = os.read(self._master, _READ_CHUNK)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk and self._loop is not None and self._master is not None:
            self._loop.remove_reader(self._master)  # only if our own slave fd vanished
            return
        self._chunks.put_nowait(chunk)
