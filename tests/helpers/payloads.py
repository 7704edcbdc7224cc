"""What the payload contract tests share: an outbox that only records what the builders
append (encoded as the outbox stores it), and the uplink's own envelope code publishing
those records into a fake MQTT client, so a test sees each message as the platform would.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from helpers.contract import errors, topic_of
from smartpole.agent.config.uplink import UplinkConfig
from smartpole.agent.core.outbox_types import OutboxRecord, encode
from smartpole.agent.uplink.mqtt import MqttUplink

POLE = "pole-7"
EPOCH = "0123456789abcdef"
NAMES = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_.-]{0,15}\Z")
KINDS = st.from_regex(r"\A[a-z][a-z0-9_]{0,20}\Z")
TIMES = st.floats(0, 4e9)
FINITE = st.floats(allow_nan=False, allow_infinity=False)


class Capture:
    """The outbox as the builders see it: ``append`` stores the record as the outbox does
    (``encode``), nothing else."""

    epoch = EPOCH
    available = True  # the file works: what is appended is on it

    def __init__(self) -> None:
        self.records: list[OutboxRecord] = []

    def append(self, stream: str, payload: Any, *, priority: int) -> int:
        seq = len(self.records) + 1
        self.records.append(
            OutboxRecord(stream, seq, priority, 1.7e9, encode(stream, payload), EPOCH)
        )
        return seq

    def flush(self) -> None:
        pass


class FakeClient:
    """The MQTT client the uplink publishes through: keeps (topic, payload)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []

    async def publish(self, topic: str, payload: bytes, **_: Any) -> None:
        self.sent.append((topic, payload))


def make_uplink(outbox: object = None, pole: str = POLE, protocol: str = "5") -> MqttUplink:
    config = UplinkConfig.model_validate({"host": "127.0.0.1", "protocol": protocol})
    return MqttUplink(config, pole_id=pole, outbox=outbox or Capture(), base_dir=Path("/"))  # type: ignore[arg-type]


def published(capture: Capture) -> list[tuple[str, Any]]:
    """Each captured record as the uplink publishes it: its topic and decoded payload."""
    uplink, client = make_uplink(capture), FakeClient()

    async def send() -> None:
        for record in capture.records:
            await uplink._publish_one(client, record)  # type: ignore[arg-type]

    asyncio.run(send())
    return [(topic, json.loads(payload)) for topic, payload in client.sent]


def check_all(capture: Capture) -> int:
    """Every published message validates against its topic's schema; how many there were."""
    messages = published(capture)
    for topic, payload in messages:
        schema = topic_of(topic, POLE).schema
        assert not errors(schema, payload), (topic, payload, errors(schema, payload))
    return len(messages)


def rejects(schema: str, payload: Any) -> bool:
    return bool(errors(schema, payload))


def envelope(stream: str, data: object) -> dict[str, Any]:
    return {"pole": POLE, "epoch": EPOCH, "stream": stream, "seq": 1, "ts": 1.0, "data": data}
