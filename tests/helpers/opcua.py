"""An OPC UA server under test and asyncua's real client, over loopback with Basic256Sha256.

``make_env`` lays out what the server reads from its state folder (a trusted and an untrusted
client certificate, a users file) and a point table; ``serving`` runs our server on it and
``connected`` logs a client in.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from asyncua import ua
from asyncua.client.client import Client
from asyncua.common.node import Node
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256

from helpers.ports import free_port
from smartpole.agent.core.points import PointTable, Quality
from smartpole.agent.uplink.opcua import OpcUaConfig, OpcUaServer
from smartpole.agent.uplink.opcua_auth import password_entry
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
    command_ids: list[str] = field(default_factory=list)
    reports: list[dict[str, Any]] = field(default_factory=list)  # what went to cmd/result
    reported: asyncio.Event = field(default_factory=asyncio.Event)
    alarms: list[dict[str, Any]] = field(default_factory=list)

    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def command(
        self, command: str, args: dict[str, object], *, actor: str, source: str, command_id: str
    ) -> Mapping[str, Any]:
        """Stands in for ``CommandProcessor.submit``."""
        self.commands.append(Call(command, dict(args), actor, source))
        self.command_ids.append(command_id)
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

    def report(self, result: Mapping[str, Any]) -> None:
        """Stands in for the ``cmd/result`` stream of the outbox."""
        self.reports.append(dict(result))
        self.reported.set()


def client_pki(directory: Path, name: str) -> Pki:
    cert_der, key_pem = make_self_signed(CLIENT_URI, name, hostnames=[socket.gethostname()])
    pki = Pki(directory / f"{name}.der", directory / f"{name}.pem")
    pki.cert.write_bytes(cert_der)
    pki.key.write_bytes(key_pem)
    return pki


def make_env(tmp_path: Path) -> Env:
    """A server state folder trusting one client ("scada") of two, a user, and three points."""
    state = tmp_path / "state"
    (state / "opcua" / "trusted").mkdir(parents=True)
    keys = tmp_path / "client"
    keys.mkdir()
    trusted, untrusted = client_pki(keys, "scada"), client_pki(keys, "intruder")
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
    url = f"opc.tcp://127.0.0.1:{free_port()}/smartpole/"
    return Env(state, url, table, trusted, untrusted, clock)


@asynccontextmanager
async def serving(
    env: Env,
    clock: Callable[[], float] = time.monotonic,
    *,
    ranges: Mapping[tuple[str, str], tuple[float, float]] | None = None,
    **config: Any,
) -> AsyncIterator[OpcUaServer]:
    """Our OPC UA server on ``env``, with ``env`` standing in for the pole's alarms and commands."""
    cfg = OpcUaConfig(endpoint=env.url, refresh_s=0.2, alarm_poll_s=60.0, **config)
    server = OpcUaServer(
        cfg,
        pole_id=POLE,
        table=env.table,
        state_dir=env.state,
        ranges=ranges,
        alarms=lambda: env.alarms,
        command=env.command,
        report=env.report,
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
    """asyncua's client, logged in as ``user`` over Basic256Sha256 with ``pki``'s certificate."""
    client = Client(env.url, timeout=TIMEOUT)
    client.application_uri = CLIENT_URI
    if user is not None:
        client.set_user(user)
        client.set_password(password)
    pki = pki or env.trusted
    await client.set_security(SecurityPolicyBasic256Sha256, str(pki.cert), str(pki.key), mode=mode)
    async with client:
        yield client


async def point_node(client: Client, device: str, point: str) -> Node:
    """The variable node of ``device.point`` under the pole's object."""
    idx = await client.get_namespace_index(NAMESPACE)
    return await client.nodes.objects.get_child(
        [f"{idx}:{POLE}", f"{idx}:{device}", f"{idx}:{point}"]
    )


class Handler:
    """A subscription handler that queues what the server notifies, for a test to await."""

    def __init__(self) -> None:
        self.values: asyncio.Queue[Any] = asyncio.Queue()
        self.events: asyncio.Queue[Any] = asyncio.Queue()

    def datachange_notification(self, node: Node, val: Any, data: Any) -> None:
        self.values.put_nowait(data.monitored_item.Value)

    def event_notification(self, event: Any) -> None:
        self.events.put_nowait(event)
