"""The published contract, end to end, checked as an integrator would: the real daemon with
the simulated pole (Modbus lamp controller and weather station, PTZ head, the MCU emulator,
a camera on the shared street clip) against a real Mosquitto, every kind of message driven,
and an independent paho client subscribed to ``smartpole/v1/<pole>/#``.

Every payload it receives is validated with ``jsonschema`` (Draft 2020-12, format checking
on) against the schema that docs/uplink.md's topic table names for its topic; a topic the
table does not list fails the test. Commands are signed by the code below, written from the
algorithm docs/uplink.md states (the key is the key file's bytes without surrounding
whitespace; HMAC-SHA256 over the canonical JSON), not with the pole's signing code.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import re
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
import yaml

from helpers.broker import Broker
from helpers.contract import PREFIX, errors, topic_of
from helpers.paths import PROFILES, SHARED_DATA
from helpers.processes import Proc, api, bus_ports
from helpers.sim import mcu_outputs, sim_control
from helpers.waiting import wait_until

POLE = "contract-pole"
CLIP = SHARED_DATA / "video" / "street-2lane-640x352.mp4"
MODEL = SHARED_DATA / "models" / "yolox-nano-coco-416.onnx"
# Answers that mean the payload itself was malformed: the request schema refuses it too.
MALFORMED = {"too_large", "bad_json", "bad_schema", "unknown_command", "bad_args"}

pytestmark = pytest.mark.skipif(
    not CLIP.exists() or not MODEL.exists(), reason=f"shared test data not found in {SHARED_DATA}"
)


def _pole(tmp_path: Path, broker_port: int) -> Path:
    key_file = tmp_path / "pole.key"
    key_file.write_bytes(secrets.token_hex(32).encode() + b"\n")
    key_file.chmod(0o600)
    config = {
        "pole": {"id": POLE},
        "profiles_dir": str(PROFILES),
        "buses": {
            "rs485-1": {"type": "modbus-rtu", "port": "/dev/null", "timeout_s": 0.3},
            "ptz": {"type": "pelco-d", "port": "/dev/null", "timeout_s": 0.5},
            "cabinet-mcu": {
                "type": "pole-mcu",
                "port": "/dev/null",
                "heartbeat_s": 0.2,
                "fallback_after_s": 2,
                "relays": {"camera": {"channel": 2, "default_on": True}},
            },
        },
        "devices": {
            "lamp1": {
                "profile": "lamp-controller",
                "bus": "rs485-1",
                "unit_id": 1,
                "poll_period_s": 0.5,
            },
            "weather": {"profile": "cwt-uwd", "bus": "rs485-1", "unit_id": 2, "poll_period_s": 0.5},
            "ptz": {"profile": "pelco-d-ptz", "bus": "ptz", "address": "1"},
            "mcu": {"profile": "pole-mcu", "bus": "cabinet-mcu", "poll_period_s": 0.2},
        },
        "site": {"latitude": 23.13, "longitude": 113.26, "timezone": "UTC"},
        "lighting": {
            "lease_s": 30,
            "programs": {
                "flat": {
                    "default": "day",
                    "profiles": {
                        "day": [{"at": "12:00", "level": 60}, {"at": "11:59", "level": 0}]
                    },
                }
            },
            "assignments": {"lamp1": "flat"},
        },
        "alarms": {
            "door_open": {"severity": "major", "raise_when": True, "sources": ["mcu.door_open"]}
        },
        "power": {"ptz": {"relay": "mcu.camera", "off_s": 0.5}},
        "cameras": {
            "street": {
                "source": str(CLIP),
                "loop": True,
                "realtime": False,
                "model": str(MODEL),
                "interval_s": 2.0,
                "lines": {"road": {"from": [150, 230], "to": [640, 230]}},
            }
        },
        "uplink": {
            "host": "127.0.0.1",
            "port": broker_port,
            "telemetry": {"flush_interval_s": 0.5, "integrity_period_s": 2},
            "commands": {"allow": {"ops-*": ["*"]}, "hmac_key_file": "pole.key"},
        },
    }
    path = tmp_path / "pole.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def canonical(command: dict[str, Any]) -> bytes:
    """docs/uplink.md: the command without ``signature``, members sorted by name, no
    whitespace, characters as themselves in UTF-8."""
    body = {name: value for name, value in command.items() if name != "signature"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def signed(command: dict[str, Any], key_file: Path) -> bytes:
    key = key_file.read_bytes().strip()  # the file's bytes without surrounding whitespace
    signature = hmac.new(key, canonical(command), hashlib.sha256).hexdigest()
    return json.dumps({**command, "signature": signature}).encode()


class Platform:
    """An independent MQTT client: everything under the pole's topics, and a publisher."""

    def __init__(self, port: int) -> None:
        self.lock = threading.Lock()
        self.messages: list[tuple[str, bytes, bool]] = []
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
        self.client.on_message = self._on_message
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.on_connect = lambda client, *_: client.subscribe(f"{PREFIX}{POLE}/#", qos=1)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert subscribed.wait(10), "the platform's subscription"

    def _on_message(self, _client: paho.Client, _userdata: Any, message: Any) -> None:
        with self.lock:
            self.messages.append((message.topic, bytes(message.payload), bool(message.retain)))

    def on(self, suffix: str) -> list[dict[str, Any]]:
        with self.lock:
            found = [payload for topic, payload, _ in self.messages if topic.endswith(suffix)]
        return [json.loads(payload) for payload in found if payload.startswith(b"{")]

    def results(self) -> list[dict[str, Any]]:
        return [message["data"] for message in self.on(f"{POLE}/cmd/result")]

    def command(self, payload: bytes) -> dict[str, Any]:
        """Publish on cmd, wait for its answer on cmd/result: the one with its id, or with
        a null id when it has none the docs allow (``^[!-~]{1,64}$``)."""
        try:
            sent_id = json.loads(payload).get("id")
        except (ValueError, AttributeError):
            sent_id = None
        if not (isinstance(sent_id, str) and re.fullmatch(r"[!-~]{1,64}", sent_id)):
            sent_id = None
        before = len(self.results())
        self.client.publish(f"{PREFIX}{POLE}/cmd", payload, qos=1).wait_for_publish(5)

        def answered() -> dict[str, Any] | None:
            return next((r for r in self.results()[before:] if r["id"] == sent_id), None)

        answer = wait_until(answered, 20, f"an answer to {payload[:80]!r}")
        assert isinstance(answer, dict)
        return answer

    def states(self) -> list[dict[str, Any]]:
        return self.on(f"{POLE}/state")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _command(command: str, args: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    data = {"id": f"c-{secrets.token_hex(4)}", "issued_at": round(time.time(), 3),
            "actor": "ops-contract", "command": command, **fields}  # fmt: skip
    if args is not None:
        data["args"] = args
    return data


# Each command kind accepted, and refused for its arguments or its target.
ACCEPTED = [
    ("set_level", {"lamp": "lamp1", "level": 40, "duration_s": 60}),
    ("override", {"lamp": "lamp1", "level": 50, "duration_s": 60}),
    ("clear_override", {"lamp": "lamp1"}),
    ("relay", {"device": "mcu", "point": "camera", "on": False}),
    ("relay", {"device": "mcu", "point": "camera", "on": True}),
    ("power_cycle", {"device": "ptz"}),
    ("ptz_preset", {"device": "ptz", "preset": 3}),
    ("ack_alarm", {"alarm_id": "mcu.door_open/door_open"}),
    ("report_now", None),
]
REFUSED = [
    ("set_level", {"lamp": "lamp1", "level": 150}),
    ("override", {"lamp": "lamp1", "level": 50}),
    ("clear_override", {"lamp": "no such lamp"}),
    ("relay", {"device": "mcu", "point": "camera", "on": "yes"}),
    ("power_cycle", {"device": "weather"}),
    ("ptz_preset", {"device": "ptz", "preset": 0}),
    ("ack_alarm", {"alarm_id": "mcu/no_such_alarm"}),
    ("report_now", {"now": True}),
]


def _bad_input(key_file: Path) -> list[tuple[bytes, str]]:
    """Every kind of malformed command, with the reason it must be answered with."""
    wrong_key = key_file.with_name("other.key")
    wrong_key.write_bytes(b"not-the-pole-key-0123456789\n")
    return [
        (b"{" + b" " * 5000 + b"}", "too_large"),
        (b"this is not json", "bad_json"),
        (signed(_command("report_now", issued_at="now"), key_file), "bad_schema"),
        (signed(_command("report_now", id="x" * 65), key_file), "bad_schema"),
        (signed(_command("set_dim", {"lamp": "lamp1"}), key_file), "unknown_command"),
        (json.dumps(_command("report_now")).encode(), "missing_signature"),
        (signed(_command("report_now"), wrong_key), "bad_signature"),
        (signed(_command("report_now", issued_at=time.time() - 3600), key_file), "stale"),
        (signed(_command("report_now", issued_at=time.time() + 3600), key_file), "future"),
        (signed(_command("report_now", actor="someone"), key_file), "not_allowed"),
    ]


def test_every_message_of_every_topic_validates_against_the_published_contract(
    tmp_path: Path, simulator: Callable[..., Proc], daemon: Callable[..., Proc]
) -> None:
    started = time.monotonic()
    with Broker(tmp_path / "broker") as broker:
        config = _pole(tmp_path, broker.port)
        key_file = tmp_path / "pole.key"
        control = tmp_path / "sim.sock"
        sim = simulator(config, "--control", str(control))
        platform = Platform(broker.port)
        try:
            proc = daemon(config, *bus_ports(sim))
            wait_until(lambda: platform.states(), 15, "the birth")
            wait_until(lambda: mcu_outputs(control)["configured"], 15, "the MCU configured")
            # The pole subscribes to cmd just after its birth: probe until it answers.
            deadline = time.monotonic() + 20
            while not platform.results():
                assert time.monotonic() < deadline, "the pole never answered a command"
                probe = _command("report_now")
                platform.client.publish(f"{PREFIX}{POLE}/cmd", signed(probe, key_file), qos=1)
                with contextlib.suppress(AssertionError):
                    wait_until(lambda: platform.results(), 1, "the first answer")

            # An alarm raised (and an MCU event) from the MCU's door input.
            sim_control(control, {"device": "mcu", "set": {"door_open": True}})
            wait_until(lambda: _alarm(platform, "raised"), 10, "the door alarm raised")
            wait_until(lambda: platform.on(f"{POLE}/events"), 10, "the MCU's door event")

            for command, args in ACCEPTED:
                answer = platform.command(signed(_command(command, args), key_file))
                assert answer["status"] == "ok", answer
            wait_until(lambda: _alarm(platform, "acknowledged"), 10, "the acknowledgement")
            sim_control(control, {"device": "mcu", "set": {"door_open": False}})
            wait_until(lambda: _alarm(platform, "cleared"), 10, "the door alarm cleared")

            outputs = mcu_outputs(control)
            lamp = api(proc, "lights")
            for command, args in REFUSED:
                answer = platform.command(signed(_command(command, args), key_file))
                assert answer["status"] in ("rejected", "failed"), answer
                assert answer["command"] == command, answer
            for payload, reason in _bad_input(key_file):
                answer = platform.command(payload)
                assert (answer["status"], answer["reason"]) == ("rejected", reason), answer
            duplicate = _command("report_now")
            first = platform.command(signed(duplicate, key_file))
            again = platform.command(signed(duplicate, key_file))
            assert (first["status"], again["status"]) == ("ok", "duplicate")
            # Nothing refused changed anything.
            assert mcu_outputs(control)["relays"] == outputs["relays"]
            assert api(proc, "lights") == lamp or _same_lamp(api(proc, "lights"), lamp)

            # Exactly one answer to every command (two to the one sent twice; none to a
            # probe sent before the pole subscribed).
            by_id = Counter(r["id"] for r in platform.results())
            assert by_id.pop(None) == 3, by_id  # too large, not JSON, an id over 64 characters
            assert by_id.pop(duplicate["id"]) == 2
            assert all(n == 1 for n in by_id.values()), by_id
            # diag uplink counts every answer by reason, exactly as they arrived.
            counted = api(proc, "uplink")["commands"]["by_reason"]
            assert counted == dict(Counter(r["reason"] for r in platform.results()))

            wait_until(lambda: _telemetry_kinds(platform) == {"change", "integrity"}, 10,
                       "telemetry changes and integrity reports")  # fmt: skip
            wait_until(lambda: platform.on(f"{POLE}/traffic"), 60, "a traffic summary")

            code, _ = proc.stop(timeout=20)  # a clean stop says so itself
            assert code == 0
            wait_until(lambda: _state(platform) == ("offline", "shutdown"), 10, "shutdown")
            proc = daemon(config, *bus_ports(sim))
            wait_until(lambda: _state(platform) == ("online", None), 15, "the second birth")
            proc.process.kill()  # kill -9: the broker publishes the last will
            proc.process.wait()
            wait_until(lambda: _state(platform) == ("offline", "connection lost"), 90,
                       "the last will")  # fmt: skip
        finally:
            platform.close()

    checked = _validate_everything(platform)
    assert {"state", "telemetry", "alarms", "events", "traffic", "cmd", "cmd/result"} <= set(
        checked
    ), checked
    assert time.monotonic() - started < 90


def _alarm(platform: Platform, kind: str) -> bool:
    return any(m["data"]["type"] == kind for m in platform.on(f"{POLE}/alarms"))


def _telemetry_kinds(platform: Platform) -> set[str]:
    return {m["data"]["kind"] for m in platform.on(f"{POLE}/telemetry")}


def _state(platform: Platform) -> tuple[str, str | None]:
    last = platform.states()[-1]
    return last["state"], last.get("reason")


def _same_lamp(now: Any, before: Any) -> bool:
    """The lamp's state apart from the ages that move by themselves."""
    moving = {"pushed_age_s", "age_s"}
    strip = lambda lamps: [{k: v for k, v in lamp.items() if k not in moving} for lamp in lamps]  # noqa: E731
    return bool(strip(now) == strip(before))


def _validate_everything(platform: Platform) -> Counter[str]:
    """Each message against its topic's schema, as the docs' table names it; how many
    messages each topic had. A command the pole refused as malformed must be refused by the
    request schema too, and every other command must validate."""
    with platform.lock:
        messages = list(platform.messages)
    answers = {r["id"]: r["reason"] for r in platform.results() if r["id"] is not None}
    checked: Counter[str] = Counter()
    for topic, payload, _retained in messages:
        row = topic_of(topic, POLE)
        checked[row.name] += 1
        try:
            data = json.loads(payload)
        except ValueError:
            assert row.name == "cmd", (topic, payload[:200])
            continue
        problems = errors(row.schema, data)
        if row.name == "cmd":
            command_id = data.get("id") if isinstance(data, dict) else None
            malformed = answers.get(command_id) in MALFORMED or command_id not in answers
            assert bool(problems) == malformed, (data, problems, answers.get(command_id))
        else:
            assert not problems, (topic, data, problems)
    return checked
