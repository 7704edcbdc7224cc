"""Platform commands end to end: a real broker, the real daemon, the MCU emulator.

A signed command published on the pole's cmd topic switches a relay of the cabinet MCU, is
answered on cmd/result, and is executed once even when the broker delivers it again; a
command without a valid signature, or from an actor the allow-list does not name, changes
nothing and is answered with the reason.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import yaml

from helpers.broker import Broker
from helpers.paths import PROFILES
from helpers.platform import Platform
from helpers.processes import Proc, bus_ports
from helpers.sim import mcu_outputs
from helpers.waiting import wait_until
from smartpole.agent.api import call

POLE = "cmd-pole"
KEY = b"0123456789abcdef-pole-key"


def _pole(tmp_path: Path, broker_port: int) -> Path:
    (tmp_path / "pole.key").write_bytes(KEY)
    (tmp_path / "pole.key").chmod(0o600)
    config = tmp_path / "pole.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "pole": {"id": POLE},
                "profiles_dir": str(PROFILES),
                "buses": {
                    "cabinet-mcu": {
                        "type": "pole-mcu",
                        "port": "/dev/null",
                        "heartbeat_s": 0.2,
                        "fallback_after_s": 2,
                        "relays": {"camera": {"channel": 2}},
                    }
                },
                "devices": {"mcu": {"profile": "pole-mcu", "bus": "cabinet-mcu"}},
                "uplink": {
                    "host": "127.0.0.1",
                    "port": broker_port,
                    "commands": {
                        "allow": {"ops-*": ["relay"]},
                        "hmac_key_file": "pole.key",
                    },
                },
            }
        )
    )
    return config


def test_signed_commands_switch_a_relay_once_and_bad_ones_change_nothing(
    tmp_path: Path, simulator: Callable[..., Proc], daemon: Callable[..., Proc]
) -> None:
    with Broker(tmp_path / "broker") as broker:
        config = _pole(tmp_path, broker.port)
        control = tmp_path / "sim.sock"
        sim = simulator(config, "--control", str(control))
        proc = daemon(config, *bus_ports(sim))
        wait_until(lambda: mcu_outputs(control)["configured"], 10, "the MCU configured")
        platform = Platform(broker.port, POLE, key=KEY)
        try:
            off = {
                "id": "cmd-1",
                "issued_at": time.time(),
                "actor": "ops-alice",
                "command": "relay",
                "args": {"device": "mcu", "point": "camera", "on": False},
            }
            platform.send(off)
            wait_until(lambda: platform.result("cmd-1"), 20, "the result of cmd-1")
            assert platform.result("cmd-1")[0]["status"] == "ok"
            assert not mcu_outputs(control)["relays"] & 0b10

            platform.send(off)  # a redelivery of the same command
            wait_until(lambda: len(platform.result("cmd-1")) == 2, 10, "the duplicate's answer")
            assert platform.result("cmd-1")[1]["status"] == "duplicate"

            forged = {**off, "id": "cmd-2", "args": {**off["args"], "on": True}}
            platform.send({**forged, "signature": "00" * 32}, sign=False)
            stranger = {**off, "id": "cmd-3", "actor": "someone", "args": forged["args"]}
            platform.send(stranger)
            wait_until(
                lambda: platform.result("cmd-2") and platform.result("cmd-3"), 10, "refusals"
            )
            assert platform.result("cmd-2")[0]["reason"] == "bad_signature"
            assert platform.result("cmd-3")[0]["reason"] == "not_allowed"
            assert not mcu_outputs(control)["relays"] & 0b10, "no refused command switched it"
            # The forged command and the redelivery are audited as claims, not as ops-alice;
            # the signed refusal keeps its actor.
            audit = call(Path(proc.extra["socket"]), "audit", count=10)
            rows = [
                (r["actor"], r["claimed_actor"], (r["error"] or "ok").split(":")[0])
                for r in audit
                if r["action"] == "relay"
            ]
            assert rows == [
                ("mqtt:ops-alice", None, "ok"),
                ("unauthenticated", "mqtt:ops-alice", "duplicate"),
                ("unauthenticated", "mqtt:ops-alice", "bad_signature"),
                ("mqtt:someone", None, "not_allowed"),
            ]
        finally:
            platform.close()
