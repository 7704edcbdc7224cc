"""sd_notify over a real AF_UNIX datagram socket, standing in for systemd's."""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from smartpole.agent.sdnotify import Notifier, run_watchdog

RECV_TIMEOUT_S = 5.0


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A bound datagram socket and the NOTIFY_SOCKET value that reaches it."""
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(RECV_TIMEOUT_S)
    try:
        yield sock, str(path)
    finally:
        sock.close()


def recv(sock: socket.socket) -> bytes:
    return sock.recv(4096)


def assert_nothing_queued(sock: socket.socket) -> None:
    # sendto() on a local datagram socket queues before it returns, so anything sent
    # is already here: no waiting needed to prove that nothing else was sent.
    timeout = sock.gettimeout()
    sock.setblocking(False)
    try:
        with pytest.raises(BlockingIOError):
            sock.recv(4096)
    finally:
        sock.settimeout(timeout)


def test_sends_each_notification_as_one_datagram(
    listener: tuple[socket.socket, str],
) -> None:
    sock, address = listener
    env = {"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "30000000"}
    with Notifier.from_environ(env) as notifier:
        assert notifier.enabled
        assert notifier.ready() is True
        assert notifier.status("polling 3 drivers") is True
        assert notifier.watchdog() is True
        assert notifier.stopping() is True
        assert notifier.notify("RELOADING=1") is True

    assert recv(sock) == b"READY=1"
    assert recv(sock) == b"STATUS=polling 3 drivers"
    assert recv(sock) == b"WATCHDOG=1"
    assert recv(sock) == b"STOPPING=1"
    assert recv(sock) == b"RELOADING=1"
    assert_nothing_queued(sock)


def test_send_joins_fields_with_newlines(listener: tuple[socket.socket, str]) -> None:
    sock, address = listener
    with Notifier.from_environ({"NOTIFY_SOCKET": address}) as notifier:
        assert notifier.send(READY=1, STATUS="up") is True
        assert notifier.send(STOPPING=True) is True
        with pytest.raises(ValueError, match="newline"):
            notifier.send(STATUS="two\nlines")
        with pytest.raises(ValueError, match="at least one"):
            notifier.send()

    assert recv(sock) == b"READY=1\nSTATUS=up"
    assert recv(sock) == b"STOPPING=1"
    assert_nothing_queued(sock)


def test_status_keeps_multiline_text_on_one_line(listener: tuple[socket.socket, str]) -> None:
    sock, address = listener
    with Notifier.from_environ({"NOTIFY_SOCKET": address}) as notifier:
        notifier.status("modbus timeout\nretrying")
    assert recv(sock) == b"STATUS=modbus timeout retrying"


def test_abstract_namespace_address() -> None:
    name = f"smartpole-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(RECV_TIMEOUT_S)
        with Notifier.from_environ({"NOTIFY_SOCKET": "@" + name}) as notifier:
            assert notifier.ready() is True
        assert recv(sock) == b"READY=1"


def test_watchdog_interval_is_half_of_watchdog_usec(listener: tuple[socket.socket, str]) -> None:
    _, address = listener
    env = {"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "30000000"}
    with Notifier.from_environ(env) as notifier:
        assert notifier.watchdog_interval_s == pytest.approx(15.0)
    with Notifier.from_environ({**env, "WATCHDOG_PID": str(os.getpid())}) as notifier:
        assert notifier.watchdog_interval_s == pytest.approx(15.0)


@pytest.mark.parametrize("usec", ["", "0", "-5", "soon"])
def test_unusable_watchdog_usec_means_no_watchdog(
    listener: tuple[socket.socket, str], usec: str
) -> None:
    sock, address = listener
    with Notifier.from_environ({"NOTIFY_SOCKET": address, "WATCHDOG_USEC": usec}) as notifier:
        assert notifier.watchdog_interval_s is None
        assert notifier.watchdog() is False
    assert_nothing_queued(sock)


def test_watchdog_of_another_pid_is_not_ours(listener: tuple[socket.socket, str]) -> None:
    sock, address = listener
    env = {
        "NOTIFY_SOCKET": address,
        "WATCHDOG_USEC": "30000000",
        "WATCHDOG_PID": str(os.getpid() + 1),
    }
    with Notifier.from_environ(env) as notifier:
        assert notifier.watchdog_interval_s is None
        assert notifier.watchdog() is False
        # Only the watchdog is someone else's; the other notifications still go.
        assert notifier.ready() is True
    assert recv(sock) == b"READY=1"
    assert_nothing_queued(sock)


def test_without_notify_socket_everything_is_a_no_op() -> None:
    with (
        structlog.testing.capture_logs() as logs,
        Notifier.from_environ({"WATCHDOG_USEC": "30000000"}) as notifier,
    ):
        assert not notifier.enabled
        assert notifier.watchdog_interval_s is None
        assert notifier.ready() is False
        assert notifier.status("x") is False
        assert notifier.stopping() is False
        assert notifier.watchdog() is False
        assert notifier.send(READY=1) is False
        assert notifier.notify("READY=1") is False
    assert logs == []


def test_default_environ_is_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    with Notifier.from_environ() as notifier:
        assert not notifier.enabled


def test_lost_socket_logs_once_and_does_not_raise(tmp_path: Path) -> None:
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(RECV_TIMEOUT_S)
        with Notifier.from_environ({"NOTIFY_SOCKET": str(path)}) as notifier:
            assert notifier.ready() is True
            assert recv(sock) == b"READY=1"
            sock.close()
            path.unlink()

            with structlog.testing.capture_logs() as logs:
                assert notifier.status("still here") is False
            assert [(e["event"], e["log_level"]) for e in logs] == [("sd_notify_failed", "warning")]
            assert logs[0]["error"]

            with structlog.testing.capture_logs() as logs:
                assert notifier.stopping() is False
            assert logs == []


def test_closed_notifier_is_a_no_op(listener: tuple[socket.socket, str]) -> None:
    sock, address = listener
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "1000000"})
    notifier.close()
    notifier.close()
    assert not notifier.enabled
    assert notifier.ready() is False
    assert notifier.watchdog_interval_s is None
    assert_nothing_queued(sock)


@pytest.mark.asyncio
async def test_run_watchdog_pings_until_cancelled(listener: tuple[socket.socket, str]) -> None:
    sock, address = listener
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    env = {"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "200000"}
    with Notifier.from_environ(env) as notifier:
        assert notifier.watchdog_interval_s == pytest.approx(0.1)
        task = asyncio.create_task(run_watchdog(notifier))
        try:
            for _ in range(3):
                datagram = await asyncio.wait_for(loop.sock_recv(sock, 4096), RECV_TIMEOUT_S)
                assert datagram == b"WATCHDOG=1"
            assert not task.done()
        finally:
            task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert task.cancelled()


@pytest.mark.asyncio
async def test_run_watchdog_returns_at_once_without_watchdog(
    listener: tuple[socket.socket, str],
) -> None:
    sock, address = listener
    with Notifier.from_environ({"NOTIFY_SOCKET": address}) as notifier:
        await asyncio.wait_for(run_watchdog(notifier), RECV_TIMEOUT_S)
    assert_nothing_queued(sock)
