"""The city platform's side of MQTT commands, written from docs/uplink.md with paho (a
client we did not write): publishes commands, signs them when given the pole's key, and
collects what comes back on ``cmd/result``."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from typing import Any

import paho.mqtt.client as paho


class Platform:
    def __init__(self, port: int, pole: str, *, key: bytes | None = None) -> None:
        self.pole = pole
        self.key = key
        self.lock = threading.Lock()
        self.results: list[dict[str, Any]] = []
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
        self.client.on_message = self._on_message
        self.client.on_connect = lambda client, *_: client.subscribe(
            f"smartpole/v1/{pole}/cmd/result", qos=1
        )
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, _client: paho.Client, _userdata: Any, message: Any) -> None:
        data = json.loads(message.payload)
        with self.lock:
            self.results.append(data.get("data", data))

    def result(self, command_id: str) -> list[dict[str, Any]]:
        """Every answer to ``command_id`` so far, in arrival order."""
        with self.lock:
            return [r for r in self.results if r.get("id") == command_id]

    def send(self, command: dict[str, Any], *, sign: bool = True) -> None:
        """Publish ``command``; signed as docs/uplink.md says when the platform has a key."""
        if sign and self.key is not None:
            canonical = json.dumps(command, sort_keys=True, separators=(",", ":"))
            signature = hmac.new(self.key, canonical.encode(), hashlib.sha256).hexdigest()
            command = {**command, "signature": signature}
        topic = f"smartpole/v1/{self.pole}/cmd"
        self.client.publish(topic, json.dumps(command), qos=1).wait_for_publish(5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
