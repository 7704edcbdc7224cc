"""The shape of a platform command (its config section, ``uplink.commands``, is in
``config/commands.py``).

A command arrives from the network, so everything about it is checked before anything is
done: exact types (``strict``: ``"50"`` is not a level, ``true`` is not a preset), no unknown
keys (a misspelt argument must not be silently ignored and a default used instead), bounded
strings (ids and actors go to logs, audit and the state file). The argument models check
only what is true of every pole; the profile's own limits (read-only points, write_min /
write_max) are checked by the bus task that owns the device.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from smartpole.agent.config.command_limits import ACTOR_PATTERN, ID_PATTERN, SIGNATURE_PATTERN
from smartpole.agent.config.commands import COMMANDS

# Printable ASCII without spaces: safe in logs, file names of nothing, JSON keys, topics.
CommandId = Annotated[str, Field(pattern=ID_PATTERN)]
Actor = Annotated[str, Field(pattern=ACTOR_PATTERN)]
Ident = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")]
Level = Annotated[int, Field(ge=0, le=100)]
MAX_OVERRIDE_S = 7 * 86400.0  # what LightingController.set_override accepts


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class SetLevelArgs(_Strict):
    """A lamp's level. On a lamp the lighting controller manages it is an override that
    holds ``duration_s`` (an hour when not given); elsewhere (an MCU's own level, a lamp
    without a lease) ``point`` is written."""

    lamp: Ident
    level: Level
    point: Ident = "dim_level"  # an MCU lamp channel calls it "level"
    duration_s: float | None = Field(None, gt=0, le=MAX_OVERRIDE_S, allow_inf_nan=False)


class OverrideArgs(_Strict):
    lamp: Ident
    level: Level
    duration_s: float = Field(gt=0, le=MAX_OVERRIDE_S, allow_inf_nan=False)


class LampArgs(_Strict):
    lamp: Ident


class RelayArgs(_Strict):
    device: Ident
    point: Ident
    on: bool


class DeviceArgs(_Strict):
    device: Ident


class PtzArgs(_Strict):
    device: Ident
    preset: int = Field(ge=1, le=255)


class AlarmArgs(_Strict):
    alarm_id: Annotated[str, Field(pattern=r"^[!-~]{1,128}$")]


class NoArgs(_Strict):
    pass


ARGS: dict[str, type[_Strict]] = {
    "set_level": SetLevelArgs,
    "override": OverrideArgs,
    "clear_override": LampArgs,
    "relay": RelayArgs,
    "power_cycle": DeviceArgs,
    "ptz_preset": PtzArgs,
    "ack_alarm": AlarmArgs,
    "report_now": NoArgs,
}


class Envelope(_Strict):
    id: CommandId
    issued_at: float = Field(allow_inf_nan=False)
    actor: Actor
    command: str
    args: dict[str, Any] = Field(default_factory=dict)
    signature: Annotated[str, Field(pattern=SIGNATURE_PATTERN)] | None = None


class CommandError(Exception):
    """Bad input; ``reason`` is the counter key and the machine-readable result code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """Two ``"command"`` keys would mean one thing to us and maybe another to the signer."""
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise ValueError(f"duplicate key {key!r}")
        seen[key] = value
    return seen


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def parse_json(payload: bytes) -> dict[str, Any]:
    try:
        data = json.loads(
            payload.decode("utf-8"),
            object_pairs_hook=_no_duplicate_keys,
            parse_constant=_no_constant,
        )
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise CommandError("bad_json", f"payload is not UTF-8 JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise CommandError("bad_json", "payload must be a JSON object")
    return data


def _describe(exc: ValidationError, prefix: str) -> str:
    parts = []
    for error in exc.errors()[:5]:
        where = ".".join(str(part) for part in (prefix, *error["loc"]) if part != "")
        parts.append(f"{where or '(top level)'}: {error['msg']}")
    more = exc.error_count() - len(parts)
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def parse_envelope(data: dict[str, Any]) -> Envelope:
    try:
        envelope = Envelope.model_validate(data)
    except ValidationError as exc:
        raise CommandError("bad_schema", _describe(exc, "")) from exc
    if envelope.command not in ARGS:
        known = ", ".join(COMMANDS)
        raise CommandError(
            "unknown_command", f"unknown command {envelope.command!r} (known: {known})"
        )
    return envelope


def parse_args(command: str, args: dict[str, Any]) -> BaseModel:
    try:
        return ARGS[command].model_validate(args)
    except ValidationError as exc:
        raise CommandError("bad_args", f"{command}: {_describe(exc, 'args')}") from exc


def canonical_json(data: dict[str, Any]) -> bytes:
    """What the signature covers: the payload without ``signature``, keys sorted, compact
    separators, UTF-8 without escaping non-ASCII (as RFC 8785 writes strings)."""
    body = {key: value for key, value in data.items() if key != "signature"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
