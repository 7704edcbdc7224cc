"""End to end: a camera worker on the street clip feeds a roadside unit's broker.

The worker runs as the supervisor starts it (``camera_worker.command`` with a ``v2x``
section), on the real clip paced in real time, with a geo-calibration and a zone whose
allowed direction is away from the camera, so every car driving towards it is a wrong-way
driver (an RSI event that starts, and is cancelled when the car has gone). The RSU side is
what we did not write: Mosquitto, a plain paho subscriber, and ``jsonschema`` against the
schemas in ``schemas/v2x/``, which are written from the standard and OpenV2X, not from
our code.
"""

from __future__ import annotations

import itertools
import json
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import jsonschema
import paho.mqtt.client as mqtt
import pytest

from helpers import street_geo
from helpers.broker import Broker
from helpers.paths import REPO, SHARED_DATA
from smartpole.agent.config.camera_worker import command, parse_line
from smartpole.agent.config.cameras import CameraConfig
from smartpole.agent.config.v2x import V2xConfig

CLIP = SHARED_DATA / "video" / "street-2lane-640x352.mp4"
SCHEMAS = REPO / "schemas" / "v2x"
RSU = "R328328"
RATE_HZ = 10.0
#: Enough of the clip for 5 cars to pass (the 5th crosses the line at frame 240, 10 s).
WANTED_RSM = 110
DEADLINE_S = 90.0

pytestmark = pytest.mark.skipif(not CLIP.is_file(), reason=f"shared test data is absent: {CLIP}")


@dataclass
class Received:
    rsm: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    rsi: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    other_topics: list[str] = field(default_factory=list)
    health: list[dict[str, Any]] = field(default_factory=list)
    worker_exit: int | None = None


def _cancelled(rsi: list[tuple[float, dict[str, Any]]]) -> bool:
    return any(_events_of(payload, active=False) for _, payload in rsi)


def _events_of(payload: dict[str, Any], *, active: bool) -> list[dict[str, Any]]:
    return [e for e in payload["event_content"] if e["event_status"] is active]


@pytest.fixture(scope="module")
def received(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Received]:
    folder = tmp_path_factory.mktemp("v2x")
    out = Received()
    arrived: queue.Queue[None] = queue.Queue()
    with Broker(folder / "broker") as broker:
        subscriber = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="rsu")

        def on_message(_c: object, _u: object, message: mqtt.MQTTMessage) -> None:
            now = time.monotonic()
            if message.topic == f"V2X/RSU/{RSU}/RSM/UP":
                out.rsm.append((now, json.loads(message.payload)))
            elif message.topic == f"V2X/RSU/{RSU}/RSI/UP/dawnline":
                out.rsi.append((now, json.loads(message.payload)))
            else:
                out.other_topics.append(message.topic)
            arrived.put(None)

        subscriber.on_message = on_message
        subscriber.connect("127.0.0.1", broker.port)
        subscriber.subscribe("#")
        subscriber.loop_start()
        camera = CameraConfig.model_validate(
            {
                "source": str(CLIP),
                "realtime": True,
                "lines": {"main": {"from": [150, 230], "to": [640, 230]}},
                "zones": {"road": street_geo.wrong_way_zone()},
                "calibration": street_geo.calibration(),
                "health_period_s": 1.0,
            }
        )
        v2x = V2xConfig.model_validate(
            {"host": "127.0.0.1", "port": broker.port, "rsu_id": RSU, "rate_hz": RATE_HZ}
        )
        argv = command(sys.executable, "street", camera, v2x=v2x)
        with (folder / "worker.log").open("w") as log:
            worker = subprocess.Popen(
                argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True
            )

        def read() -> None:
            assert worker.stdout is not None
            for raw in worker.stdout:
                message: Any = parse_line(raw)
                if message["type"] == "health":
                    out.health.append(message)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        deadline = time.monotonic() + DEADLINE_S
        try:
            while not (len(out.rsm) >= WANTED_RSM and _cancelled(out.rsi)):
                if worker.poll() is not None or time.monotonic() > deadline:
                    break
                try:
                    arrived.get(timeout=1.0)
                except queue.Empty:
                    continue
        finally:
            worker.terminate()
            out.worker_exit = worker.wait(timeout=30)
            reader.join(timeout=5)
            for pipe in (worker.stdin, worker.stdout):
                if pipe is not None:
                    pipe.close()
            subscriber.loop_stop()
            subscriber.disconnect()
    return out


def _validator(name: str) -> jsonschema.Draft202012Validator:
    schema = json.loads((SCHEMAS / name).read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


def test_rsm_messages_arrive_at_the_configured_rate(received: Received) -> None:
    assert len(received.rsm) >= WANTED_RSM, f"only {len(received.rsm)} RSM in {DEADLINE_S} s"
    assert received.other_topics == []
    times = [t for t, _ in received.rsm]
    rate = (len(times) - 1) / (times[-1] - times[0])
    assert rate == pytest.approx(RATE_HZ, rel=0.1)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert max(gaps) < 3 / RATE_HZ, "a pause of three periods or more"


def test_every_rsm_follows_the_schema_and_cars_are_in_it(received: Received) -> None:
    validator = _validator("rsm.schema.json")
    for _, payload in received.rsm:
        errors = [e.message for e in validator.iter_errors(payload)]
        assert not errors, errors
    participants = [
        p for _, m in received.rsm for r in m["content"]["rsms"] for p in r["participants"]
    ]
    assert participants, "no road user was ever reported"
    assert {p["ptcType"] for p in participants} >= {"motor"}
    # Every position lies on the calibrated street, within 200 m of the pole.
    origin_lat = street_geo.ORIGIN["latitude"] * 1e7
    assert all(abs(p["pos"]["lat"] - origin_lat) < 200 / 111_320 * 1e7 for p in participants)


def test_rsi_events_follow_the_schema_start_and_are_cancelled_once(received: Received) -> None:
    validator = _validator("rsi.schema.json")
    for _, payload in received.rsi:
        errors = [e.message for e in validator.iter_errors(payload)]
        assert not errors, errors
    started = {e["event_id"] for _, m in received.rsi for e in _events_of(m, active=True)}
    cancelled = [e["event_id"] for _, m in received.rsi for e in _events_of(m, active=False)]
    assert started, "no wrong-way event although every car drives towards the camera"
    assert cancelled, "no event was cancelled"
    assert len(cancelled) == len(set(cancelled)), "an event was cancelled twice"
    assert set(cancelled) <= started


def test_health_reports_the_latency_and_what_was_sent(received: Received) -> None:
    assert received.worker_exit == 0
    last = received.health[-1]["v2x"]
    assert last["state"] == "sending"
    assert last["sent"] >= len(received.rsm)
    assert last["dropped"] == 0
    assert last["latency_p50_ms"] is not None
    assert last["latency_p99_ms"] is not None
    assert 0 < last["latency_p50_ms"] <= last["latency_p99_ms"]
