"""The local API's JSON methods, each mapped once onto ``PoleOperations``.

A request is ``{"method": name, ...arguments}`` (``smartpole diag`` sends them); the API
server adds ``actor`` from the socket peer's credentials. Arguments are checked here, once,
with a message that names the argument, so the operations see only typed values.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from smartpole.agent.api_limits import Chunks
from smartpole.agent.api_roles import Method, act, read
from smartpole.agent.core.errors import RequestError
from smartpole.agent.operations import PoleOperations

Request = Mapping[str, Any]


def handlers(ops: PoleOperations) -> dict[str, Method]:
    """Method name -> its role and handler, for ``ApiServer``. Each method says here, and
    only here, whether it only reads (``read``: the diag group may call it) or acts
    (``act``: root, the daemon's user, the admin group); a test checks every one does."""
    return {
        # queries: nothing on the pole changes
        "status": read(lambda _r: ops.status()),
        "points": read(lambda _r: Chunks(ops.iter_points())),
        "point": read(lambda r: ops.point(_text(r, "device"), _text(r, "point"))),
        "plan": read(lambda _r: ops.plan()),
        "audit": read(lambda r: ops.audit(_int(r, "count", default=20))),
        "lights": read(lambda _r: ops.lights()),
        "alarms": read(lambda _r: ops.alarms()),
        "lamp_accounts": read(lambda _r: ops.lamp_accounts()),
        "power": read(lambda _r: ops.power()),
        "mcu": read(lambda _r: ops.mcu()),
        "cameras": read(lambda _r: ops.cameras()),
        "uplink": read(lambda _r: ops.uplink()),
        "api": read(lambda _r: ops.api_status()),
        # a live read: one more request on the bus, no output changes
        "read": read(lambda r: ops.read(_text(r, "device"), _text(r, "point"))),
        # commands: they change outputs or state, and are audited
        "write": act(
            lambda r: ops.write(
                _text(r, "device"), _text(r, "point"), _present(r, "value"), _actor(r)
            )
        ),
        "ptz": act(lambda r: ops.ptz(_text(r, "device"), _int(r, "preset"), _actor(r))),
        "override": act(lambda r: _override(ops, r)),
        "reset": act(lambda r: ops.reset_alarm(_text(r, "alarm"), _actor(r))),
        "power_cycle": act(lambda r: ops.power_cycle(_text(r, "device"), _actor(r))),
    }


def _override(ops: PoleOperations, request: Request) -> object:
    """``{lamp, level, duration_s}`` sets an override, ``{lamp, clear: true}`` ends it."""
    lamp = _text(request, "lamp")
    if request.get("clear"):
        return ops.clear_override(lamp, _actor(request))
    level = _int(request, "level")
    duration_s = _number(request, "duration_s")
    return ops.override(lamp, level, duration_s, _actor(request))


def _actor(request: Request) -> str:
    return str(request.get("actor", "local:unknown"))


def _present(request: Request, key: str) -> object:
    if key not in request:
        raise RequestError(f"{request.get('method')} needs {key!r}")
    return request[key]


def _text(request: Request, key: str) -> str:
    value = _present(request, key)
    if not isinstance(value, str) or not value:
        raise RequestError(f"{request.get('method')}: {key!r} must be a name, got {value!r}")
    return value


def _int(request: Request, key: str, *, default: int | None = None) -> int:
    if default is not None and key not in request:
        return default
    value = _present(request, key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestError(f"{request.get('method')}: {key!r} must be an integer, got {value!r}")
    return value


def _number(request: Request, key: str) -> float:
    value = _present(request, key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RequestError(f"{request.get('method')}: {key!r} must be a number, got {value!r}")
    return float(value)
