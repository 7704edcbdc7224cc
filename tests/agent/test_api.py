"""The local Unix-socket API: owner-only, one JSON line each way, clear errors."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from helpers.processes import SMARTPOLE
from smartpole.agent.api import ApiServer, call
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
