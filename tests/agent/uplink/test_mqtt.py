"""The MQTT uplink against a real Mosquitto: order, replay rate, TLS, birth and last will."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import jsonschema
import pytest
import pytest_asyncio
import yaml

from helpers.broker import Broker
from helpers.paths import REPO
from helpers.processes import Proc, api, pole_config
from helpers.waiting import eventually, wait_until
from smartpole.agent.buses.mcu.events import event_payload
from smartpole.agent.config.uplink import UplinkConfig
from smartpole.agent.core.outbox import Outbox, Priority
from smartpole.agent.core.point_meta import PointMeta
from smartpole.agent.uplink.meta import DeviceInfo, build_meta
from smartpole.agent.uplink.mqtt import MqttUplink
from smartpole.agent.uplink.session import SessionCounter
from smartpole.drivers.mcu.codes import EventKind
from smartpole.drivers.mcu.results import McuEvent

SCHEMAS = REPO / "schemas" / "uplink"
TOPIC_SCHEMA = {
    "state": "state",
    "meta": "meta",
    "telemetry": "telemetry",
    "alarms": "alarm",
    "traffic": "traffic",
    "events": "event",
    "cmd/result": "command-result",
}


def schema_for(topic: str) -> dict[str, Any]:
    suffix = topic.split("/", 3)[3]
    return json.loads((SCHEMAS / f"{TOPIC_SCHEMA[suffix]}.schema.json").read_text())


def mcu_event(n: int) -> dict[str, object]:
    """An MCU event as the pole queues it (the events schema checks its shape)."""
    event = McuEvent(7, n + 1, EventKind.DOOR_OPEN, 0, 10 * n, None, pushed=True)
    return event_payload(event, "mcu")


def validate(topic: str, payload: dict[str, Any]) -> None:
    jsonschema.validate(payload, schema_for(topic))


def summary(n: int) -> dict[str, Any]:
    """A traffic summary in the shape the camera supervisor records."""
    return {"camera": "cam1", "interval_start": float(n), "interval_s": 1.0, "lines": {},
            "speed_kmh": {}, "zones": {}, "queue": {}, "events": [],
            "quality": {"fps": 1.0, "frames": 1, "dropped": 0, "state": "ok"}}  # fmt: skip


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    with Broker(tmp_path / "broker") as running:
        yield running


@pytest.fixture
def tls_broker(tmp_path: Path) -> Iterator[Broker]:
    with Broker(tmp_path / "tls-broker", tls=True, require_client_cert=True) as running:
        yield running


class Subscriber:
    """A real MQTT client that records every message under smartpole/v1/#."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.messages: list[tuple[float, str, dict[str, Any], bool]] = []

    async def run(self, ready: asyncio.Event) -> None:
        async with aiomqtt.Client("127.0.0.1", self.port, identifier=f"sub-{id(self)}") as client:
            await client.subscribe("smartpole/v1/#", qos=1)
            ready.set()
            async for message in client.messages:
                assert isinstance(message.payload, bytes)
                payload = json.loads(message.payload)
                validate(str(message.topic), payload)
                self.messages.append(
                    (time.monotonic(), str(message.topic), payload, message.retain)
                )

    def on(self, suffix: str) -> list[dict[str, Any]]:
        return [p for _, t, p, _ in self.messages if t.endswith("/" + suffix)]


@pytest_asyncio.fixture
async def subscribe() -> AsyncIterator[Callable[[int], Any]]:
    tasks: list[asyncio.Task[None]] = []

    async def start(port: int) -> Subscriber:
        subscriber = Subscriber(port)
        ready = asyncio.Event()
        tasks.append(asyncio.create_task(subscriber.run(ready)))
        waiter = asyncio.create_task(ready.wait())
        done, _ = await asyncio.wait({waiter, tasks[-1]}, timeout=10, return_when="FIRST_COMPLETED")
        if tasks[-1] in done:
            tasks[-1].result()
        assert waiter in done, "the subscriber did not connect"
        return subscriber

    yield start
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
            await task


def uplink_config(port: int, **extra: Any) -> UplinkConfig:
    settings: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": port,
        "backoff": {"initial_s": 0.2, "max_s": 0.5, "jitter": 0.0},
        "replay_rate_per_s": 1000,
        "replay_burst": 100,
        "idle_poll_s": 0.05,
        **extra,
    }
    return UplinkConfig.model_validate(settings)


