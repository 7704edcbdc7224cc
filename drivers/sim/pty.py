"""A pseudo-terminal endpoint for simulators: the device side of a virtual serial line.

Clients open ``.path`` exactly as they would open ``/dev/ttyUSB0``; the simulator reads and
writes the master side here. The slave side is kept open by us too, so the master never
sees EIO when a client closes the port, and a client can reopen the same path.
"""

from __future__ import annotations

import asyncio
import os
import tty
from typing import Final

import structlog

from smartpole.drivers.lifecycle import Lifecycle

log = structlog.get_logger(__name__)

_READ_CHUNK: Final = 4096


class PtyEndpoint(Lifecycle):
    """Owns one pty pair; one task reads from it, any code on the loop may write.

    ``max_pending`` bounds what may wait unsent for a client that does not read: beyond it
    :meth:`write` drops the bytes, as a jammed line would, instead of growing without end.
    """

    def __init__(self, *, max_pending: int | None = None) -> None:
        super().__init__()
        if max_pending is not None and max_pending <= 0:
            raise ValueError(f"max_pending must be positive, got {max_pending}")
        self._max_pending = max_pending
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

    @property
    def peer(self) -> str:
        """Who is at the other end, for logs: whoever opens the path."""
        return self.path

    @property
    def is_open(self) -> bool:
        return self._master is not None

    def open(self) -> None:
        """Create the pty pair; needs the running loop, which will watch the master side."""
        if self._master is not None:
            raise RuntimeError(f"the pty {self._path} is already open")
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
        self._pending.clear()
        loop.add_reader(master, self._on_readable)

    def close(self) -> None:
        """Close both sides; safe to call twice. A client still holding the path sees EIO."""
        master, slave, loop = self._master, self._slave, self._loop
        self._master = self._slave = self._path = None
        self._pending.clear()
        if master is not None and loop is not None:
            loop.remove_reader(master)
            loop.remove_writer(master)
            os.close(master)
        if slave is not None:
            os.close(slave)

    async def _start(self) -> None:
        self.open()

    def _release(self) -> None:
        self.close()

    async def read(self) -> bytes:
        """The next chunk the client wrote (as the kernel delivered it; frames may be split)."""
        return await self._chunks.get()

    def write(self, data: bytes) -> bool:
        """Queue ``data`` for the client; never blocks the loop. False when the pty is closed
        or ``max_pending`` would be exceeded (the bytes are dropped)."""
        if self._master is None or self._loop is None:
            return False
        if self._max_pending is not None and len(self._pending) + len(data) > self._max_pending:
            return False
        self._pending += data
        self._flush()
        return True

    async def drain(self) -> None:
        """Nothing to wait for: the loop flushes a pty as the client reads, and
        ``max_pending`` (if set) is the bound instead of back-pressure."""

    def _flush(self) -> None:
        master, loop = self._master, self._loop
        if master is None or loop is None:
            return
        try:
            while self._pending:
                del self._pending[: os.write(master, self._pending)]
        except BlockingIOError:
            pass  # the pty's buffer is full: the writer callback below goes on
        except OSError as exc:  # only if our own slave fd vanished: nobody can read it
            log.error("pty_write_failed", path=self._path, error=str(exc))
            self._pending.clear()
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
