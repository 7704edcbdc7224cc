"""The local API: a Unix socket that diagnostics tools use to ask the running daemon.

One JSON object per line each way. The socket is created owner-only (0600) inside an
owner-only directory: it shows the pole's state and will accept commands, so only the
service user (and root) may talk to it. Nothing here listens on the network.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import os
import socket
import stat
import struct
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import structlog

from smartpole.agent.core.errors import AgentError, ApiError
from smartpole.drivers.errors import DriverError
from smartpole.drivers.lifecycle import Lifecycle

log = structlog.get_logger("smartpole.api")

SOCKET_NAME = "api.sock"
MAX_REQUEST_BYTES = 64 * 1024
Handler = Callable[[Mapping[str, Any]], object]  # may return an awaitable


class ApiServer(Lifecycle):
    """Serves ``{"method": name, ...}`` requests with the given handlers while entered.

    Only a socket this server created is removed on close: a start refused because another
    daemon serves the path, or because something else is in the way, leaves it alone.
    """

    def __init__(self, path: Path, handlers: Mapping[str, Handler]) -> None:
        super().__init__()
        self.path = path
        self._handlers = handlers
        self._server: asyncio.Server | None = None
        self._closing: asyncio.Server | None = None  # closed, its connections winding down
        self.requests = 0

    async def _start(self) -> None:
        await self._prepare_path()
        old_umask = os.umask(0o177)  # the socket is born 0600; no window where others can connect
        try:
            self._server = await asyncio.start_unix_server(
                self._serve, path=str(self.path), limit=MAX_REQUEST_BYTES
            )
        except OSError as exc:  # e.g. a path longer than the 107 bytes a socket name may have
            raise AgentError(f"cannot open the API socket {self.path}: {exc}") from exc
        finally:
            os.umask(old_umask)
        log.info("api_listening", socket=str(self.path))

    def _release(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        self._closing = server
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _stopped(self) -> None:
        server, self._closing = self._closing, None
        if server is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await server.wait_closed()

    async def _prepare_path(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise AgentError(f"cannot create {self.path.parent}: {exc}") from exc
        if not self.path.exists():
            return
        if not stat.S_ISSOCK(self.path.stat().st_mode):
            raise AgentError(f"{self.path} exists and is not a socket; refusing to replace it")
        try:
            _, writer = await asyncio.open_unix_connection(str(self.path))
        except (ConnectionRefusedError, FileNotFoundError):
            self.path.unlink()  # left behind by a daemon that was killed
            return
        writer.close()
        raise AgentError(f"another smartpole daemon is already serving {self.path}")

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            peer = _peer_of(writer)
            while line := await reader.readline():
                self.requests += 1
                reply = await self._answer(line, peer)
                writer.write(json.dumps(reply, ensure_ascii=False).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, asyncio.LimitOverrunError, ValueError) as exc:
            log.debug("api_client_dropped", error=str(exc))
        finally:
            writer.close()

    async def _answer(self, line: bytes, peer: str) -> dict[str, object]:
        try:
            request = json.loads(line)
        except (UnicodeDecodeError, json.JSONDecodeError):
            return {"ok": False, "error": "request is not one line of JSON"}
        if not isinstance(request, dict) or not isinstance(request.get("method"), str):
            return {"ok": False, "error": 'request must be an object with a "method" string'}
        handler = self._handlers.get(request["method"])
        if handler is None:
            known = ", ".join(sorted(self._handlers))
            return {"ok": False, "error": f"unknown method {request['method']!r} (known: {known})"}
        try:
            result = handler({**request, "actor": peer})
            if inspect.isawaitable(result):
                result = await result
        except (AgentError, DriverError) as exc:
            return {"ok": False, "error": str(exc)}
        except Exception as exc:  # a bug in one handler must not kill the API
            log.exception("api_handler_failed", method=request["method"])
            return {"ok": False, "error": f"internal error in {request['method']}: {exc}"}
        return {"ok": True, "result": result}


def _peer_of(writer: asyncio.StreamWriter) -> str:
    """Who is asking, from the kernel's credentials of the socket peer (for the audit)."""
    sock = writer.get_extra_info("socket")
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except (OSError, AttributeError):
        return "local:unknown"
    pid, uid, _gid = struct.unpack("3i", creds)
    return f"local:uid={uid},pid={pid}"


def call(path: Path, method: str, timeout_s: float = 5.0, **params: object) -> Any:
    """Blocking client for the CLI: one request, one answer."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout_s)
            sock.connect(str(path))
            sock.sendall(json.dumps({"method": method, **params}).encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
    except FileNotFoundError as exc:
        raise ApiError(f"no daemon socket at {path}: is `smartpole run` running?") from exc
    except PermissionError as exc:
        raise ApiError(f"no permission to open {path}: run as the service user or root") from exc
    except ConnectionRefusedError as exc:
        raise ApiError(f"nothing listens on {path}: the daemon is not running") from exc
    except TimeoutError as exc:
        raise ApiError(f"the daemon did not answer on {path} within {timeout_s} s") from exc
    except OSError as exc:
        raise ApiError(f"cannot talk to the daemon on {path}: {exc}") from exc
    try:
        reply = json.loads(data)
    except json.JSONDecodeError as exc:
        raise ApiError(f"the daemon sent an unreadable answer on {path}") from exc
    if not reply.get("ok"):
        raise ApiError(str(reply.get("error", "the daemon reported an error")))
    return reply["result"]
