"""The local Unix-socket API: owner-only, one JSON line each way, clear errors."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import socket
import stat
import subprocess
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from helpers.processes import SMARTPOLE
from helpers.waiting import eventually
from smartpole.agent.api import ApiServer, call
from smartpole.agent.api_limits import Chunks
from smartpole.agent.config.api import ApiConfig
from smartpole.agent.core.errors import AgentError, ApiError


def _handlers() -> dict[str, Any]:
    def echo(request: Mapping[str, Any]) -> object:
        return {"got": dict(request)}

    return {"echo": echo}


async def _ask(path: Path, payload: bytes) -> dict[str, Any]:
    reader, writer = await asyncio.open_unix_connection(str(path))
    writer.write(payload)
    await writer.drain()
    line = await reader.readline()
    writer.close()
    await writer.wait_closed()
    return json.loads(line)  # type: ignore[no-any-return]


@pytest.mark.asyncio
async def test_socket_is_owner_only_and_removed_on_exit(tmp_path: Path) -> None:
    path = tmp_path / "run" / "api.sock"
    async with ApiServer(path, _handlers()):
        mode = path.stat().st_mode
        assert stat.S_ISSOCK(mode)
        assert stat.S_IMODE(mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        reply = await _ask(path, b'{"method": "echo", "x": 1}\n')
        # The daemon adds who asked, from the kernel's peer credentials, for the audit.
        actor = f"local:uid={os.getuid()},pid={os.getpid()}"
        assert reply == {"ok": True, "result": {"got": {"method": "echo", "x": 1, "actor": actor}}}
    assert not path.exists()


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("payload", "error"),
    [
        (b"not json\n", "not one line of JSON"),
        (b"[1, 2]\n", '"method" string'),
        (b'{"method": 3}\n', '"method" string'),
        (b'{"method": "reboot"}\n', "unknown method 'reboot' (known: echo)"),
        (b"\xff\xfe\n", "not one line of JSON"),
    ],
)
async def test_bad_requests_get_an_error_answer(tmp_path: Path, payload: bytes, error: str) -> None:
    path = tmp_path / "api.sock"
    async with ApiServer(path, _handlers()):
        reply = await _ask(path, payload)
        assert reply["ok"] is False
        assert error in reply["error"]
        # ...and the server is still there for the next client.
        assert (await _ask(path, b'{"method": "echo"}\n'))["ok"] is True


@pytest.mark.asyncio
async def test_a_second_server_on_the_same_socket_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "api.sock"
    async with ApiServer(path, _handlers()):
        with pytest.raises(AgentError, match="already serving"):
            async with ApiServer(path, _handlers()):
                pass
        assert (await _ask(path, b'{"method": "echo"}\n'))["ok"] is True


@pytest.mark.asyncio
async def test_a_socket_left_by_a_killed_daemon_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "api.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()  # the file stays, nobody listens: what SIGKILL leaves behind
    async with ApiServer(path, _handlers()):
        assert (await _ask(path, b'{"method": "echo"}\n'))["ok"] is True


@pytest.mark.asyncio
async def test_a_regular_file_in_the_way_is_not_deleted(tmp_path: Path) -> None:
    path = tmp_path / "api.sock"
    path.write_text("precious")
    with pytest.raises(AgentError, match="not a socket"):
        async with ApiServer(path, _handlers()):
            pass
    assert path.read_text() == "precious"


def test_client_errors_name_the_socket(tmp_path: Path) -> None:
    missing = tmp_path / "nope.sock"
    with pytest.raises(ApiError, match=r"no daemon socket at .*nope\.sock"):
        call(missing, "status")


def test_diag_without_a_daemon_fails_clearly(tmp_path: Path) -> None:
    result = subprocess.run(
        [*SMARTPOLE, "diag", "status", "--state-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert "is `smartpole run` running?" in result.stderr
    assert "Traceback" not in result.stderr


# ----- the limits: control's loop comes first -----------------------------------------


def _busy_handlers(work_s: float) -> dict[str, Any]:
    """``work`` holds the loop for ``work_s`` like a heavy query; ``echo`` answers at once."""

    def work(request: Mapping[str, Any]) -> object:
        end = time.perf_counter() + work_s
        while time.perf_counter() < end:
            pass
        return request.get("n")

    return {"work": work, **_handlers()}


class _Ticker:
    """A stand-in for the control loop's timers: the longest it had to wait past 5 ms."""

    def __init__(self) -> None:
        self.worst_s = 0.0
        self._last = time.monotonic()
        self._task: asyncio.Task[None] | None = None

    def __enter__(self) -> _Ticker:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *_exc: object) -> None:
        # A tick still waiting for the loop counts too: it would have been this late.
        assert self._task is not None
        self._task.cancel()
        self._note()

    def _note(self) -> None:
        now = time.monotonic()
        self.worst_s = max(self.worst_s, now - self._last - 0.005)
        self._last = now

    async def _run(self) -> None:
        while True:
            self._last = time.monotonic()
            await asyncio.sleep(0.005)
            self._note()


