"""The MQTT session: commands queued for an offline pole, and the fall back to MQTT 3.1.1.

Real brokers only: Mosquitto (MQTT 5 and 3.1.1) for the persistent command session, and
amqtt, which speaks MQTT 3.1.1 only, for the fallback. amqtt refuses a bare MQTT 5 CONNECT
with CONNACK 1, but the uplink's CONNECT carries a last will, whose MQTT 5 properties it
misparses: it then waits for bytes that never come and never answers. Both are what older
brokers in the field do; the uplink falls back to 3.1.1 on either.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from helpers.broker import Broker, Mqtt311Broker
from helpers.waiting import eventually
from smartpole.agent.config.uplink import UplinkConfig
from smartpole.agent.core.outbox import Outbox, Priority
from smartpole.agent.uplink.mqtt import MqttUplink
from smartpole.agent.uplink.topics import Topics

POLE = "session-pole"
TOPICS = Topics(POLE)


class RecordingHandler:
    """Stands in for the command processor: the session, not the command, is under test."""

    def __init__(self) -> None:
        self.ids: list[str] = []

    async def handle(self, payload: bytes, *, source: str) -> dict[str, Any]:
        command = json.loads(payload)
        self.ids.append(str(command["id"]))
        return {"ok": True, "id": command["id"]}


def config(port: int, **extra: Any) -> UplinkConfig:
    return UplinkConfig.model_validate(
        {
            "host": "127.0.0.1",
            "port": port,
            "backoff": {"initial_s": 0.1, "max_s": 0.3, "jitter": 0.0},
            "idle_poll_s": 0.05,
            **extra,
        }
    )


async def send_command(port: int, command_id: str) -> None:
    """Publish at QoS 1; returns once the broker has the message (its PUBACK)."""
    async with aiomqtt.Client("127.0.0.1", port, identifier=f"platform-{command_id}") as client:
        await client.publish(TOPICS.command, json.dumps({"id": command_id}), qos=1)


async def run_until_handled(
    uplink_config: UplinkConfig, state_dir: Path, handler: RecordingHandler, command_id: str
) -> None:
    """Connect, send ``command_id`` once connected, wait until it is handled, disconnect."""
    with Outbox(state_dir) as outbox:
        uplink = MqttUplink(
            uplink_config, pole_id=POLE, outbox=outbox, base_dir=state_dir, commands=handler
        )
        async with uplink:
            await eventually(lambda: uplink.state == "connected", 15.0, "the uplink to connect")
            # The subscription may lag the CONNACK: resend until one copy is handled. The
            # command ids make the copies harmless, as they are for the platform.
            deadline = time.monotonic() + 15
            while command_id not in handler.ids:
                assert time.monotonic() < deadline, f"{command_id} was never handled"
                await send_command(uplink_config.broker_port(), command_id)
                with contextlib.suppress(AssertionError):
                    await eventually(lambda: command_id in handler.ids, 1.0, command_id)


@pytest.mark.asyncio
@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
async def test_commands_sent_while_the_pole_is_offline_arrive_when_it_reconnects(
    tmp_path: Path, protocol: str
) -> None:
    handler = RecordingHandler()
    with Broker(tmp_path / "broker") as broker:
        uplink_config = config(broker.port, protocol=protocol, commands={"offline_queue_s": 600})
        await run_until_handled(uplink_config, tmp_path, handler, "before")
        # The pole is offline now; the platform sends a command all the same.
        await send_command(broker.port, "while-offline")
        await run_until_handled(uplink_config, tmp_path, handler, "after")
    assert "while-offline" in handler.ids
    assert handler.ids.index("while-offline") < handler.ids.index("after")


@pytest.mark.asyncio
async def test_without_an_offline_queue_commands_sent_while_offline_are_dropped(
    tmp_path: Path,
) -> None:
    handler = RecordingHandler()
    with Broker(tmp_path / "broker") as broker:
        uplink_config = config(broker.port, commands={"offline_queue_s": 0})
        await run_until_handled(uplink_config, tmp_path, handler, "before")
        await send_command(broker.port, "while-offline")
        await run_until_handled(uplink_config, tmp_path, handler, "after")
    # The broker delivers a queued command before anything sent after the connect, so had
    # it been kept it would be in the list by the time "after" was handled.
    assert "while-offline" not in handler.ids


@pytest.mark.asyncio
async def test_a_broker_that_refuses_mqtt5_gets_mqtt311_and_every_record(tmp_path: Path) -> None:
    with Mqtt311Broker(tmp_path / "broker") as broker, Outbox(tmp_path) as outbox:
        received: list[dict[str, Any]] = []
        ready = asyncio.Event()

        async def subscriber() -> None:
            async with aiomqtt.Client(
                "127.0.0.1", broker.port, protocol=aiomqtt.ProtocolVersion.V311
            ) as client:
                await client.subscribe(f"{TOPICS.base}/alarms", qos=1)
                ready.set()
                async for message in client.messages:
                    assert isinstance(message.payload, bytes)
                    received.append(json.loads(message.payload))

        listening = asyncio.create_task(subscriber())
        await eventually(ready.is_set, 15.0, "the subscriber to connect")
        for i in range(5):
            outbox.append("alarms", {"kind": "door", "n": i}, priority=Priority.HIGH)
        uplink = MqttUplink(
            config(broker.port, connect_timeout_s=2),
            pole_id=POLE,
            outbox=outbox,
            base_dir=tmp_path,
        )
        async with uplink:
            await eventually(lambda: len(received) >= 5, 15.0, "five alarms at the subscriber")
            status = uplink.status()
        listening.cancel()
        with pytest.raises(asyncio.CancelledError):
            await listening
    assert [r["data"]["n"] for r in received] == [0, 1, 2, 3, 4]
    assert [r["seq"] for r in received] == [1, 2, 3, 4, 5]
    assert status["protocol"] == "3.1.1"
    assert status["connects"] == 1
    assert status["failures"] == 1  # the one unanswered MQTT 5 attempt, counted


@pytest.mark.asyncio
async def test_without_the_fallback_a_refusing_broker_is_a_counted_failure(
    tmp_path: Path,
) -> None:
    with Mqtt311Broker(tmp_path / "broker") as broker, Outbox(tmp_path) as outbox:
        outbox.append("alarms", {"kind": "door"}, priority=Priority.HIGH)
        uplink_config = config(broker.port, fallback_311=False, connect_timeout_s=1)
        uplink = MqttUplink(uplink_config, pole_id=POLE, outbox=outbox, base_dir=tmp_path)
        async with uplink:
            await eventually(lambda: uplink.failures >= 3, 15.0, "three failed attempts")
            status = uplink.status()
        assert status["protocol"] == "5"
        assert status["connects"] == 0
        assert status["last_error"] == "Operation timed out"
        assert outbox.stats()["alarms"]["count"] == 1  # nothing lost, nothing sent
