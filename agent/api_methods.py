"""The local API's JSON methods, each mapped once onto ``PoleOperations``.

A request is ``{"method": name, ...arguments}`` (``smartpole diag`` sends them); the API
server adds ``actor`` from the socket peer's credentials. Arguments are checked here, once,
with a message that names the argument, so the operations see only typed values.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from smartpole.agent.api import Handler
from smartpole.agent.api_limits import Chunks
from smartpole.agent.core.errors import RequestError
from smartpole.agent.operations import PoleOperations

Request = Mapping[str, Any]


def handlers(ops: PoleOperations) -> dict[str, Handler]:
    """Method name -> handler, for ``ApiServer``."""
    return {
        # queries
        "status": lambda _r: ops.status(),
        "points": lambda _r: Chunks(ops.iter_points()),
        "point": lambda r: ops.point(_text(r, "device"), _text(r, "point")),
        "plan": lambda _r: ops.plan(),
        "audit": lambda r: ops.audit(_int(r, "count", default=20)),
        "lights": lambda _r: ops.lights(),
        "alarms": lambda _r: ops.alarms(),
        "lamp_accounts": lambda _r: ops.lamp_accounts(),
        "power": lambda _r: ops.power(),
        "mcu": lambda _r: ops.mcu(),
        "cameras": lambda _r: ops.cameras(),
        "uplink": lambda _r: ops.uplink(),
        "api": lambda _r: ops.api_status(),
        # commands
        "read": lambda r: ops.read(_text(r, "device"), _text(r, "point")),
        "write": lambda r: ops.write(
            _text(r, "device"), _text(r, "point"), _present(r, "value"), _actor(r)
        ),
        "ptz": lambda r: ops.ptz(_text(r, "device"), _int(r, "preset"), _actor(r)),
        "override": lambda r: _override(ops, r),
        "reset": lambda r: ops.reset_alarm(_text(r, "alarm"), _actor(r)),
        "power_cycle": lambda r: ops.power_cycle(_text(r, "device"), _actor(r)),
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
