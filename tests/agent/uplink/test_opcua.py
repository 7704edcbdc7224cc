"""The OPC UA server against asyncua's real client over loopback, with Basic256Sha256."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from asyncua import ua
from asyncua.ua.status_codes import StatusCodes
from cryptography import x509

from helpers.opcua import (
    NAMESPACE,
    PASSWORD,
    POLE,
    TIMEOUT,
    USER,
    WRONG_PASSWORD,
    Call,
    Env,
    Handler,
    connected,
    point_node,
    serving,
)
from smartpole.agent.core.points import Quality
from smartpole.agent.uplink.opcua import OpcUaConfig, application_uri
from smartpole.agent.uplink.opcua_auth import password_entry, verify_password


async def _next_value(queue: asyncio.Queue[Any], wanted: Any, status: int = 0) -> None:
    """Wait for the notification of ``wanted`` with status code ``status``."""
    async with asyncio.timeout(TIMEOUT):
        while True:
            dv = await queue.get()
            if dv.Value.Value == wanted and dv.StatusCode.value == status:
                return


@pytest.mark.asyncio
async def test_browse_read_subscribe_call_and_events(env: Env) -> None:
    async with serving(env) as server, connected(env) as client:
        voltage = await point_node(client, "meter", "voltage")
        dv = await voltage.read_data_value(raise_on_bad_status=False)
        assert dv.Value is not None
        assert dv.Value.Value == 229.5
        assert dv.StatusCode is not None
        assert dv.StatusCode.is_good()
        stamp = env.table.sample("meter", "voltage")
        assert stamp is not None
        assert stamp.timestamp is not None
        assert dv.SourceTimestamp is not None
        assert abs(dv.SourceTimestamp.timestamp() - stamp.timestamp) < 0.001
        units = await (await voltage.get_child("0:EngineeringUnits")).read_value()
        assert units.DisplayName.Text == "V"
        assert units.UnitId == 5655636

        level = await (await point_node(client, "lamp1", "level")).read_data_value(
            raise_on_bad_status=False
        )
        assert level.StatusCode is not None
        assert level.StatusCode.is_uncertain()
        door = await (await point_node(client, "cabinet", "door_open")).read_data_value(
            raise_on_bad_status=False
        )
        assert door.StatusCode is not None
        assert door.StatusCode.is_bad()

        handler = Handler()
        sub = await client.create_subscription(20, handler)
        await sub.subscribe_data_change(voltage)
        await _next_value(handler.values, 229.5)
        env.table.update("meter", "voltage", 231.0, Quality.GOOD)
        await _next_value(handler.values, 231.0)

        idx = await client.get_namespace_index(NAMESPACE)
        etype = await client.nodes.base_event_type.get_child(f"{idx}:PoleAlarmEventType")
        await sub.subscribe_events(client.nodes.server, etype)
        env.alarms.append(
            {"alarm_id": "a1", "source": "cabinet", "kind": "door", "severity": "major"}
        )
        assert await server.poll_alarms() == 1
        async with asyncio.timeout(TIMEOUT):
            event = await handler.events.get()
        assert (event.AlarmId, event.Transition, event.Severity) == ("a1", "raised", 700)
        env.alarms.clear()
        assert await server.poll_alarms() == 1
        async with asyncio.timeout(TIMEOUT):
            event = await handler.events.get()
        assert (event.AlarmId, event.Transition) == ("a1", "cleared")

        commands = await client.nodes.objects.get_child([f"{idx}:{POLE}", f"{idx}:Commands"])
        result = await commands.call_method(f"{idx}:SetLevel", "lamp1", 40, 60.0)
        assert result == ["ok", "", "opcua-1"]
        # SetLevel is a level for a while: the override command, as the logged-in user.
        assert env.commands == [
            Call("override", {"lamp": "lamp1", "level": 40, "duration_s": 60.0}, USER, "opcua")
        ]
        await sub.delete()


@pytest.mark.asyncio
async def test_stale_quality_and_sign_only(env: Env) -> None:
    async with (
        serving(env) as server,
        connected(env, mode=ua.MessageSecurityMode.Sign) as client,
    ):
        voltage = await point_node(client, "meter", "voltage")
        handler = Handler()
        sub = await client.create_subscription(20, handler)
        await sub.subscribe_data_change(voltage)
        await _next_value(handler.values, 229.5)
        env.clock[0] += 61.0  # older than the point's stale_after_s, no new reading
        server.reconcile()
        await _next_value(handler.values, 229.5, StatusCodes.UncertainLastUsableValue)
        env.table.mark_bad("meter")  # the device stopped answering: no value, bad
        await _next_value(handler.values, None, StatusCodes.BadNoCommunication)
        await sub.delete()


@pytest.mark.asyncio
async def test_rejections_and_certificate_kept_across_restarts(env: Env) -> None:
    async with serving(env) as server:
        with pytest.raises(ua.uaerrors.BadIdentityTokenRejected):
            async with connected(env, user=None):  # anonymous: not allowed by default
                pass
        with pytest.raises(ua.uaerrors.BadCertificateUntrusted):
            async with connected(env, env.untrusted):
                pass
        assert server.trust.rejected == 1
        with pytest.raises(ua.uaerrors.BadUserAccessDenied):
            async with connected(env, password=WRONG_PASSWORD):
                pass
        with pytest.raises(ua.uaerrors.BadUserAccessDenied):
            async with connected(env, user="nobody"):
                pass
        assert server.users.denied == 2
        assert server.methods.called == 0
    cert = env.state / "opcua" / "pki" / "server_cert.der"
    first = cert.read_bytes()
    assert (env.state / "opcua" / "pki" / "server_key.pem").stat().st_mode & 0o077 == 0
    san = x509.load_der_x509_certificate(first).extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    )
    assert application_uri(POLE) in san.value.get_values_for_type(x509.UniformResourceIdentifier)
    async with serving(env), connected(env) as client:  # restarted: the same certificate
        assert client.security_policy.peer_certificate == first
    assert cert.read_bytes() == first


@pytest.mark.asyncio
async def test_anonymous_read_only_when_allowed(env: Env) -> None:
    async with serving(env, allow_anonymous_read=True), connected(env, user=None) as client:
        voltage = await point_node(client, "meter", "voltage")
        assert await voltage.read_value() == 229.5
        with pytest.raises(ua.uaerrors.BadUserAccessDenied):
            await voltage.write_value(ua.DataValue(ua.Variant(1.0, ua.VariantType.Double)))
        idx = await client.get_namespace_index(NAMESPACE)
        commands = await client.nodes.objects.get_child([f"{idx}:{POLE}", f"{idx}:Commands"])
        with pytest.raises(ua.uaerrors.BadUserAccessDenied):
            await commands.call_method(f"{idx}:PowerCycle", "camera1")
    assert env.commands == []


@pytest.mark.asyncio
async def test_long_failing_and_rejected_commands(env: Env) -> None:
    async with (
        serving(env, method_timeout_s=0.3) as server,
        connected(env) as client,
    ):
        idx = await client.get_namespace_index(NAMESPACE)
        commands = await client.nodes.objects.get_child([f"{idx}:{POLE}", f"{idx}:Commands"])
        pending = await commands.call_method(f"{idx}:PowerCycle", "camera1")
        assert pending == ["pending", "still running after 0.3 s", "opcua-1"]
        failed = await commands.call_method(f"{idx}:PtzPreset", "camera1", 3)
        assert failed == ["failed", "RuntimeError: camera bus down", "opcua-2"]
        rejected = await commands.call_method(f"{idx}:AckAlarm", "a9")
        assert rejected == ["rejected", "no active alarm a9", "opcua-3"]
        relay = await commands.call_method(f"{idx}:Relay", "mcu", "relay1", True)
        assert relay == ["ok", "", "opcua-4"]
        with pytest.raises(ua.uaerrors.BadInvalidArgument):
            await commands.call_method(f"{idx}:Relay", "mcu", "relay1", "yes")
        # Answered calls were reported as they ended; the pending one when it finishes.
        assert [r["id"] for r in env.reports] == ["opcua-2", "opcua-3", "opcua-4"]
        env.reported.clear()
        env.release.set()
        async with asyncio.timeout(TIMEOUT):
            await env.reported.wait()
        assert server.methods.called == 4
    assert [c.command for c in env.commands] == ["power_cycle", "ptz_preset", "ack_alarm", "relay"]
    assert env.command_ids == ["opcua-1", "opcua-2", "opcua-3", "opcua-4"]
    assert env.commands[3].args == {"device": "mcu", "point": "relay1", "on": True}
    assert {r["actor"] for r in env.reports} == {f"opcua:{USER}"}
    assert [(r["id"], r["command"], r["status"], r["reason"], r["error"])
            for r in env.reports] == [
        ("opcua-2", "ptz_preset", "failed", "internal_error", "RuntimeError: camera bus down"),
        ("opcua-3", "ack_alarm", "rejected", "refused", "no active alarm a9"),
        ("opcua-4", "relay", "ok", "ok", None),
        ("opcua-1", "power_cycle", "ok", "ok", None),
    ]  # fmt: skip


@pytest.mark.asyncio
async def test_call_ids_continue_across_restarts_and_a_command_cut_short_is_reported(
    env: Env,
) -> None:
    """Ids are never reused (the processor would answer a reused one "duplicate"), and a
    command still running when the server stops gets a "failed" answer, not silence."""
    async with serving(env), connected(env) as client:
        idx = await client.get_namespace_index(NAMESPACE)
        commands = await client.nodes.objects.get_child([f"{idx}:{POLE}", f"{idx}:Commands"])
        relay = await commands.call_method(f"{idx}:Relay", "mcu", "relay1", False)
        assert relay == ["ok", "", "opcua-1"]
    async with serving(env, method_timeout_s=0.2) as server, connected(env) as client:
        commands = await client.nodes.objects.get_child([f"{idx}:{POLE}", f"{idx}:Commands"])
        pending = await commands.call_method(f"{idx}:PowerCycle", "camera1")
        assert pending[::2] == ["pending", "opcua-2"]  # after a restart: the next number
    # The server stopped with the power cycle still running: it was cancelled and said so.
    last = env.reports[-1]
    assert (last["id"], last["status"], last["reason"]) == ("opcua-2", "failed", "failed")
    assert "stopped" in last["error"]
    assert [r["id"] for r in env.reports] == ["opcua-1", "opcua-2"]
    assert server.methods.ids.write_failures == 0


def test_users_file_holds_no_plaintext(env: Env) -> None:
    text = (env.state / "opcua" / "users").read_text()
    assert PASSWORD not in text
    stored = text.splitlines()[1].partition(":")[2]
    assert verify_password(PASSWORD, stored)
    assert not verify_password("wrong", stored)
    with pytest.raises(ValueError, match="user name"):
        password_entry("a:b", "x")


def test_config_is_strict() -> None:
    with pytest.raises(ValueError, match="extra"):
        OpcUaConfig.model_validate({"endpoint": "opc.tcp://x:1/", "bogus": 1})
    with pytest.raises(ValueError, match=r"opc\.tcp"):
        OpcUaConfig(endpoint="http://x/")
    with pytest.raises(ValueError, match="literal"):
        OpcUaConfig.model_validate({"security_modes": ["None"]})