@pytest.mark.asyncio
async def test_every_alarm_and_traffic_record_arrives_in_order(
    tmp_path: Path, broker: Broker, subscribe: Callable[[int], Any]
) -> None:
    subscriber = await subscribe(broker.port)
    with Outbox(tmp_path) as outbox:
        for i in range(40):
            outbox.append(
                "alarms",
                {"type": "raised", "alarm_id": f"w{i}/k", "source": f"w{i}", "kind": "k",
                 "severity": "major", "at": 1.0 * i, "value": i, "actor": None, "reason": None},
                priority=Priority.HIGH,
            )  # fmt: skip
            outbox.append("traffic", summary(i), priority=Priority.NORMAL)
        uplink = MqttUplink(
            uplink_config(broker.port), pole_id="p1", outbox=outbox, base_dir=tmp_path
        )
        async with uplink:
            await eventually(lambda: len(subscriber.on("traffic")) >= 40, what="all records")
            await eventually(lambda: outbox.stats()["traffic"]["count"] == 0, what="acks")
            status = uplink.status()
        assert outbox.stats()["alarms"]["count"] == 0
    assert [m["seq"] for m in subscriber.on("alarms")] == list(range(1, 41))
    assert [m["seq"] for m in subscriber.on("traffic")] == list(range(1, 41))
    assert [m["data"]["interval_start"] for m in subscriber.on("traffic")] == list(range(40))
    # Urgent streams go first: every alarm before the first traffic summary.
    topics = [t.rsplit("/", 1)[1] for _, t, _, _ in subscriber.messages]
    topics = [t for t in topics if t not in ("state", "meta")]
    assert topics.index("traffic") == 40
    assert status["state"] == "connected"
    assert status["acked"] == 80
    assert status["connects"] == 1
    assert subscriber.on("state")[0]["state"] == "online"


@pytest.mark.asyncio
async def test_backlog_is_replayed_at_the_bounded_rate_after_an_outage(
    tmp_path: Path, broker: Broker, subscribe: Callable[[int], Any]
) -> None:
    rate, burst, count = 40.0, 10, 60
    config = uplink_config(broker.port, replay_rate_per_s=rate, replay_burst=burst)
    with Outbox(tmp_path) as outbox:
        uplink = MqttUplink(config, pole_id="p2", outbox=outbox, base_dir=tmp_path)
        async with uplink:
            await eventually(lambda: uplink.state == "connected", what="connected")
            broker.stop()
            await eventually(lambda: uplink.failures >= 1, what="a counted failure")
            for i in range(count):
                outbox.append("events", mcu_event(i), priority=Priority.HIGH)
            broker.start()
            subscriber = await subscribe(broker.port)
            await eventually(lambda: len(subscriber.on("events")) >= count, 15, "the backlog")
            status = uplink.status()
    arrivals = [at for at, topic, _, _ in subscriber.messages if topic.endswith("/events")]
    span = arrivals[-1] - arrivals[0]
    # The first `burst` go back to back, the rest at `rate` per second.
    assert span >= (count - burst) / rate * 0.9, span
    assert span <= (count - burst) / rate * 2.0 + 1.0, span
    assert [m["seq"] for m in subscriber.on("events")] == list(range(1, count + 1))
    assert status["connects"] == 2
    assert status["failures"] >= 1
    assert status["last_error"]


@pytest.mark.asyncio
async def test_tls_with_server_verification_and_client_certificate(
    tmp_path: Path, tls_broker: Broker, subscribe: Callable[[int], Any]
) -> None:
    certs = tls_broker.certs
    assert certs is not None
    assert tls_broker.tls_port is not None
    subscriber = await subscribe(tls_broker.port)  # the plain listener, for the test
    tls = {"ca_file": str(certs.ca), "cert_file": str(certs.client_cert),
           "key_file": str(certs.client_key)}  # fmt: skip
    config = uplink_config(tls_broker.tls_port, tls=tls)
    with Outbox(tmp_path) as outbox:
        outbox.append("events", mcu_event(1), priority=Priority.HIGH)
        uplink = MqttUplink(config, pole_id="tls-pole", outbox=outbox, base_dir=tmp_path)
        async with uplink:
            await eventually(lambda: subscriber.on("events"), what="a record over TLS")
            assert uplink.status()["tls"] is True
            assert uplink.failures == 0


