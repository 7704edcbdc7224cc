"""A shared RS-485 pair for RTU devices that each own a pty: every byte anyone sends, all hear.

A pty joins two ends only, but a bus has a master and several slaves on one pair, and a
slave hears the others' answers (libmodbus, like real RS-485 devices, takes the frame after
a request for another unit for that unit's answer). ``Rs485Line`` gives the client a pty
of its own (``path``) and copies, in a thread, what the client sends to every device's
line and what a device sends to the client and to every other device.
"""

from __future__ import annotations

import os
import select
import threading
import tty
from types import TracebackType


class Rs485Line:
    """Join ``device_fds`` (each the test's end of a device's pty) into one line."""

    def __init__(self, device_fds: list[int]) -> None:
        self._devices = list(device_fds)
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        self.path = os.ttyname(self._slave)
        self._stop_read, self._stop_write = os.pipe()
        self._thread = threading.Thread(target=self._carry, name="rs485 line", daemon=True)

    def _carry(self) -> None:
        ends = [self._master, *self._devices]
        while True:
            ready, _, _ = select.select([*ends, self._stop_read], [], [])
            if self._stop_read in ready:
                return
            for end in ready:
                try:
                    data = os.read(end, 4096)
                except OSError:
                    continue  # the client closed its end (it reopens on reconnect)
                for other in ends:
                    if other != end:
                        os.write(other, data)

    def __enter__(self) -> Rs485Line:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        os.write(self._stop_write, b"x")
        self._thread.join(timeout=5)
        for fd in (self._master, self._slave, self._stop_read, self._stop_write):
            os.close(fd)