async def _open(path: Path) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_unix_connection(str(path), limit=1 << 22)


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


@pytest.mark.asyncio
async def test_pipelined_requests_take_turns_with_the_rest_of_the_loop(tmp_path: Path) -> None:
    """The finding: 4 ms requests pipelined 100 deep ran back to back for 400 ms."""
    path = tmp_path / "api.sock"
    unlimited = ApiConfig(requests_per_s=1000, burst=1000)
    async with ApiServer(path, _busy_handlers(0.004), unlimited):
        reader, writer = await _open(path)
        try:
            with _Ticker() as ticker:
                writer.write(b"".join(b'{"method": "work", "n": %d}\n' % n for n in range(100)))
                answers = [json.loads(await reader.readline())["result"] for _ in range(100)]
        finally:
            await _close(writer)
    assert answers == list(range(100)), "one at a time, in order"
    assert ticker.worst_s < 0.1, f"the loop was held {ticker.worst_s * 1000:.0f} ms"


@pytest.mark.asyncio
async def test_a_connection_over_its_rate_waits_its_turn(tmp_path: Path) -> None:
    path = tmp_path / "api.sock"
    limits = ApiConfig(requests_per_s=20, burst=2)
    async with ApiServer(path, _handlers(), limits) as server:
        reader, writer = await _open(path)
        try:
            writer.write(b'{"method": "echo"}\n' * 12)
            started = time.monotonic()
            for _ in range(12):
                assert json.loads(await reader.readline())["ok"]
            took = time.monotonic() - started
        finally:
            await _close(writer)
        # Two at once, then ten at 20 a second.
        assert took >= 0.45, f"12 requests in {took:.2f} s"
        assert server.status()["throttled"] >= 9


@pytest.mark.asyncio
async def test_all_connections_together_keep_within_the_apis_share(tmp_path: Path) -> None:
    """Eight clients at their full rate ask 10 ms queries: the API takes a quarter of the loop."""
    path = tmp_path / "api.sock"
    limits = ApiConfig(requests_per_s=1000, burst=1000)
    async with ApiServer(path, _busy_handlers(0.01), limits) as server:
        clients = [await _open(path) for _ in range(8)]
        started = time.monotonic()
        try:
            for _, writer in clients:
                writer.write(b'{"method": "work"}\n' * 10)
            for reader, _ in clients:
                for _ in range(10):
                    assert json.loads(await reader.readline())["ok"]
        finally:
            for _, writer in clients:
                await _close(writer)
        took = time.monotonic() - started
        # 80 x 10 ms of work at a quarter of the loop: about 3.2 s, less the first burst.
        assert took >= 2.5, f"0.8 s of API work took only {took:.2f} s of the loop"
        assert server.status()["budget_waits"] > 0


@pytest.mark.asyncio
async def test_a_long_answer_is_made_and_sent_in_slices(tmp_path: Path) -> None:
    """A big ``points`` answer (5,000 points took ~75 ms at once) is made slice by slice."""

    def items() -> Iterator[object]:
        for n in range(5000):
            end = time.perf_counter() + 0.00004  # 200 ms in all
            while time.perf_counter() < end:
                pass
            yield {"n": n}

    path = tmp_path / "api.sock"
    async with ApiServer(path, {"points": lambda _r: Chunks(items())}) as server:
        with _Ticker() as ticker:
            reply = await _ask(path, b'{"method": "points"}\n')
        assert reply == {"ok": True, "result": [{"n": n} for n in range(5000)]}
        assert ticker.worst_s < 0.1, f"the loop was held {ticker.worst_s * 1000:.0f} ms"
        assert server.status()["max_hold_s"] < 0.1


