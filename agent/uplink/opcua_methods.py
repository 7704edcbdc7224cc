"""The command methods of the OPC UA server (``Objects/<pole>/Commands``).

Each method awaits ``command(name, args, actor=<OPC UA user>, source="opcua",
command_id="opcua-<n>")``, which is the command processor's ``submit`` (the same schema,
allow-list, dedupe and audit as MQTT, audited as ``opcua:<user>``, but no signature: the
secure session authenticated the user), and returns the result's ``status``, ``error`` (""
when none) and the call's command id as the method's three outputs. The answer also goes
to ``report`` (the ``cmd/result`` stream, ``opcua_calls``) when the command ends, so the
platform sees OPC UA commands as it sees its own. Only a user logged in from the users file
may call (the permission rules refuse anonymous calls before they get here; this is checked
again). Integer arguments accept any integer variant type, and Double ones integers too,
because clients differ in what they send for a Python int.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import structlog
from asyncua import ua
from asyncua.common.node import Node
from asyncua.crypto.permission_rules import UserRole
from asyncua.ua.status_codes import StatusCodes

from smartpole.agent.uplink.command_answers import STATUS_OF, answer
from smartpole.agent.uplink.opcua_auth import current_user
from smartpole.agent.uplink.opcua_calls import CallIds, Report
from smartpole.agent.uplink.opcua_space import nid, status

log = structlog.get_logger("smartpole.uplink.opcua")

SOURCE = "opcua"


class CommandCallback(Protocol):
    """``CommandProcessor.submit``, or anything answering like it."""

    def __call__(
        self, command: str, args: dict[str, object], *, actor: str, source: str, command_id: str
    ) -> Awaitable[Mapping[str, Any]]: ...


@dataclass(frozen=True)
class Outcome:
    status: str  # ok, rejected, failed, duplicate, pending
    error: str  # "" when none
    reason: str = ""  # the processor's reason (not_allowed, bad_args...), when it gave one
    id: str = ""  # the command id of the call (opcua-<n>), as on cmd/result


_V = ua.VariantType
_Spec = list[tuple[str, ua.VariantType, str]]

_INT_TYPES = {_V.SByte, _V.Byte, _V.Int16, _V.UInt16, _V.Int32, _V.UInt32, _V.Int64, _V.UInt64}
# method -> (command name, [(argument, type, description)])
METHODS: dict[str, tuple[str, _Spec]] = {
    "SetLevel": (  # a level for a while: the lighting override, as on MQTT
        "override",
        [
            ("lamp", _V.String, "lamp name"),
            ("level", _V.Int32, "dim level, percent"),
            ("duration_s", _V.Double, "override duration, seconds"),
        ],
    ),
    "Relay": (
        "relay",
        [
            ("device", _V.String, "device"),
            ("point", _V.String, "relay point"),
            ("on", _V.Boolean, "true: on"),
        ],
    ),
    "PowerCycle": ("power_cycle", [("device", _V.String, "device to power-cycle")]),
    "PtzPreset": (
        "ptz_preset",
        [("device", _V.String, "camera"), ("preset", _V.Int32, "preset number")],
    ),
    "AckAlarm": ("ack_alarm", [("alarm_id", _V.String, "active alarm id")]),
}


def _argument(name: str, vtype: ua.VariantType, description: str) -> ua.Argument:
    return ua.Argument(
        Name=name,
        DataType=nid(vtype.value),
        ValueRank=-1,
        ArrayDimensions=[],
        Description=ua.LocalizedText(description),
    )


def _convert(variant: object, vtype: ua.VariantType) -> object:
    """A method argument as Python, or raise ValueError; integers are accepted as any
    integer type (clients differ), and as Double too."""
    if not isinstance(variant, ua.Variant):
        raise ValueError("not a variant")
    got, value = variant.VariantType, variant.Value
    if vtype is _V.Int32 and got in _INT_TYPES:
        return int(value)
    if vtype is _V.Double and (got in _INT_TYPES or got in (_V.Float, _V.Double)):
        return float(value)
    if got is vtype and vtype in (_V.String, _V.Boolean):
        return value
    raise ValueError(f"expected {vtype.name}, got {got.name}")


class CommandMethods:
    """The methods' callbacks, bound to one command callback."""

    def __init__(
        self,
        command: CommandCallback | None,
        ids: CallIds,
        *,
        timeout_s: float = 10.0,
        report: Report | None = None,
    ) -> None:
        self.command = command
        self.ids = ids
        self.report = report
        self.timeout_s = timeout_s
        self.called = 0
        self._running: set[asyncio.Task[Mapping[str, Any]]] = set()

    @property
    def running(self) -> int:
        """Commands still running after their call answered "pending"."""
        return len(self._running)

    async def close(self) -> None:
        """Cancel commands still running past their call (at the server's stop)."""
        for task in self._running:
            task.cancel()
        await asyncio.gather(*self._running, return_exceptions=True)

    async def add_to(self, parent: Node, idx: int) -> None:
        for method, (name, args) in METHODS.items():
            await parent.add_method(
                nid(f"Commands.{method}", idx),
                ua.QualifiedName(method, idx),
                self._method(name, args),
                [_argument(*arg) for arg in args],
                [
                    _argument("status", _V.String, "ok, rejected, failed, pending"),
                    _argument("error", _V.String, "why, when not ok"),
                    _argument("id", _V.String, "the command id, as on cmd/result"),
                ],
            )

    def _method(
        self, name: str, spec: list[tuple[str, ua.VariantType, str]]
    ) -> Callable[..., Awaitable[list[ua.Variant] | ua.StatusCode]]:
        async def call(_parent: ua.NodeId, *variants: object) -> list[ua.Variant] | ua.StatusCode:
            user = current_user.get()
            if user is None or user.role is not UserRole.User or not user.name:
                return status(StatusCodes.BadUserAccessDenied)
            if len(variants) != len(spec):
                return status(StatusCodes.BadArgumentsMissing)
            try:
                args = {
                    arg: _convert(variant, vtype)
                    for (arg, vtype, _), variant in zip(spec, variants, strict=True)
                }
            except ValueError:
                return status(StatusCodes.BadInvalidArgument)
            outcome = await self.run(name, args, user.name)
            return [
                ua.Variant(text, _V.String) for text in (outcome.status, outcome.error, outcome.id)
            ]

        return call

    async def run(self, name: str, args: dict[str, object], user: str) -> Outcome:
        """Run one command as ``user``; never raises but for cancellation."""
        if self.command is None:
            return Outcome("failed", "commands are not enabled on this pole")
        self.called += 1
        call_id = self.ids.next()
        log.info("opcua_command", command=name, user=user, id=call_id)
        task = asyncio.create_task(
            self._submit(self.command, name, args, user, call_id), name=f"opcua:{call_id}"
        )
        # asyncua serves one connection's requests in order: a long command (a power cycle
        # takes minutes) must not stall the client's session, so the call answers "pending"
        # after timeout_s and the command runs on; its result goes up the command result
        # stream like every other.
        try:
            done, _ = await asyncio.wait({task}, timeout=self.timeout_s)
        except asyncio.CancelledError:
            task.cancel()
            raise
        if not done:
            self._running.add(task)
            task.add_done_callback(self._finished)
            return Outcome("pending", f"still running after {self.timeout_s:g} s", id=call_id)
        result = task.result()
        error = result.get("error")
        return Outcome(
            str(result.get("status", "failed")),
            "" if error is None else str(error),
            str(result.get("reason") or ""),
            call_id,
        )

    async def _submit(
        self, command: CommandCallback, name: str, args: dict[str, object], user: str, call_id: str
    ) -> Mapping[str, Any]:
        """The command's answer, reported when it is known; raises only CancelledError."""
        try:
            result = await command(name, args, actor=user, source=SOURCE, command_id=call_id)
        except asyncio.CancelledError:
            stopped = "cancelled before it finished (the OPC UA server stopped); outcome unknown"
            self._report(answer(call_id, "failed", stopped, command=name), name, user, call_id)
            raise
        except Exception as exc:  # a failing processor must not kill the call
            log.exception("opcua_command_failed", command=name, user=user, id=call_id)
            error = f"{type(exc).__name__}: {exc}"
            result = answer(call_id, "internal_error", error, command=name)
        self._report(result, name, user, call_id)
        return result

    def _report(self, result: Mapping[str, Any], name: str, user: str, call_id: str) -> None:
        """The answer in the one result shape, with who called (``opcua:<user>``)."""
        if self.report is None:
            return
        reason = str(result.get("reason") or "")
        if reason not in STATUS_OF:
            reason = "ok" if result.get("status") == "ok" else "failed"
        shaped = answer(
            str(result.get("id") or call_id),
            reason,
            None if result.get("error") is None else str(result["error"]),
            result.get("result"),
            command=str(result.get("command") or name),
        )
        try:
            self.report({**shaped, "actor": f"{SOURCE}:{user}"})
        except Exception:  # the answer is audited; losing its copy must not fail the call
            log.exception("opcua_command_report_failed", id=call_id)

    def _finished(self, task: asyncio.Task[Mapping[str, Any]]) -> None:
        self._running.discard(task)
