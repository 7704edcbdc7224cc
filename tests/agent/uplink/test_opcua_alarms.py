"""Alarms as OPC UA Alarms & Conditions, against asyncua's real client with Basic256Sha256."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from asyncua import ua
from asyncua.client.client import Client
from asyncua.common.subscription import Subscription
from asyncua.ua.object_ids import ObjectIds

from helpers.opcua import NAMESPACE, TIMEOUT, USER, Env, Handler, connected, serving

DOOR = {"alarm_id": "cabinet/door", "source": "cabinet", "kind": "door", "severity": "major",
        "raised_at": 1000.0}  # fmt: skip
SURGE = {"alarm_id": "meter/overvoltage", "source": "meter", "kind": "overvoltage",
         "severity": "critical", "raised_at": 1010.0}  # fmt: skip
ACK = ua.NodeId(ObjectIds.AcknowledgeableConditionType_Acknowledge)


def _field(event: Any, name: str) -> Any:
    return getattr(event, name)


async def _next(handler: Handler) -> Any:
    async with asyncio.timeout(TIMEOUT):
        return await handler.events.get()


async def _subscribe(client: Client, handler: Handler) -> Subscription:
    sub = await client.create_subscription(20, handler)
    types = [
        client.get_node(ua.NodeId(t))
        for t in (
            ObjectIds.AlarmConditionType,
            ObjectIds.RefreshStartEventType,
            ObjectIds.RefreshEndEventType,
        )
    ]
    await sub.subscribe_events(client.nodes.server, types)
    return sub


async def _refresh(client: Client, handler: Handler, sub: Subscription) -> list[Any]:
    """ConditionRefresh: the condition events between RefreshStart and RefreshEnd."""
    await client.get_node(ua.NodeId(ObjectIds.ConditionType)).call_method(
        ua.NodeId(ObjectIds.ConditionType_ConditionRefresh),
        ua.Variant(sub.subscription_id, ua.VariantType.UInt32),
    )
    start = await _next(handler)
    assert start.EventType == ua.NodeId(ObjectIds.RefreshStartEventType)
    conditions = []
    while (event := await _next(handler)).EventType != ua.NodeId(ObjectIds.RefreshEndEventType):
        conditions.append(event)
    return conditions


async def _acknowledge(client: Client, event: Any, comment: str = "seen") -> None:
    await client.get_node(event.NodeId).call_method(
        ACK,
        ua.Variant(event.EventId, ua.VariantType.ByteString),
        ua.Variant(ua.LocalizedText(comment), ua.VariantType.LocalizedText),
    )


@pytest.mark.asyncio
async def test_conditions_raise_acknowledge_clear_and_refresh(env: Env) -> None:
    env.alarms.append(dict(DOOR))  # active before the server starts
    async with serving(env) as server, connected(env) as client:
        idx = await client.get_namespace_index(NAMESPACE)
        handler = Handler()
        sub = await _subscribe(client, handler)

        # A late subscriber learns the alarm that was already active.
        [door] = await _refresh(client, handler, sub)
        assert door.EventType == ua.NodeId(ObjectIds.AlarmConditionType)
        assert door.NodeId == ua.NodeId("alarms/cabinet/door", idx)
        assert door.SourceNode == ua.NodeId("cabinet", idx)
        assert (_field(door, "ActiveState/Id"), _field(door, "AckedState/Id")) == (True, False)
        assert (door.Retain, door.Severity, door.ConditionName) == (True, 700, "door")

        env.alarms.append(dict(SURGE))
        assert await server.poll_alarms() == 1
        surge = await _next(handler)
        assert surge.NodeId == ua.NodeId("alarms/meter/overvoltage", idx)
        assert surge.SourceNode == ua.NodeId("meter", idx)
        assert _field(surge, "ActiveState/Id") is True
        assert _field(surge, "AckedState/Id") is False
        assert (surge.Retain, surge.Severity) == (True, 900)
        assert surge.Message.Text == "overvoltage on meter: active"

        # The condition's own Acknowledge acknowledges the alarm in the agent, as the user.
        await _acknowledge(client, surge, "on my way")
        [call] = env.commands
        assert (call.command, call.args, call.actor) == (
            "ack_alarm",
            {"alarm_id": "meter/overvoltage"},
            USER,
        )
        acked = await _next(handler)
        assert acked.NodeId == surge.NodeId
        assert (_field(acked, "ActiveState/Id"), _field(acked, "AckedState/Id")) == (True, True)
        assert acked.Comment.Text == "on my way"
        assert acked.Retain is True
        condition = client.get_node(surge.NodeId)
        acked_var = await condition.get_child(["0:AckedState", "0:Id"])
        assert await acked_var.read_value() is True
        with pytest.raises(ua.uaerrors.BadConditionBranchAlreadyAcked):
            await _acknowledge(client, acked)
        with pytest.raises(ua.uaerrors.BadEventIdUnknown):
            await _acknowledge(client, SimpleNamespace(NodeId=door.NodeId, EventId=b"no-such"))
        assert len(env.commands) == 1

        env.alarms.remove(next(a for a in env.alarms if a["alarm_id"] == "meter/overvoltage"))
        assert await server.poll_alarms() == 1
        cleared = await _next(handler)
        assert cleared.NodeId == surge.NodeId
        assert _field(cleared, "ActiveState/Id") is False
        assert cleared.Retain is False
        active_var = await condition.get_child(["0:ActiveState", "0:Id"])
        assert await active_var.read_value() is False

        # Only the door is still active, so only the door comes back.
        assert [e.NodeId for e in await _refresh(client, handler, sub)] == [door.NodeId]
        assert server.status()["alarm_conditions"] == 2
        await sub.delete()


@pytest.mark.asyncio
async def test_anonymous_may_refresh_but_not_acknowledge(env: Env) -> None:
    env.alarms.append(dict(DOOR))
    async with (
        serving(env, allow_anonymous_read=True),
        connected(env, user=None) as client,
    ):
        handler = Handler()
        sub = await _subscribe(client, handler)
        [door] = await _refresh(client, handler, sub)
        with pytest.raises(ua.uaerrors.BadUserAccessDenied):
            await _acknowledge(client, door)
        await sub.delete()
    assert env.commands == []
    assert "acknowledged_at" not in env.alarms[0]


@pytest.mark.asyncio
async def test_acknowledge_refused_by_the_agent_is_an_error(env: Env) -> None:
    refused = {"status": "rejected", "reason": "not_allowed", "error": "operator may not"}

    async def command(
        command: str, args: dict[str, object], *, actor: str, source: str, command_id: str
    ) -> Any:
        return refused

    env.alarms.append(dict(DOOR))
    async with serving(env) as server, connected(env) as client:
        server.methods.command = command
        handler = Handler()
        sub = await _subscribe(client, handler)
        [door] = await _refresh(client, handler, sub)
        with pytest.raises(ua.uaerrors.BadUserAccessDenied):
            await _acknowledge(client, door)
        refused.update(reason="refused", error="no active alarm cabinet/door")
        with pytest.raises(ua.uaerrors.BadInvalidState):
            await _acknowledge(client, door)
        assert await server.poll_alarms() == 0  # nothing was acknowledged
        await sub.delete()
