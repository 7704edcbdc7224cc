"""The local API: a Unix socket that diagnostics tools use to ask the running daemon.

One JSON object per line each way. The socket is born owner-only (0600); where a
technician group exists it is opened to every local user (0666), because who may call
what is decided by the daemon from each peer's kernel credentials (``api_roles``):
read-only methods for the diag group, everything for root, the daemon's user and the
admin group, nothing for anyone else. Nothing here listens on the network.

It runs on the control loop, so control's deadlines come first: what a client may cost
is bounded per request, per connection and in total (``api_limits``; the ``api:`` section
of the pole config), and a client beyond the limits waits or is told ``busy``.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import json
import os
import socket
import stat
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import structlog

from smartpole.agent.api_limits import (
    OVERLOAD_QUIET_S,
    ApiStats,
    Chunks,
    Episode,
    Lingering,
    TokenBucket,
    WorkBudget,
)
from smartpole.agent.api_roles import (
    Access,
    Handler,
    Method,
    Peer,
    Refusals,
    Role,
    allows,
    method_of,
    open_to_technicians,
    peer_of,
)
from smartpole.agent.config.api import ApiConfig
from smartpole.agent.core.errors import AgentError, ApiError
from smartpole.drivers.errors import DriverError
from smartpole.drivers.lifecycle import Lifecycle

log = structlog.get_logger("smartpole.api")

SOCKET_NAME = "api.sock"
__all__ = ["ApiServer", "Handler", "call"]

#: Connections waiting to be accepted; a flood beyond it waits in the kernel, not here.
BACKLOG = 128
#: The first pause after a failed accept (e.g. EMFILE); it doubles up to the second one.
ACCEPT_BACKOFF_S = (0.05, 1.0)


def _line(reply: Mapping[str, object]) -> bytes:
    return json.dumps(reply, ensure_ascii=False).encode() + b"\n"


class ApiServer(Lifecycle):
    """Serves ``{"method": name, ...}`` requests with the given handlers while entered.

    Control comes first (see ``api_limits``): one request at a time per connection, read
    only when its answer is written, at most ``requests_per_s`` of them, and all
    connections together within the API's share of the loop. A connection beyond
    ``max_connections`` is answered ``busy`` and closed at once; one that sends nothing
    complete for ``idle_timeout_s``, or does not read its answers, is closed.

    Only a socket this server created is removed on close: a start refused because another
    daemon serves the path, or because something else is in the way, leaves it alone.
    """

    def __init__(
        self,
        path: Path,
        handlers: Mapping[str, Handler | Method],
        limits: ApiConfig | None = None,
        access: Access | None = None,
    ) -> None:
        super().__init__()
        self.path = path
        self._methods = {name: method_of(entry) for name, entry in handlers.items()}
        self.limits = limits if limits is not None else ApiConfig()
        self.access = access if access is not None else Access(self.limits)
        self.refusals = Refusals()
        self._sock: socket.socket | None = None
        self._conns: set[socket.socket] = set()  # admitted, not yet closed
        self._unserved: set[socket.socket] = set()  # admitted, its task not yet started
        self._refused = Lingering()
        self._budget = WorkBudget()
        self.stats = ApiStats()
        self._overload = Episode(
            "api_overloaded", OVERLOAD_QUIET_S, max_connections=self.limits.max_connections
        )
        self._accept_failing = Episode("api_accept_failing", None)

    def status(self) -> dict[str, object]:
        """Limits and counters, for ``diag api``."""
        return {
            "limits": self.limits.model_dump(),
            "overloaded": self._overload.active,
            "accept_failing": self._accept_failing.active,
            **self.stats.to_json(),
            **self.refusals.to_json(),
        }

    def problems(self) -> list[str]:
        """What ``diag status`` should tell about the API while it lasts."""
        problems = []
        if self._overload.active:
            problems.append(
                f"local API overloaded: {self._overload.count} connections refused busy"
                f" (at most {self.limits.max_connections})"
            )
        if self._accept_failing.active:
            problems.append(
                f"local API cannot accept connections ({self._accept_failing.count} failures)"
            )
        return problems

    async def _start(self) -> None:
        await self._prepare_path()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)  # the socket is born 0600; no window where others can connect
        try:
            sock.bind(str(self.path))
            sock.listen(BACKLOG)
            sock.setblocking(False)
        except OSError as exc:  # e.g. a path longer than the 107 bytes a socket name may have
            sock.close()
            raise AgentError(f"cannot open the API socket {self.path}: {exc}") from exc
        finally:
            os.umask(old_umask)
        self._sock = sock
        open_to_technicians(self.path, self.access)
        self.spawn(self._accept_loop(sock), name="api:accept")
        log.info("api_listening", socket=str(self.path), **self.limits.model_dump())

    def _release(self) -> None:
        self._overload.cancel()
        self._refused.close()
        sock, self._sock = self._sock, None
        for conn in self._unserved:  # the others are closed by their cancelled tasks
            conn.close()
        self._unserved.clear()
        if sock is None:
            return
        sock.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

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

    # ----- connections -----

    async def _accept_loop(self, sock: socket.socket) -> None:
        """Accept one connection per loop turn; out of descriptors, wait and retry, and
        say so once (asyncio's own server would log it every second, forever)."""
        loop = asyncio.get_running_loop()
        pause = ACCEPT_BACKOFF_S[0]
        while True:
            try:
                conn, _ = await loop.sock_accept(sock)
            except OSError as exc:  # EMFILE, ENFILE, ENOBUFS, ENOMEM: nothing to do but wait
                self.stats.accept_errors += 1
                self._accept_failing.hit(error=str(exc), retry_s=pause)
                await asyncio.sleep(pause)
                pause = min(pause * 2, ACCEPT_BACKOFF_S[1])
                continue
            pause = ACCEPT_BACKOFF_S[0]
            self._accept_failing.clear()
            peer = peer_of(conn)
            role = self.access.role(peer)
            if role is None:
                # The socket is open to every local user (technicians' groups reach it): one
                # with no role at all is answered and closed at once, so outsiders cannot
                # hold the connections technicians need.
                self._refuse(conn, self.refusals.refuse(self.access, peer, "any call", Role.READ))
                continue
            if len(self._conns) >= self.limits.max_connections:
                self.stats.refused_busy += 1
                self._overload.hit()
                self._refuse(conn, _busy(self.limits.max_connections))
                continue
            self._conns.add(conn)
            self._unserved.add(conn)
            self.stats.accepted += 1
            self.stats.connections = len(self._conns)
            self.spawn(self._serve(conn, peer, role), name=f"api:conn:{conn.fileno()}")

    def _refuse(self, conn: socket.socket, answer: Mapping[str, object]) -> None:
        """Answer without a task or a buffer: refusing must cost less than serving, or a
        flood of refusals would be the overload."""
        try:
            conn.setblocking(False)
            conn.send(_line(answer))
            conn.shutdown(socket.SHUT_WR)
        except OSError:
            conn.close()  # it has gone already; it was refused all the same
            return
        self._refused.add(conn)

    async def _serve(self, conn: socket.socket, peer: Peer | None, role: Role) -> None:
        self._unserved.discard(conn)
        writer: asyncio.StreamWriter | None = None
        try:
            reader, writer = await asyncio.open_unix_connection(
                sock=conn, limit=self.limits.max_request_bytes
            )
            bucket = TokenBucket(self.limits.requests_per_s, self.limits.burst)
            while line := await self._next_request(reader, writer):
                await self._wait_turn(bucket)
                reply, held = await self._answer(line, peer, role)
                result = reply.get("result")
                if isinstance(result, Chunks):
                    sent = await self._send_chunks(writer, result, held)
                else:
                    started = time.perf_counter()
                    writer.write(_encoded(reply))
                    self._charge(held + time.perf_counter() - started)
                    sent = await self._drained(writer)
                if not sent:
                    break
        except ConnectionError as exc:
            log.debug("api_client_dropped", error=str(exc))
        finally:
            self._conns.discard(conn)
            self.stats.connections = len(self._conns)
            if writer is not None:
                writer.close()
            else:
                conn.close()

    async def _send_chunks(self, writer: asyncio.StreamWriter, chunks: Chunks, held: float) -> bool:
        """A long answer slice by slice, the loop free in between: the items are made and
        encoded one slice at a time, so no client's answer holds the loop for long."""
        items = iter(chunks)
        writer.write(b'{"ok": true, "result": [')
        separator = b""
        while True:
            started = time.perf_counter()
            try:
                piece = list(itertools.islice(items, chunks.size))
                data = b", ".join(json.dumps(item, ensure_ascii=False).encode() for item in piece)
            except Exception:  # a bug half-way: the answer cannot be finished, end it
                log.exception("api_handler_failed", answer="chunked")
                return False
            self._charge(held + time.perf_counter() - started)
            held = 0.0
            if not piece:
                break
            writer.write(separator + data)
            separator = b", "
            if not await self._drained(writer):
                return False
            await self._wait_budget()
        writer.write(b"]}\n")
        return await self._drained(writer)

    def _charge(self, held: float) -> None:
        self._budget.charge(held)
        self.stats.max_hold_s = max(self.stats.max_hold_s, held)

    async def _drained(self, writer: asyncio.StreamWriter) -> bool:
        """Wait until the client has taken the answer; False (close it) if it does not
        read within the idle timeout: its unread answers would pile up in our memory."""
        try:
            async with asyncio.timeout(self.limits.idle_timeout_s):
                await writer.drain()
        except TimeoutError:
            self.stats.closed_slow_reader += 1
            return False
        return True

    async def _next_request(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bytes | None:
        """The next request line, or None when the connection should end."""
        try:
            async with asyncio.timeout(self.limits.idle_timeout_s):
                line = await reader.readline()
        except TimeoutError:
            self.stats.closed_idle += 1
            return None
        except ValueError:  # longer than the limit: the rest of the line cannot be trusted
            self.stats.oversized += 1
            limit = self.limits.max_request_bytes
            writer.write(_line({"ok": False, "error": f"request longer than {limit} bytes"}))
            return None
        return line or None

    async def _wait_turn(self, bucket: TokenBucket) -> None:
        """Before every request: the connection's rate, then the API's share of the loop.
        Pipelined requests are served one at a time, never back to back."""
        wait = bucket.delay()
        if wait > 0:
            self.stats.throttled += 1
            await asyncio.sleep(wait)
        await self._wait_budget()

    async def _wait_budget(self) -> None:
        """Yield the loop at least once; longer while the API is over its share."""
        await asyncio.sleep(0)
        while (wait := self._budget.delay()) > 0:
            self.stats.budget_waits += 1
            await asyncio.sleep(wait)

    async def _answer(
        self, line: bytes, peer: Peer | None, role: Role | None
    ) -> tuple[dict[str, object], float]:
        """The reply, and how long the handler held the loop before its first await: what
        the work budget is charged (waiting for a device costs the loop nothing)."""
        self.stats.requests += 1
        started = time.perf_counter()
        try:
            request = json.loads(line)
        except (UnicodeDecodeError, json.JSONDecodeError):
            return {"ok": False, "error": "request is not one line of JSON"}, 0.0
        if not isinstance(request, dict) or not isinstance(request.get("method"), str):
            return {"ok": False, "error": 'request must be an object with a "method" string'}, 0.0
        method = self._methods.get(request["method"])
        if method is None:
            known = ", ".join(sorted(self._methods))
            error = f"unknown method {request['method']!r} (known: {known})"
            return {"ok": False, "error": error}, 0.0
        if not allows(role, method.role):
            return self.refusals.refuse(self.access, peer, request["method"], method.role), 0.0
        held = 0.0
        actor = "local:unknown" if peer is None else peer.actor
        try:
            result = method.handler({**request, "actor": actor})
            held = time.perf_counter() - started
            if inspect.isawaitable(result):
                result = await result
        except (AgentError, DriverError) as exc:
            return {"ok": False, "error": str(exc)}, held
        except Exception as exc:  # a bug in one handler must not kill the API
            log.exception("api_handler_failed", method=request["method"])
            return {"ok": False, "error": f"internal error in {request['method']}: {exc}"}, held
        return {"ok": True, "result": result}, held


def _encoded(reply: Mapping[str, object]) -> bytes:
    try:
        return _line(reply)
    except (TypeError, ValueError) as exc:  # a handler returned what JSON cannot hold
        log.exception("api_answer_unencodable")
        return _line({"ok": False, "error": f"internal error: unencodable answer: {exc}"})


def _busy(max_connections: int) -> dict[str, object]:
    return {
        "ok": False,
        "busy": True,
        "error": f"busy: the daemon serves {max_connections} API connections already; "
        "try again shortly",
    }


def call(path: Path, method: str, timeout_s: float = 5.0, **params: object) -> Any:
    """Blocking client for the CLI: one request, one answer."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout_s)
            sock.connect(str(path))
            # A daemon at its connection limit answers "busy" and closes at once: read that
            # answer even if the close came before the request was sent.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
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
        raise ApiError(
            f"no permission to open {path}: run as root or the service user; on a pole the "
            "socket is open to members of smartpole-diag or smartpole-admin (if the folder "
            "lets them through)"
        ) from exc
    except ConnectionRefusedError as exc:
        raise ApiError(f"nothing listens on {path}: the daemon is not running") from exc
    except TimeoutError as exc:
        raise ApiError(f"the daemon did not answer on {path} within {timeout_s} s") from exc
    except OSError as exc:
        raise ApiError(f"cannot talk to the daemon on {path}: {exc}") from exc
    if not data:
        raise ApiError(f"the daemon on {path} closed the connection without an answer")
    try:
        reply = json.loads(data)
    except json.JSONDecodeError as exc:
        raise ApiError(f"the daemon sent an unreadable answer on {path}") from exc
    if not reply.get("ok"):
        raise ApiError(str(reply.get("error", "the daemon reported an error")))
    return reply["result"]
