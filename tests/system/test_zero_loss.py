"""Zero loss: SIGKILL the agent again and again while the broker is down, then bring it back.

A real platform-side subscriber (persistent MQTT 5 session, QoS 1) listens from the start.
Before each kill the test reads what the agent appended straight from the outbox file
(read-only); at the end every one of those records must have arrived, exactly once after
de-duplication by (epoch, stream, seq), with the payload that was appended.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
import yaml
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from helpers.broker import Broker
from helpers.processes import Proc, pole_config
from helpers.waiting import wait_until

Key = tuple[str, str, int]


class Platform:
    """The city platform's subscriber: a persistent session that survives broker restarts."""

    def __init__(self, port: int) -> None:
        self.lock = threading.Lock()
        self.received: dict[Key, list[Any]] = {}
        self.messages = 0
        self.client = paho.Client(
            paho.CallbackAPIVersion.VERSION2, client_id="platform", protocol=paho.MQTTv5
        )
        self.client.reconnect_delay_set(min_delay=0.05, max_delay=0.2)
        self.client.on_message = self._on_message
        self.client.on_connect = self._on_connect
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = 3600
        self.client.connect("127.0.0.1", port, clean_start=False, properties=properties)
        self.client.loop_start()

    def _on_connect(self, client: paho.Client, *_args: Any) -> None:
        client.subscribe("smartpole/v1/test-pole/#", qos=1)

    def _on_message(self, _client: paho.Client, _userdata: Any, message: Any) -> None:
        if message.topic.endswith("/state"):
            return
        data = json.loads(message.payload)
        key = (data["epoch"], data["stream"], data["seq"])
        with self.lock:
            self.messages += 1
            self.received.setdefault(key, []).append(data["data"])

    def keys(self) -> set[Key]:
        with self.lock:
            return set(self.received)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def read_outbox(state: Path) -> tuple[dict[Key, Any], dict[str, int]]:
    """Every record waiting in the outbox file, and each stream's last sequence number."""
    uri = f"file:{state / 'outbox.sqlite3'}?mode=ro"
    with sqlite3.connect(uri, uri=True) as db:
        epoch = db.execute("SELECT value FROM meta WHERE key = 'epoch'").fetchone()[0]
        rows = db.execute("SELECT stream, seq, payload FROM records").fetchall()
        last = dict(db.execute("SELECT stream, last_seq FROM streams").fetchall())
    db.close()
    return {(epoch, s, q): json.loads(p) for s, q, p in rows}, {"epoch": epoch, **last}


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    with Broker(tmp_path / "broker") as running:
        yield running


def run_kills(
    tmp_path: Path,
    broker: Broker,
    simulator: Callable[..., Proc],
    daemon: Callable[..., Proc],
    kills: int,
) -> None:
    config = pole_config(tmp_path)
    data = yaml.safe_load(config.read_text())
    data["uplink"] = {
        "host": "127.0.0.1",
        "port": broker.port,
        "backoff": {"initial_s": 0.1, "max_s": 0.3, "jitter": 0.3},
        "idle_poll_s": 0.05,
        "replay_rate_per_s": 500,
        "telemetry": {"flush_interval_s": 0.1, "integrity_period_s": 1.0},
    }
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    state = tmp_path / "state"
    platform = Platform(broker.port)
    try:
        sim = simulator(config)
        start = lambda: daemon(config, "--bus-port", f"rs485-1={sim.extra['rs485-1']}")  # noqa: E731
        proc = start()
        expected: dict[Key, Any] = {}
        last: dict[str, Any] = {}
        for _ in range(kills):
            wait_until(lambda: platform.keys(), 10, "the first records at the platform")
            broker.stop()
            target = read_outbox(state)[1]["telemetry"] + 5
            # Records accumulate while the broker is away.
            wait_until(
                lambda: read_outbox(state)[1].get("telemetry", 0) >= target,  # noqa: B023
                10,
                "records appended during the outage",
            )
            records, last = read_outbox(state)
            expected.update(records)
            proc.process.send_signal(signal.SIGKILL)
            proc.process.wait()
            proc = start()
            broker.start()
        epoch = last["epoch"]
        must_arrive = {
            (epoch, stream, seq)
            for stream, top in last.items()
            if stream != "epoch"
            for seq in range(1, top + 1)
        }
        wait_until(lambda: must_arrive <= platform.keys(), 30, "every record at the platform")
        with platform.lock:
            received = {key: list(values) for key, values in platform.received.items()}
        for key, payload in expected.items():
            copies = received[key]
            assert all(copy == payload for copy in copies), (key, copies, payload)
        # Duplicates only ever repeat the same record (sequence numbers are never reused).
        for key, copies in received.items():
            assert all(copy == copies[0] for copy in copies), key
        assert len(expected) >= 5 * kills
        print(f"zero-loss: {kills} kills, {len(must_arrive)} records must arrive, "
              f"{len(expected)} read from the file before kills, {platform.messages} messages, "
              f"{platform.messages - len(received)} duplicates dropped")  # fmt: skip
        proc.stop()
    finally:
        platform.close()


def test_zero_loss_across_sigkills_during_broker_outages(
    tmp_path: Path, broker: Broker, simulator: Callable[..., Proc], daemon: Callable[..., Proc]
) -> None:
    run_kills(tmp_path, broker, simulator, daemon, kills=3)


@pytest.mark.soak
@pytest.mark.timeout(900)
def test_zero_loss_soak(
    tmp_path: Path, broker: Broker, simulator: Callable[..., Proc], daemon: Callable[..., Proc]
) -> None:
    run_kills(tmp_path, broker, simulator, daemon, kills=25)
