"""The V2X publisher against a real Mosquitto, read by an independent paho subscriber.

What arrives is checked with ``jsonschema`` against schemas/v2x/; a broker outage (stop,
start on the same port) shows that messages offered while it is away are dropped, counted
and never delivered later, and that the outage is logged once when it starts and once when
it clears however many reconnect attempts fail in between.
"""

from __future__ import annotations

import json
import queue
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from helpers.broker import Broker
from helpers.paths import REPO
from helpers.road_users import participant
from smartpole.models.roadside import Participant, RoadsideEvent
from smartpole.models.v2x_messages import V2xMessages, topic
from smartpole.models.v2x_publisher import V2xPublisher, percentile

WAIT_S = 10.0


def schema(name: str) -> jsonschema.Draft202012Validator:
    loaded = json.loads((REPO / "schemas" / "v2x" / name).read_text())
    return jsonschema.Draft202012Validator(loaded)


class Subscriber:
    """A plain paho client that is not ours: it sees what the broker delivers."""

    def __init__(self, port: int) -> None:
        self.received: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.subscribed = threading.Event()
        client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="rsu")
        client.on_connect = self._on_connect
        client.on_subscribe = lambda *_: self.subscribed.set()
        client.on_disconnect = lambda *_: self.subscribed.clear()
        client.on_message = lambda _c, _u, m: self.received.put((m.topic, m.payload))
        client.reconnect_delay_set(1, 1)
        client.connect_async("127.0.0.1", port)
        client.loop_start()
        self.client = client

    def _on_connect(self, client: mqtt.Client, *_: Any) -> None:
        client.subscribe("V2X/RSU/+/#", qos=0)

    def take(self, count: int) -> list[tuple[str, Any]]:
        return [self._one() for _ in range(count)]

    def _one(self) -> tuple[str, Any]:
        got_topic, raw = self.received.get(timeout=WAIT_S)
        return got_topic, json.loads(raw)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@dataclass
class Recorder:
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def info(self, event: str, **kw: Any) -> None:
        self.events.append((event, kw))

    def warning(self, event: str, **kw: Any) -> None:
        self.events.append((event, kw))

    def named(self, name: str) -> list[dict[str, Any]]:
        return [kw for event, kw in self.events if event == name]


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    with Broker(tmp_path / "rsu-broker") as running:
        yield running


@pytest.fixture
def subscriber(broker: Broker) -> Iterator[Subscriber]:
    listening = Subscriber(broker.port)
    assert listening.subscribed.wait(WAIT_S)
    yield listening
    listening.close()


def car(track_id: int, east_m: float) -> Participant:
    return participant(track_id, east_m=east_m, north_m=20.0, t_s=5.0, measured_t_s=5.0)


def builder() -> V2xMessages:
    return V2xMessages(
        "R0001",
        lambda east, north: (23.1 + north / 111_320, 113.3 + east / 102_400),
        source_id="pole-7-cam1",
    )


def test_published_rsm_and_rsi_arrive_follow_the_schema_and_the_rsm_are_timed(
    broker: Broker, subscriber: Subscriber
) -> None:
    """The RSI goes untimed (``captured_s=None``, as the worker sends events): sent and
    counted, but not in the percentiles, which a capture time of 0 would once wreck."""
    messages = builder()
    log = Recorder()
    with V2xPublisher("127.0.0.1", broker.port, client_id="pole-7-cam1", log=log) as publisher:
        assert publisher.wait(connected=True, timeout=WAIT_S)
        rsm_topic, rsi_topic = topic("R0001", "RSM", None), topic("R0001", "RSI", "dawnline")
        for i in range(20):
            built = messages.rsm(
                [car(1, i), car(2, -i)], epoch_ms=1_796_000_000_000 + i * 100, t_s=5.0
            )
            assert built.payload is not None
            # The frame was captured 50 ms before the message is offered.
            assert publisher.publish(rsm_topic, built.payload, captured_s=time.monotonic() - 0.05)
        event = RoadsideEvent(
            kind="wrong_way",
            state="active",
            event_id=3,
            zone="lane-1",
            t_s=5.0,
            started_t_s=4.2,
            east_m=3.0,
            north_m=40.0,
            track_id=1,
        )
        [rsi] = messages.rsi([event], epoch_ms=1_796_000_002_000, t_s=5.0)
        assert publisher.publish(rsi_topic, rsi, captured_s=None)
        arrived = subscriber.take(21)
        stats = publisher.stats()
    rsm_schema, rsi_schema = schema("rsm.schema.json"), schema("rsi.schema.json")
    rsms = [payload for got, payload in arrived if got == rsm_topic]
    rsis = [payload for got, payload in arrived if got == rsi_topic]
    assert [m["msgCnt"] for m in rsms] == list(range(20))
    for payload in rsms:
        assert list(rsm_schema.iter_errors(payload)) == []
    assert len(rsis) == 1
    assert list(rsi_schema.iter_errors(rsis[0])) == []
    assert (stats.sent, stats.dropped, stats.errors) == (21, 0, 0)
    assert stats.latency_samples == 20
    assert stats.latency_p50_ms is not None
    assert stats.latency_p99_ms is not None
    # From capture: at least the 50 ms the frame waited, and loopback adds little.
    assert 50.0 <= stats.latency_p50_ms < 1000.0
    assert stats.latency_p50_ms <= stats.latency_p99_ms
    assert log.events == []  # no outage, nothing to say