@pytest.mark.asyncio
async def test_a_wrong_ca_is_a_counted_clear_error_not_a_crash(
    tmp_path: Path, tls_broker: Broker
) -> None:
    certs = tls_broker.certs
    assert certs is not None
    assert tls_broker.tls_port is not None
    tls = {"ca_file": str(certs.other_ca), "cert_file": str(certs.client_cert),
           "key_file": str(certs.client_key)}  # fmt: skip
    config = uplink_config(tls_broker.tls_port, tls=tls)
    with Outbox(tmp_path) as outbox:
        outbox.append("events", mcu_event(1), priority=Priority.HIGH)
        uplink = MqttUplink(config, pole_id="tls-pole", outbox=outbox, base_dir=tmp_path)
        async with uplink:
            await eventually(lambda: uplink.failures >= 2, what="repeated counted failures")
            status = uplink.status()
        assert outbox.stats()["events"]["count"] == 1  # nothing lost
    assert status["state"] in ("backoff", "connecting")
    assert status["connects"] == 0
    assert "certificate verify failed" in str(status["last_error"]).lower(), status
    assert str(status["last_error"]).startswith("TLS")


@pytest.mark.asyncio
async def test_missing_credentials_file_is_counted_and_secret_never_logged(
    tmp_path: Path, broker: Broker, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "user").write_text("pole-user\n")
    missing = "does-not-exist"
    config = uplink_config(broker.port, username_file="user", password_file=missing)
    with Outbox(tmp_path) as outbox:
        uplink = MqttUplink(config, pole_id="p3", outbox=outbox, base_dir=tmp_path)
        async with uplink:
            await eventually(lambda: uplink.failures >= 1, what="a counted failure")
        assert "cannot read password_file" in str(uplink.last_error)
    (tmp_path / "does-not-exist").write_text("s3cret-value\n")
    with Outbox(tmp_path) as outbox:
        uplink = MqttUplink(config, pole_id="p3", outbox=outbox, base_dir=tmp_path)
        async with uplink:
            await eventually(lambda: uplink.state == "connected", what="connected")
    assert "s3cret-value" not in capsys.readouterr().err


# -- the real daemon: birth message and retained last will -------------------------------


def uplink_pole(tmp_path: Path, port: int, **uplink: Any) -> Path:
    path = pole_config(tmp_path)
    data = yaml.safe_load(path.read_text())
    data["uplink"] = {
        "host": "127.0.0.1",
        "port": port,
        "backoff": {"initial_s": 0.2, "max_s": 0.5, "jitter": 0.2},
        "idle_poll_s": 0.05,
        "telemetry": {"flush_interval_s": 0.2},
        **uplink,
    }
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def retained_state(port: int, suffix: str = "state") -> dict[str, Any] | None:
    """What a platform that connects now sees as the pole's state (the retained message)."""
    import paho.mqtt.client as paho

    seen: list[dict[str, Any]] = []
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    client.on_message = lambda _c, _u, message: seen.append(json.loads(message.payload))
    client.connect("127.0.0.1", port)
    client.subscribe(f"smartpole/v1/test-pole/{suffix}", qos=1)
    deadline = time.monotonic() + 3.0
    while not seen and time.monotonic() < deadline:
        client.loop(timeout=0.05)
    client.disconnect()
    return seen[0] if seen else None


def test_birth_and_retained_last_will_when_the_agent_is_killed(
    tmp_path: Path, broker: Broker, simulator: Callable[..., Proc], daemon: Callable[..., Proc]
) -> None:
    """The birth and the will of one connection carry one session number, the retained meta
    names it too, telemetry names the meta's hash, and a restart takes a higher number."""
    config = uplink_pole(tmp_path, broker.port)
    sim = simulator(config)
    bus = ("--bus-port", f"rs485-1={sim.extra['rs485-1']}")
    proc = daemon(config, *bus)
    online = wait_until(
        lambda: (s := retained_state(broker.port)) and s["state"] == "online" and s, 10, "birth"
    )
    jsonschema.validate(online, schema_for("smartpole/v1/test-pole/state"))
    meta = retained_state(broker.port, "meta")
    assert meta is not None, "no retained meta"
    jsonschema.validate(meta, schema_for("smartpole/v1/test-pole/meta"))
    assert (meta["session"], meta["hash"]) == (online["session"], online["meta"])
    assert set(meta["devices"]["weather"]["points"]) >= {"wind_speed", "temperature"}
    telemetry = wait_until(lambda: retained_state(broker.port, "telemetry"), 10, "telemetry")
    jsonschema.validate(telemetry, schema_for("smartpole/v1/test-pole/telemetry"))
    assert telemetry["data"]["meta"] == meta["hash"]
    status = wait_until(lambda: (s := api(proc, "uplink"))["acked"] > 0 and s, 10, "telemetry")
    assert status["state"] == "connected"
    assert status["session"] == online["session"]
    assert status["backlog"]["telemetry"]["count"] <= 5
    proc.process.send_signal(signal.SIGKILL)
    proc.process.wait()
    offline = wait_until(
        lambda: (s := retained_state(broker.port)) and s["state"] == "offline" and s, 10, "will"
    )
    assert offline == {
        "state": "offline", "pole": "test-pole", "session": online["session"],
        "reason": "connection lost",
    }  # fmt: skip
    jsonschema.validate(offline, schema_for("smartpole/v1/test-pole/state"))
    daemon(config, *bus)  # the same state directory: the number goes on from the file
    again = wait_until(
        lambda: (s := retained_state(broker.port)) and s["state"] == "online" and s, 10, "rebirth"
    )
    assert again["session"] > online["session"]
    assert again["meta"] == online["meta"]  # the same configuration, the same hash