@pytest.mark.asyncio
async def test_connections_over_the_cap_are_told_busy_and_the_episode_logged_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("smartpole.agent.api.OVERLOAD_QUIET_S", 0.3)
    path = tmp_path / "api.sock"
    with capture_logs() as logs:
        async with ApiServer(path, _handlers(), ApiConfig(max_connections=2)) as server:
            held = [await _open(path) for _ in range(2)]
            await eventually(lambda: server.status()["connections"] == 2, 5, "two admitted")
            for _ in range(5):
                reply = await _ask(path, b'{"method": "echo"}\n')
                assert reply["ok"] is False
                assert reply["busy"] is True
                assert "busy" in reply["error"]
            with pytest.raises(ApiError, match="busy"):
                await asyncio.to_thread(call, path, "echo")
            assert server.problems() == [
                "local API overloaded: 6 connections refused busy (at most 2)"
            ]
            for _, writer in held:
                await _close(writer)
            await eventually(lambda: not server.problems(), 5, "the overload to end")
            assert (await _ask(path, b'{"method": "echo"}\n'))["ok"] is True
            assert server.status()["refused_busy"] == 6
    events = [e for e in logs if e["event"].startswith("api_overloaded")]
    assert [e["event"] for e in events] == ["api_overloaded", "api_overloaded_ended"]
    assert events[1]["count"] == 6


@pytest.mark.asyncio
async def test_an_idle_connection_is_closed(tmp_path: Path) -> None:
    path = tmp_path / "api.sock"
    async with ApiServer(path, _handlers(), ApiConfig(idle_timeout_s=0.2)) as server:
        reader, writer = await _open(path)
        try:
            async with asyncio.timeout(5):
                assert await reader.read() == b"", "closed by the server"
        finally:
            await _close(writer)
        assert server.status()["closed_idle"] == 1


@pytest.mark.asyncio
async def test_a_request_over_the_size_limit_is_answered_and_the_connection_closed(
    tmp_path: Path,
) -> None:
    path = tmp_path / "api.sock"
    big = json.dumps({"method": "echo", "pad": "x" * 2000}).encode() + b"\n"
    async with ApiServer(path, _handlers(), ApiConfig(max_request_bytes=1024)) as server:
        reader, writer = await _open(path)
        try:
            writer.write(big)
            reply = json.loads(await reader.readline())
            async with asyncio.timeout(5):
                assert await reader.read() == b""
        finally:
            await _close(writer)
        assert reply == {"ok": False, "error": "request longer than 1024 bytes"}
        assert server.status()["oversized"] == 1
        assert (await _ask(path, b'{"method": "echo"}\n'))["ok"] is True


@pytest.mark.asyncio
async def test_out_of_descriptors_the_accept_backs_off_and_says_so_once(tmp_path: Path) -> None:
    path = tmp_path / "api.sock"
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with capture_logs() as logs:
        async with ApiServer(path, _handlers()) as server:
            waiting = []
            for _ in range(3):  # queued in the backlog, not yet accepted
                client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                client.connect(str(path))
                client.sendall(b'{"method": "echo"}\n')
                waiting.append(client)
            filler = []
            resource.setrlimit(resource.RLIMIT_NOFILE, (max(_open_fds()) + 1, hard))
            try:
                with contextlib.suppress(OSError):  # take every descriptor left
                    while True:
                        filler.append(os.open(os.devnull, os.O_RDONLY))
                await eventually(lambda: server.status()["accept_errors"] >= 1, 5, "EMFILE")
                await asyncio.sleep(1.0)  # a second of it: a spinning accept fails thousands
                failures = server.status()["accept_errors"]
                assert server.problems() == [
                    f"local API cannot accept connections ({failures} failures)"
                ]
            finally:
                for fd in filler:
                    os.close(fd)
                resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
            loop = asyncio.get_running_loop()
            for client in waiting:
                with client:
                    client.setblocking(False)
                    async with asyncio.timeout(5):
                        answer = await loop.sock_recv(client, 65536)
                    assert json.loads(answer)["ok"] is True
            assert not server.problems()
    assert 2 <= failures <= 8, f"{failures} failed accepts in a second"
    events = [e["event"] for e in logs if e["event"].startswith("api_accept_failing")]
    assert events == ["api_accept_failing", "api_accept_failing_ended"]


def _open_fds() -> list[int]:
    return [int(fd) for fd in os.listdir("/proc/self/fd")]
