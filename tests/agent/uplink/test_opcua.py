"""The OPC UA server against asyncua's real client over loopback, with Basic256Sha256."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from asyncua import ua
from asyncua.client.client import Client
from asyncua.common.node import Node
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256
from asyncua.ua.status_codes import StatusCodes
from cryptography import x509

from smartpole.agent.core.points import PointTable, Quality
from smartpole.agent.uplink.opcua import OpcUaConfig, OpcUaServer, application_uri
from smartpole.agent.uplink.opcua_auth import password_entry, verify_password
from smartpole.agent.uplink.opcua_certs import make_self_signed

NAMESPACE = "urn:smartpole:opcua"
POLE = "pole-7"
CLIENT_URI = "urn:smartpole:test:scada"
USER, PASSWORD = "operator", "correct horse"
WRONG_PASSWORD = "wrong horse"  # noqa: S105 - a test credential
TIMEOUT = 10.0


@dataclass
class Pki:
    cert: Path
    key: Path


@dataclass
class Call:
    command: str
    args: dict[str, object]
    actor: str
    source: str


@dataclass
class Env:
    state: Path
    url: str
    table: PointTable
    trusted: Pki
    untrusted: Pki
    clock: list[float]
    commands: list[Call] = field(default_factory=list)
    alarms: list[dict[str, Any]] = field(default_factory=list)

    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def command(
        self, command: str, args: dict[str, object], *, actor: str, source: str
    ) -> Mapping[str, Any]:
        """Stands in for ``CommandProcessor.submit``."""
        self.commands.append(Call(command, dict(args), actor, source))
        if command == "power_cycle":
            await self.release.wait()  # a command that outlasts the method call
        if command == "ptz_preset":
            raise RuntimeError("camera bus down")
        if command == "ack_alarm":
            alarm = next((a for a in self.alarms if a["alarm_id"] == args["alarm_id"]), None)
            if alarm is None:
                return {"status": "rejected", "reason": "refused",
                        "error": f"no active alarm {args['alarm_id']}"}  # fmt: skip
            alarm["acknowledged_at"], alarm["acknowledged_by"] = 1234.5, f"{source}:{actor}"
        return {"status": "ok", "reason": "ok", "error": None}


def _client_pki(directory: Path, name: str) -> Pki:
    cert_der, key_pem = make_self_signed(CLIENT_URI, name, hostnames=[socket.gethostname()])
    pki = Pki(directory / f"{name}.der", directory / f"{name}.pem")
    pki.cert.write_bytes(cert_der)
    pki.key.write_bytes(key_pem)
    return pki


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def env(tmp_path: Path) -> Env:
    state = tmp_path / "state"
    (state / "opcua" / "trusted").mkdir(parents=True)
    keys = tmp_path / "client"
    keys.mkdir()
    trusted, untrusted = _client_pki(keys, "scada"), _client_pki(keys, "intruder")
    (state / "opcua" / "trusted" / "scada.der").write_bytes(trusted.cert.read_bytes())
    (state / "opcua" / "users").write_text(
        "# test users\n" + password_entry(USER, PASSWORD, iterations=1000) + "\n"
    )
    clock = [1000.0]
    table = PointTable(monotonic=lambda: clock[0])
    table.register("meter", "voltage", "V", 60.0)
    table.register("lamp1", "level", "%", 60.0)
    table.register("cabinet", "door_open", "", 60.0)
    table.update("meter", "voltage", 229.5, Quality.GOOD)
    table.update("lamp1", "level", 80, Quality.UNCERTAIN)
    url = f"opc.tcp://127.0.0.1:{_free_port()}/smartpole/"
    return Env(state, url, table, trusted, untrusted, clock)


@asynccontextmanager
async def serving(
    env: Env, clock: Callable[[], float] = time.monotonic, **config: Any
) -> AsyncIterator[OpcUaServer]:
    cfg = OpcUaConfig(endpoint=env.url, refresh_s=0.2, alarm_poll_s=60.0, **config)
    server = OpcUaServer(
        cfg,
        pole_id=POLE,
        table=env.table,
        state_dir=env.state,
        alarms=lambda: env.alarms,
        command=env.command,
        clock=clock,
    )
    async with server:
        yield server


@asynccontextmanager
async def connected(
    env: Env,
    pki: Pki | None = None,
    *,
    user: str | None = USER,
    password: str = PASSWORD,
    mode: ua.MessageSecurityMode = ua.MessageSecurityMode.SignAndEncrypt,
) -> AsyncIterator[Client]:
    client = Client(env.url, timeout=TIMEOUT)
    client.application_uri = CLIENT_URI
    if user is not None:
        client.set_user(user)
        client.set_password(password)
    pki = pki or env.trusted
    await client.set_security(SecurityPolicyBasic256Sha256, str(pki.cert), str(pki.key), mode=mode)
    async with client:
        yield client


async def _point(client: Client, device: str, point: str) -> Node:
    idx = await client.get_namespace_index(NAMESPACE)
    return await client.nodes.objects.get_child(
        [f"{idx}:{POLE}", f"{idx}:{device}", f"{idx}:{point}"]
    )


class _Handler:
    def __init__(self) -> None:
        self.values: asyncio.Queue[Any] = asyncio.Queue()
        self.events: asyncio.Queue[Any] = asyncio.Queue()

    def datachange_notification(self, node: Node, val: Any, data: Any) -> None:
        self.values.put_nowait(data.monitored_item.Value)

    def event_notification(self, event: Any) -> None:
        self.events.put_nowait(event)


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
        voltage = await _point(client, "meter", "voltage")
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

        level = await (await _point(client, "lamp1", "level")).read_data_value(
            raise_on_bad_status=False
        )
        assert level.StatusCode is not None
        assert level.StatusCode.is_uncertain()
        door = await (await _point(client, "cabinet", "door_open")).read_data_value(
            raise_on_bad_status=False
        )
        assert door.StatusCode is not None
        assert door.StatusCode.is_bad()

        handler = _Handler()
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
        assert result == ["ok", ""]
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
        voltage = await _point(client, "meter", "voltage")
        handler = _Handler()
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
        voltage = await _point(client, "meter", "voltage")
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
        assert pending == ["pending", "still running after 0.3 s"]
        failed = await commands.call_method(f"{idx}:PtzPreset", "camera1", 3)
        assert failed == ["failed", "RuntimeError: camera bus down"]
        rejected = await commands.call_method(f"{idx}:AckAlarm", "a9")
        assert rejected == ["rejected", "no active alarm a9"]
        relay = await commands.call_method(f"{idx}:Relay", "mcu", "relay1", True)
        assert relay == ["ok", ""]
        with pytest.raises(ua.uaerrors.BadInvalidArgument):
            await commands.call_method(f"{idx}:Relay", "mcu", "relay1", "yes")
        env.release.set()
        assert server.methods.called == 4
    assert [c.command for c in env.commands] == ["power_cycle", "ptz_preset", "ack_alarm", "relay"]
    assert env.commands[3].args == {"device": "mcu", "point": "relay1", "on": True}


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
