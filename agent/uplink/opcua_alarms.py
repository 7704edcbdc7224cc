"""The pole's alarms on the OPC UA server: Alarms & Conditions (Part 9), and plain events.

Each alarm (``<source>/<kind>``, stable across activations) is an ``AlarmConditionType``
object ``s=alarms/<alarm_id>`` under its device (``HasComponent`` and ``HasCondition``), or
under the pole object when its source is not a device; it is made when the alarm is first
seen and kept. Every transition fires a condition event from the Server object (asyncua
delivers events only to subscriptions on the emitting node), with the device as
``SourceNode``, and writes the same state into the condition's variables:

======================  ===============  ====================  ==============
agent                   ActiveState/Id   AckedState/Id         Retain
======================  ===============  ====================  ==============
raised                  true             false                 true
acknowledged            true             true                  true
cleared                 false            (unchanged)           false
======================  ===============  ====================  ==============

A cleared alarm is not retained even when it was never acknowledged, because the agent drops
it: there is nothing left to acknowledge. ``Acknowledge`` (the AcknowledgeableConditionType
method, on the type or the instance) acknowledges the alarm in the agent through the command
processor (``ack_alarm``, as the ``AckAlarm`` method), so it needs a logged-in user that the
commands' allow-list admits; its EventId must be one of the condition's events of the
current activation. ``ConditionRefresh`` is asyncua's own (``bind_condition_methods``): it
re-sends every retained condition event between RefreshStartEvent and RefreshEndEvent.
``Enable``, ``Disable`` and ``AddComment`` answer ``BadNotSupported``.

Each transition also still fires the ``PoleAlarmEventType`` event (a BaseEventType with
AlarmId, Kind, AlarmSource, Transition, Acknowledged) that clients used before conditions.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog
from asyncua import ua
from asyncua.common.node import Node
from asyncua.crypto.permission_rules import UserRole
from asyncua.server.event_generator import EventGenerator
from asyncua.server.server import Server
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.status_codes import StatusCodes

from smartpole.agent.uplink.opcua_auth import current_user
from smartpole.agent.uplink.opcua_methods import Outcome
from smartpole.agent.uplink.opcua_space import nid, severity, status

log = structlog.get_logger("smartpole.uplink.opcua")

Acknowledge = Callable[[str, str], Awaitable[Outcome]]  # (alarm_id, user) -> outcome
_V = ua.VariantType
# asyncua types some event fields by DataType NodeId, which a Variant cannot take.
_FIELD_TYPES = {nid(ObjectIds.UtcTime): _V.DateTime, nid(ObjectIds.Duration): _V.Double}
_UNSUPPORTED = (
    ObjectIds.ConditionType_Enable,
    ObjectIds.ConditionType_Disable,
    ObjectIds.ConditionType_AddComment,
)
_BASE_CLASS = nid(ObjectIds.BaseConditionClassType)


def _when(timestamp: object) -> dt.datetime:
    if isinstance(timestamp, int | float) and not isinstance(timestamp, bool):
        return dt.datetime.fromtimestamp(float(timestamp), dt.UTC)
    return dt.datetime.now(dt.UTC)


def _event_id(value: object) -> bytes | None:
    value = value.Value if isinstance(value, ua.Variant) else value
    return value if isinstance(value, bytes) else None


@dataclass
class _Condition:
    alarm_id: str
    node: ua.NodeId
    source: ua.NodeId
    generator: EventGenerator
    children: dict[str, ua.NodeId]  # "ActiveState/Id" -> the instance's variable
    event_ids: set[bytes] = field(default_factory=set)  # of the current activation
    acked: bool = False
    active: bool = False
    comment: str = ""


class AlarmConditions:
    """Turns the agent's active-alarm list into conditions and events; see the module doc."""

    def __init__(self, server: Server, idx: int, acknowledge: Acknowledge) -> None:
        self.server = server
        self.idx = idx
        self.acknowledge = acknowledge
        self.fired = 0
        self.acknowledged = 0
        self._state: dict[str, dict[str, Any]] = {}
        self._conditions: dict[str, _Condition] = {}
        self._by_node: dict[ua.NodeId, _Condition] = {}
        self._sources: dict[str, Node] = {}
        self._fallback: Node | None = None
        self._legacy: Any = None  # EventGenerator of PoleAlarmEventType
        self._lock = asyncio.Lock()
        self._poll: Callable[[], Awaitable[int]] | None = None

    async def setup(
        self, pole: Node, devices: Mapping[str, Node], poll: Callable[[], Awaitable[int]]
    ) -> None:
        """Event types and method callbacks; ``poll`` re-reads the agent's alarms (after an
        Acknowledge, so the acknowledged state goes out at once)."""
        self._sources, self._fallback, self._poll = dict(devices), pole, poll
        server = self.server
        etype = await server.create_custom_event_type(
            self.idx,
            "PoleAlarmEventType",
            ObjectIds.BaseEventType,
            [
                ("AlarmId", _V.String),
                ("Kind", _V.String),
                ("AlarmSource", _V.String),
                ("Transition", _V.String),
                ("Acknowledged", _V.Boolean),
            ],
        )
        self._legacy = await server.get_event_generator(etype, ObjectIds.Server)
        # Once, for the Server's GeneratesEvent reference; each condition has its own.
        await server.get_event_generator(ObjectIds.AlarmConditionType, ObjectIds.Server)
        isession = server.iserver.isession
        isession.add_method_callback(
            nid(ObjectIds.AcknowledgeableConditionType_Acknowledge), self._acknowledge
        )
        for method in _UNSUPPORTED:
            isession.add_method_callback(nid(method), _not_supported)

    async def start(self, alarms: dict[str, dict[str, Any]]) -> None:
        """Alarms already active when the server starts: conditions, retained for
        ConditionRefresh, but no transition events."""
        async with self._lock:
            for alarm_id, alarm in alarms.items():
                await self._fire_condition(alarm_id, alarm, active=True)
            self._state = alarms

    async def sync(self, now: dict[str, dict[str, Any]]) -> int:
        """Fire the transitions between the last alarm list and ``now``; their count."""
        async with self._lock:
            fired = 0
            for alarm_id, alarm in now.items():
                before = self._state.get(alarm_id)
                if before is None:
                    transition = "raised"
                elif alarm.get("acknowledged_at") and not before.get("acknowledged_at"):
                    transition = "acknowledged"
                else:
                    continue
                await self._fire(alarm_id, alarm, transition)
                fired += 1
            for alarm_id, alarm in self._state.items():
                if alarm_id not in now:
                    await self._fire(alarm_id, alarm, "cleared")
                    fired += 1
            self._state = now
            self.fired += fired
            return fired

    def status(self) -> dict[str, object]:
        return {
            "alarms_active": len(self._state),
            "alarm_conditions": len(self._conditions),
            "alarm_transitions": self.fired,
            "alarms_acknowledged_here": self.acknowledged,
        }

    # -- events -------------------------------------------------------------------------

    async def _fire(self, alarm_id: str, alarm: Mapping[str, Any], transition: str) -> None:
        await self._fire_condition(alarm_id, alarm, active=transition != "cleared")
        event: Any = self._legacy.event
        kind, source = str(alarm.get("kind", "")), str(alarm.get("source", ""))
        event.Severity = severity(alarm.get("severity"))
        event.SourceName = source
        event.AlarmId = alarm_id
        event.Kind = kind
        event.AlarmSource = source
        event.Transition = transition
        event.Acknowledged = bool(alarm.get("acknowledged_at"))
        await self._legacy.trigger(message=f"{kind} {transition} on {source}")

    async def _fire_condition(
        self, alarm_id: str, alarm: Mapping[str, Any], *, active: bool
    ) -> None:
        cond = self._conditions.get(alarm_id) or await self._create(alarm_id, alarm)
        acked = bool(alarm.get("acknowledged_at")) if active else cond.acked
        if active and not cond.active:  # a new activation
            cond.event_ids.clear()
            cond.comment = ""
            setattr(cond.generator.event, "AckedState/TransitionTime", None)
        kind, source = str(alarm.get("kind", "")), str(alarm.get("source", ""))
        ev: Any = cond.generator.event
        fields: dict[str, object] = {
            "NodeId": cond.node,
            "SourceNode": cond.source,
            "SourceName": source,
            "ConditionName": kind,
            "ConditionClassId": _BASE_CLASS,
            "ConditionClassName": ua.LocalizedText("BaseConditionClass"),
            "BranchId": ua.NodeId(),
            "Retain": active,
            "EnabledState": ua.LocalizedText("Enabled"),
            "EnabledState/Id": True,
            "ActiveState": ua.LocalizedText("Active" if active else "Inactive"),
            "ActiveState/Id": active,
            "ActiveState/TransitionTime": _when(alarm.get("raised_at") if active else None),
            "AckedState": ua.LocalizedText("Acknowledged" if acked else "Unacknowledged"),
            "AckedState/Id": acked,
            "Quality": status(StatusCodes.Good),
            "LastSeverity": ev.Severity if cond.active else severity(alarm.get("severity")),
            "Severity": severity(alarm.get("severity")),
            "Comment": ua.LocalizedText(cond.comment),
            "ClientUserId": str(alarm.get("acknowledged_by") or ""),
            "InputNode": ua.NodeId(),
            "SuppressedOrShelved": False,
        }
        if acked and not cond.acked:
            fields["AckedState/TransitionTime"] = _when(alarm.get("acknowledged_at"))
        for name, value in fields.items():
            setattr(ev, name, value)
        state = "active" if active else "cleared"
        state = "acknowledged" if active and acked else state
        await cond.generator.trigger(message=f"{kind} on {source}: {state}")
        cond.active, cond.acked = active, acked
        event_id = _event_id(ev.EventId)
        if event_id is not None and active:
            cond.event_ids.add(event_id)
        await self._write_variables(cond, ev)

    async def _write_variables(self, cond: _Condition, ev: Any) -> None:
        """The condition object shows what its last event said."""
        for name, child in cond.children.items():
            value = getattr(ev, name, None)
            vtype = ev.data_types.get(name)
            if value is None or not isinstance(vtype, ua.VariantType):
                continue
            if isinstance(value, ua.Variant):
                value = value.Value
            await self.server.write_attribute_value(child, ua.DataValue(ua.Variant(value, vtype)))

    async def _create(self, alarm_id: str, alarm: Mapping[str, Any]) -> _Condition:
        source = self._sources.get(str(alarm.get("source", "")), self._fallback)
        if source is None:
            raise RuntimeError("AlarmConditions.setup was not called")
        node = await source.add_object(
            nid(f"alarms/{alarm_id}", self.idx),
            ua.QualifiedName(f"{alarm.get('kind', alarm_id)}_alarm", self.idx),
            objecttype=ObjectIds.AlarmConditionType,
            instantiate_optional=False,
        )
        await source.add_reference(node.nodeid, ObjectIds.HasCondition)
        generator = EventGenerator(self.server.iserver.isession)
        await generator.init(ObjectIds.AlarmConditionType, ObjectIds.Server, False)
        for name, vtype in list(generator.event.data_types.items()):
            if isinstance(vtype, ua.NodeId) and (fixed := _FIELD_TYPES.get(vtype)) is not None:
                generator.event.data_types[name] = fixed
        children = await _variables(node)
        cond = _Condition(alarm_id, node.nodeid, source.nodeid, generator, children)
        acknowledge = await node.get_child("0:Acknowledge")
        self.server.link_method(acknowledge, self._acknowledge)
        for name in ("Enable", "Disable", "AddComment"):
            self.server.link_method(await node.get_child(f"0:{name}"), _not_supported)
        self._conditions[alarm_id] = cond
        self._by_node[node.nodeid] = cond
        return cond

    # -- Acknowledge ----------------------------------------------------------------------

    async def _acknowledge(
        self, parent: ua.NodeId, *args: object
    ) -> list[ua.Variant] | ua.StatusCode:
        user = current_user.get()
        if user is None or user.role is not UserRole.User or not user.name:
            return status(StatusCodes.BadUserAccessDenied)
        cond = self._by_node.get(parent)
        if cond is None:
            return status(StatusCodes.BadNodeIdUnknown)
        if len(args) != 2:
            return status(StatusCodes.BadArgumentsMissing)
        event_id, comment = (a.Value if isinstance(a, ua.Variant) else None for a in args)
        if not isinstance(event_id, bytes) or not (
            comment is None or isinstance(comment, ua.LocalizedText)
        ):
            return status(StatusCodes.BadInvalidArgument)
        if event_id not in cond.event_ids:
            return status(StatusCodes.BadEventIdUnknown)
        if cond.acked:
            return status(StatusCodes.BadConditionBranchAlreadyAcked)
        outcome = await self.acknowledge(cond.alarm_id, user.name)
        log.info("opcua_condition_acknowledge", alarm=cond.alarm_id, user=user.name,
                 status=outcome.status, reason=outcome.reason)  # fmt: skip
        if outcome.status not in ("ok", "duplicate", "pending"):
            if outcome.reason == "not_allowed":
                return status(StatusCodes.BadUserAccessDenied)
            failed = outcome.status == "failed"
            return status(StatusCodes.BadInternalError if failed else StatusCodes.BadInvalidState)
        self.acknowledged += 1
        cond.comment = (comment.Text or "") if comment is not None else ""
        if self._poll is not None:
            await self._poll()
        return []


async def _not_supported(_parent: ua.NodeId, *_args: object) -> ua.StatusCode:
    return status(StatusCodes.BadNotSupported)


async def _variables(node: Node, prefix: str = "") -> dict[str, ua.NodeId]:
    """The instance's variables by event field name (``ActiveState/Id``)."""
    found: dict[str, ua.NodeId] = {}
    for child in await node.get_children(nodeclassmask=ua.NodeClass.Variable):
        name = prefix + (await child.read_browse_name()).Name
        found[name] = child.nodeid
        found.update(await _variables(child, name + "/"))
    return found
