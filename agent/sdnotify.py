"""The systemd notify protocol, spoken directly over a datagram socket.

The protocol is a handful of ``KEY=value`` lines in one AF_UNIX datagram, so a library
(and its C extension, which would have to be built for every pole's CPU) buys us
nothing. Without ``NOTIFY_SOCKET`` every call does nothing, so the same code runs under
systemd, in a terminal and in the tests.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Mapping

import structlog

from smartpole.drivers.lifecycle import Closing

__all__ = ["Notifier", "run_watchdog"]

log = structlog.get_logger(__name__)


def _socket_address(raw: str) -> str | None:
    """Map ``NOTIFY_SOCKET`` to what ``sendto`` takes, or None for a kind we cannot reach.

    systemd writes an abstract-namespace address with a leading ``@`` because an
    environment variable cannot hold the NUL byte the kernel expects there.
    """
    if raw.startswith("/"):
        return raw
    if raw.startswith("@") and len(raw) > 1:
        return "\0" + raw[1:]
    return None


class Notifier(Closing):
    """Tells systemd how the daemon is doing: started, status text, stopping, alive.

    Delivery is best effort on purpose. The notifications are for the service manager;
    a pole that keeps switching its lights but cannot reach systemd is still doing its
    job, so a failed send is logged (once per outage, to keep the journal readable) and
    never raised.
    """

    def __init__(self, notify_socket: str | None, *, watchdog_usec: int | None = None) -> None:
        """Take ``NOTIFY_SOCKET`` as systemd writes it (``/path`` or ``@abstract``).

        ``watchdog_usec`` is None or 0 when the watchdog is not ours to feed.
        """
        self._address: str | None = None
        self._sock: socket.socket | None = None
        self._failing = False
        if notify_socket:
            self._address = _socket_address(notify_socket)
            if self._address is None:
                # e.g. systemd 253's "vsock:" addresses, meant for virtual machines.
                log.warning("sd_notify_unsupported_socket", notify_socket=notify_socket)
        if self._address is not None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            # A wedged service manager must not wedge the event loop with it: a full
            # queue drops the datagram (logged as a failure) and the next ping retries.
            self._sock.setblocking(False)
        usec = watchdog_usec if watchdog_usec and watchdog_usec > 0 else None
        self._watchdog_usec = usec if self._sock is not None else None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] = os.environ) -> Notifier:
        """Read what systemd passes to a ``Type=notify`` service.

        ``WATCHDOG_PID`` names the process systemd watches; a child that inherited the
        variables must not keep a dead parent looking alive, so any other pid means no
        watchdog here.
        """
        watchdog_usec: int | None = None
        raw_usec = environ.get("WATCHDOG_USEC")
        raw_pid = environ.get("WATCHDOG_PID")
        if raw_usec:
            try:
                watchdog_usec = int(raw_usec)
            except ValueError:
                log.warning("sd_notify_bad_watchdog_usec", watchdog_usec=raw_usec)
        if watchdog_usec is not None and raw_pid:
            try:
                watchdog_pid: int | None = int(raw_pid)
            except ValueError:
                watchdog_pid = None
            if watchdog_pid != os.getpid():
                watchdog_usec = None
        return cls(environ.get("NOTIFY_SOCKET"), watchdog_usec=watchdog_usec)

    @property
    def enabled(self) -> bool:
        """Whether notifications go anywhere (False on a terminal or after ``close()``)."""
        return self._sock is not None

    @property
    def watchdog_interval_s(self) -> float | None:
        """How often to ping: half the timeout, as sd_watchdog_enabled(3) advises.

        Half leaves a whole interval of slack for a loop that is busy but not stuck.
        """
        if self._watchdog_usec is None:
            return None
        return self._watchdog_usec / 2 / 1_000_000

    def notify(self, message: str) -> bool:
        """Send one raw datagram; True when the kernel took it.

        Everything funnels through here so the no-op and the failure policy live in
        one place.
        """
        if self._sock is None or self._address is None:
            return False
        try:
            self._sock.sendto(message.encode(), self._address)
        except OSError as exc:
            if not self._failing:
                self._failing = True
                log.warning("sd_notify_failed", error=str(exc), message=message)
            return False
        self._failing = False
        return True

    def send(self, **fields: str | int) -> bool:
        """Send several fields in one datagram, e.g. ``send(READY=1, STATUS="up")``.

        One datagram matters: systemd applies its fields together, so the status shown
        by ``systemctl status`` never lags the state it describes.
        """
        if not fields:
            raise ValueError("send() needs at least one field")
        lines = []
        for key, value in fields.items():
            text = str(int(value)) if isinstance(value, bool) else str(value)
            if "\n" in text:
                raise ValueError(f"sd_notify field {key} must not contain a newline")
            lines.append(f"{key}={text}")
        return self.notify("\n".join(lines))

    def ready(self) -> bool:
        """Let systemd finish ``start`` and start units ordered after us."""
        return self.notify("READY=1")

    def status(self, text: str) -> bool:
        """Show ``text`` in ``systemctl status``; newlines would split the protocol."""
        return self.notify("STATUS=" + " ".join(text.splitlines()))

    def stopping(self) -> bool:
        """Say the stop is ours, so a slow shutdown is not mistaken for a hang."""
        return self.notify("STOPPING=1")

    def watchdog(self) -> bool:
        """Prove liveness; does nothing when systemd is not watching this process."""
        if self._watchdog_usec is None:
            return False
        return self.notify("WATCHDOG=1")

    def close(self) -> None:
        """Release the socket; later calls are no-ops. Safe to call twice."""
        sock, self._sock = self._sock, None
        self._watchdog_usec = None
        if sock is not None:
            sock.close()

    def __repr__(self) -> str:
        return f"Notifier(enabled={self.enabled}, watchdog_interval_s={self.watchdog_interval_s!r})"


async def run_watchdog(notifier: Notifier) -> None:
    """Feed the systemd watchdog from the event loop, until cancelled.

    It runs on the loop rather than in a thread on purpose: if the loop stops turning
    (a blocking call, a busy loop) the pings stop and systemd restarts the daemon,
    which is the only cure for a stuck loop. Returns at once when there is no watchdog.
    """
    interval = notifier.watchdog_interval_s
    if interval is None:
        return
    while True:
        notifier.watchdog()
        await asyncio.sleep(interval)
