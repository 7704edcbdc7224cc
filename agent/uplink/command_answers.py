"""What every platform command is answered, and how its id and target are read from it.

Shared by the processor (``commands.py``) and kept apart from it: the answer's shape is
the contract with the platform (``schemas/uplink/command-result.schema.json``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

from smartpole.agent.config.command_limits import valid_id

# Every reason (the counter key, also "reason" in the answer) and the status it gives.
STATUS_OF: dict[str, str] = {
    "ok": "ok",
    "duplicate": "duplicate",
    **dict.fromkeys(
        ["too_large", "bad_json", "bad_schema", "unknown_command", "bad_args",
         "missing_signature", "bad_signature", "key_unavailable", "not_allowed",
         "stale", "future", "replay_cache_full", "refused"],
        "rejected",
    ),
    **dict.fromkeys(["device_error", "failed", "internal_error"], "failed"),
}  # fmt: skip


def answer(
    command_id: str | None,
    reason: str,
    error: str | None = None,
    result: object = None,
    *,
    command: str | None = None,
) -> dict[str, object]:
    """The answer published for every command: ``status`` for people and dashboards,
    ``reason`` for code, ``error`` saying what was wrong."""
    return {
        "id": command_id,
        "command": command,
        "status": STATUS_OF[reason],
        "reason": reason,
        "error": error,
        "result": result,
    }


def jsonable(value: object) -> object:
    """Results are published and persisted: anything not plain JSON becomes its text."""
    try:
        return json.loads(json.dumps(value, default=str, allow_nan=False))
    except (ValueError, RecursionError):
        return str(value)


def id_of(data: Mapping[str, Any]) -> str | None:
    """The id to echo in a rejection, when it is one the schema allows (never echo arbitrary
    data, nor an id with a space the result schema would refuse)."""
    value = data.get("id")
    return value if valid_id(value) else None


def target(command: str, args: BaseModel) -> str:
    values = args.model_dump()
    if "point" in values:
        return f"{values.get('lamp') or values.get('device')}.{values['point']}"
    return str(values.get("lamp") or values.get("device") or values.get("alarm_id") or "pole")
