"""The city platform's subscriber to a pole's stream messages, with paho (a client we did
not write): a persistent QoS 1 session that survives daemon and broker restarts, keeping
every copy that arrives so a test can count duplicates and losses by ``(epoch, stream, seq)``,
as docs/uplink.md tells a platform to."""

from __future__ import annotations

import json
import threading
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

Key = tuple[str, str, int]


class StreamSubscriber:
    def __init__(self, port: int, pole: str, client_id: str) -> None:
        self.lock = threading.Lock()
        self._copies: list[dict[str, Any]] = []  # every stream message, in arrival order
        self.client = paho.Client(
            paho.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5
        )
        self.client.reconnect_delay_set(min_delay=0.05, max_delay=0.2)
        self.client.on_message = self._on_message
        self.client.on_connect = lambda client, *_: client.subscribe(
            f"smartpole/v1/{pole}/#", qos=1
        )
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = 3600
        self.client.connect("127.0.0.1", port, clean_start=False, properties=properties)
        self.client.loop_start()

    def _on_message(self, _client: paho.Client, _userdata: Any, message: Any) -> None:
        if message.topic.endswith(("/state", "/meta")):
            return  # retained descriptions of the connection, not stream messages
        data = json.loads(message.payload)
        with self.lock:
            self._copies.append(data)

    def copies(self) -> list[dict[str, Any]]:
        """Every message received, duplicates included, in arrival order."""
        with self.lock:
            return list(self._copies)

    def first_copies(self) -> list[dict[str, Any]]:
        """Each message once (its first copy), in arrival order."""
        seen: set[Key] = set()
        out = []
        for data in self.copies():
            key = (data["epoch"], data["stream"], data["seq"])
            if key not in seen:
                seen.add(key)
                out.append(data)
        return out

    def arrived_keys(self) -> set[Key]:
        """The ``(epoch, stream, seq)`` of every message received."""
        return {(d["epoch"], d["stream"], d["seq"]) for d in self.copies()}

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
