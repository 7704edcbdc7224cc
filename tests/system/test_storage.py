"""No outbox, still lights: the daemon with an unusable outbox path degrades, then recovers.

Before, a directory where ``outbox.sqlite3`` should be (as a full disk does) made the daemon
exit 1 at start; systemd restarted it every 5 s and the pole had no lighting control and no
API. Now it starts, controls the lamp, answers ``diag status`` with the problem, raises the
``storage_unavailable`` alarm, holds records in memory, and once the path is usable again
writes them to the file and the uplink delivers them to the broker.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import yaml

from helpers.broker import Broker
from helpers.paths import PROFILES
from helpers.processes import Proc, api, bus_ports
from helpers.waiting import wait_until
from smartpole.agent.api import call
from smartpole.agent.core.outbox import FILE_NAME, STORAGE_ALARM

POLE = "storage-pole"
PROGRAM_LEVEL = 70


def _zone_near_midnight() -> str:
    """A fixed-offset zone where it is now between 00:00 and 01:00: the program below is on
    from 12:00 to 11:59, so the test stays eleven hours from its one change."""
    offset = -datetime.now(UTC).hour % 24
    offset = offset - 24 if offset > 12 else offset
    return "Etc/GMT" + (f"{-offset:+d}" if offset else "")


def _pole(tmp_path: Path, broker_port: int) -> Path:
    data: dict[str, Any] = {
        "pole": {"id": POLE},
        "profiles_dir": str(PROFILES),
        "buses": {"rs485-1": {"type": "modbus-rtu", "port": "/dev/null", "timeout_s": 0.3}},
        "devices": {"lamp1": {"profile": "lamp-controller", "bus": "rs485-1", "unit_id": 1}},
        "site": {"latitude": 23.13, "longitude": 113.26, "timezone": _zone_near_midnight()},
        "lighting": {
            "lease_s": 10,
            "refresh_s": 1,
            "programs": {
                "flat": {
                    "default": "all_night",
                    "profiles": {
                        "all_night": [
                            {"at": "12:00", "level": PROGRAM_LEVEL},
                            {"at": "11:59", "level": 0},
                        ]
                    },
                }
            },
            "assignments": {"lamp1": "flat"},
        },
        "uplink": {"host": "127.0.0.1", "port": broker_port},
    }
    config = tmp_path / "pole.yaml"
    config.write_text(yaml.safe_dump(data))
    return config


class Subscriber:
    """Everything the pole publishes, as the platform receives it."""

    def __init__(self, port: int) -> None:
        self.lock = threading.Lock()
        self.records: list[dict[str, Any]] = []
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
        self.client.on_message = self._on_message
        self.client.on_connect = lambda client, *_: client.subscribe(
            f"smartpole/v1/{POLE}/#", qos=1
        )
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, _client: paho.Client, _userdata: Any, message: Any) -> None:
        try:
            data = json.loads(message.payload)
        except ValueError:
            return
        with self.lock:
            self.records.append(data)

    def stream(self, name: str) -> list[dict[str, Any]]:
        with self.lock:
            return [r for r in self.records if isinstance(r, dict) and r.get("stream") == name]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _storage_alarm(proc: Proc) -> list[dict[str, Any]]:
    return [a for a in api(proc, "alarms")["active"] if a["kind"] == STORAGE_ALARM]


def test_an_unusable_outbox_path_degrades_and_recovers_with_the_records(
    tmp_path: Path, simulator: Callable[..., Proc], daemon: Callable[..., Proc]
) -> None:
    state = tmp_path / "state"
    (state / FILE_NAME).mkdir(parents=True)  # the file's place taken: it cannot be opened
    with Broker(tmp_path / "broker") as broker:
        platform = Subscriber(broker.port)
        try:
            config = _pole(tmp_path, broker.port)
            sim = simulator(config)
            proc = daemon(config, *bus_ports(sim), "--clock", "trusted")  # it starts: API up
            socket = Path(proc.extra["socket"])
            # Lights under control, safety and the API running, the problem shown.
            wait_until(
                lambda: call(socket, "read", device="lamp1", point="dim_level") == PROGRAM_LEVEL,
                10,
                "the program's level on the lamp",
            )
            problems = api(proc, "status")["problems"]
            assert any("outbox" in p and "unusable" in p for p in problems), problems
            wait_until(lambda: _storage_alarm(proc), 10, "the storage_unavailable alarm")
            assert api(proc, "status")["outbox"]["held"] >= 1  # the alarm's record, in memory
            assert platform.stream("alarms") == []  # nothing could be sent meanwhile

            (state / FILE_NAME).rmdir()  # space (the path) returns

            wait_until(lambda: not _storage_alarm(proc), 40, "the alarm to clear by itself")
            assert api(proc, "status")["problems"] == []
            assert (state / FILE_NAME).is_file()

            def delivered() -> list[str] | None:
                kinds = [
                    r["data"]["type"]
                    for r in platform.stream("alarms")
                    if r["data"].get("kind") == STORAGE_ALARM
                ]
                return kinds if len(kinds) >= 2 else None

            # The record held in memory while the file was unusable reached the platform,
            # in order, followed by the clear.
            assert wait_until(delivered, 15, "the held records at the broker") == [
                "raised",
                "cleared",
            ]
            assert len(proc.events("outbox_storage_failed")) == 1  # logged once
            assert len(proc.events("outbox_storage_recovered")) == 1
            assert proc.process.poll() is None
        finally:
            platform.close()