def test_an_outage_drops_and_counts_never_delivers_late_and_logs_twice(
    broker: Broker, subscriber: Subscriber
) -> None:
    log = Recorder()
    rsm_topic = topic("R0001", "RSM", None)

    def offer(publisher: V2xPublisher, seq: int) -> bool:
        return publisher.publish(rsm_topic, {"seq": seq}, captured_s=time.monotonic())

    with V2xPublisher(
        "127.0.0.1", broker.port, client_id="pole-7-cam1", backoff_s=(1, 1), log=log
    ) as publisher:
        assert publisher.wait(connected=True, timeout=WAIT_S)
        assert all(offer(publisher, seq) for seq in range(5))
        before = [payload["seq"] for _, payload in subscriber.take(5)]

        broker.stop()
        # Down, and at least two reconnect attempts failed: one outage all the same.
        assert publisher.wait(connected=False, failures=2, timeout=WAIT_S)
        during = [offer(publisher, seq) for seq in range(5, 15)]
        assert during == [False] * 10
        assert publisher.stats().dropped == 10

        broker.start()
        assert publisher.wait(connected=True, timeout=WAIT_S)
        assert subscriber.subscribed.wait(WAIT_S)
        assert all(offer(publisher, seq) for seq in range(15, 20))
        after = [payload["seq"] for _, payload in subscriber.take(5)]
        stats = publisher.stats()

    assert before == [0, 1, 2, 3, 4]
    # Nothing offered during the outage arrived later, before or among the new ones.
    assert after == [15, 16, 17, 18, 19]
    assert subscriber.received.empty()
    assert (stats.sent, stats.dropped, stats.outages) == (10, 10, 1)
    assert stats.connect_failures >= 2
    assert [event for event, _ in log.events] == ["v2x_broker_down", "v2x_broker_up"]
    assert log.named("v2x_broker_up")[0]["dropped"] == 10


def test_a_broker_down_at_start_is_one_outage_and_publishing_starts_when_it_comes(
    tmp_path: Path,
) -> None:
    broker = Broker(tmp_path / "late-broker")  # not started yet
    log = Recorder()
    with V2xPublisher(
        "127.0.0.1", broker.port, client_id="pole-7-cam1", backoff_s=(1, 1), log=log
    ) as publisher:
        assert publisher.wait(connected=False, failures=1, timeout=WAIT_S)
        assert not publisher.publish("V2X/RSU/R0001/RSM/UP", {"seq": 0}, captured_s=0.0)
        with broker:
            assert publisher.wait(connected=True, timeout=WAIT_S)
            listening = Subscriber(broker.port)
            try:
                assert listening.subscribed.wait(WAIT_S)
                assert publisher.publish(
                    "V2X/RSU/R0001/RSM/UP", {"seq": 1}, captured_s=time.monotonic()
                )
                assert listening.take(1)[0][1] == {"seq": 1}
            finally:
                listening.close()
            stats = publisher.stats()
            events = [event for event, _ in log.events]
    assert (stats.dropped, stats.outages) == (1, 1)
    assert events == ["v2x_broker_down", "v2x_broker_up"]


def test_leaving_the_context_stops_the_network_thread(broker: Broker) -> None:
    before = {t.ident for t in threading.enumerate()}
    with V2xPublisher("127.0.0.1", broker.port, client_id="pole-7-cam1") as publisher:
        assert publisher.wait(connected=True, timeout=WAIT_S)
        assert {t.ident for t in threading.enumerate()} - before
    assert {t.ident for t in threading.enumerate()} <= before
    assert not publisher.stats().connected


def test_what_cannot_be_encoded_is_an_error_not_a_drop(broker: Broker) -> None:
    with V2xPublisher("127.0.0.1", broker.port, client_id="pole-7-cam1") as publisher:
        assert publisher.wait(connected=True, timeout=WAIT_S)
        assert not publisher.publish("V2X/RSU/R0001/RSM/UP", {"x": float("nan")}, captured_s=0.0)
        stats = publisher.stats()
    assert (stats.errors, stats.dropped, stats.sent) == (1, 0, 0)


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile([7.0], 99) == 7.0


def test_a_broker_that_stops_reading_costs_drops_not_a_growing_queue() -> None:
    """A broker that accepts the connection and then reads nothing: the socket fills, paho's
    writes wait, and past ``max_in_flight`` waiting messages new ones are dropped."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        accepted: list[socket.socket] = []

        def stalled_broker() -> None:
            conn, _ = server.accept()
            accepted.append(conn)
            conn.recv(1024)  # the CONNECT (small, one read)
            conn.sendall(b"\x20\x02\x00\x00")  # CONNACK, accepted; then never read again

        thread = threading.Thread(target=stalled_broker, daemon=True)
        thread.start()
        big = b"x" * 1_000_000
        with V2xPublisher("127.0.0.1", port, client_id="pole-7-cam1", max_in_flight=4) as publisher:
            assert publisher.wait(connected=True, timeout=WAIT_S)
            offered = [
                publisher.publish("V2X/RSU/R0001/RSM/UP", big, captured_s=time.monotonic())
                for _ in range(200)
            ]
            stats = publisher.stats()
            closing = time.monotonic()
        # Leaving does not wait for the keepalive (15 s) to notice the stalled broker.
        assert time.monotonic() - closing < 5.0
        thread.join(WAIT_S)
        for conn in accepted:
            conn.close()
    # Some went before the socket filled; then at most 4 waited and the rest were dropped.
    assert offered.count(True) <= stats.sent + 4
    assert stats.dropped >= 200 - stats.sent - 4
    assert stats.dropped > 100