class Relay:
    """A TCP relay between the uplink and the broker. ``cut()`` drops every connection at
    once, without a DISCONNECT: to the broker, a lost link (it publishes the last will)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Relay:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        self.cut()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers += [writer, up_writer]
        await asyncio.gather(
            _pipe(reader, up_writer), _pipe(up_reader, writer), return_exceptions=True
        )

    def cut(self) -> None:
        for writer in self._writers:
            writer.transport.abort()
        self._writers.clear()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


@pytest.mark.asyncio
async def test_meta_is_retained_before_each_birth_and_a_will_pairs_with_its_birth(
    tmp_path: Path, broker: Broker, subscribe: Callable[[int], Any]
) -> None:
    subscriber = await subscribe(broker.port)  # validates every message by its schema
    described = [
        ("meter", "voltage", "V", PointMeta(type="number", wire="f32", resolution=0.1)),
        ("meter", "relay", "", PointMeta(type="boolean", wire="bool", access="rw")),
    ]
    info = DeviceInfo("eastron-sdm120", "modbus", "SDM120", "Eastron", "rs485-1")
    meta = build_meta(described, {"meter": info})
    sessions = SessionCounter(tmp_path / "state-dir")
    (tmp_path / "state-dir").mkdir()
    async with Relay(broker.port) as relay:
        with Outbox(tmp_path) as outbox:
            uplink = MqttUplink(
                uplink_config(relay.port), pole_id="test-pole", outbox=outbox,
                base_dir=tmp_path, meta=meta, sessions=sessions,
            )  # fmt: skip
            async with uplink:
                await eventually(lambda: subscriber.on("state"), what="the first birth")
                relay.cut()  # the link dies: the broker publishes the will
                await eventually(lambda: len(subscriber.on("state")) >= 3, what="will, rebirth")
                late = await subscribe(broker.port)  # a platform that connects now
                await eventually(lambda: late.on("meta") and late.on("state"), what="retained")
                # Before the clean stop's "shutdown" arrives.
                messages, late_messages = list(subscriber.messages), list(late.messages)
    on_state = [(t.rsplit("/", 1)[1], p) for _, t, p, _ in messages]
    on_state = [(t, p) for t, p in on_state if t in ("meta", "state")]
    # In order: meta 1, birth 1, will 1, meta 2, birth 2.
    assert [(t, p["session"], p.get("state")) for t, p in on_state] == [
        ("meta", 1, None), ("state", 1, "online"), ("state", 1, "offline"),
        ("meta", 2, None), ("state", 2, "online"),
    ]  # fmt: skip
    assert on_state[2][1] == {
        "state": "offline", "pole": "test-pole", "session": 1, "reason": "connection lost"
    }  # fmt: skip
    births = [p for t, p in on_state if p.get("state") == "online"]
    assert {b["meta"] for b in births} == {meta.hash}
    assert on_state[0][1]["devices"]["meter"]["points"]["voltage"]["resolution"] == 0.1
    # What a platform connecting later finds: the retained meta and birth of session 2.
    retained = {t.rsplit("/", 1)[1]: (p, r) for _, t, p, r in late_messages}
    assert retained["meta"][1], "the meta is retained"
    assert retained["state"][1], "the birth is retained"
    assert (retained["meta"][0]["session"], retained["state"][0]["session"]) == (2, 2)
    assert retained["meta"][0]["hash"] == meta.hash
    assert SessionCounter(tmp_path / "state-dir").next() == 3  # persisted
