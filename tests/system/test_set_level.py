"""A platform's "set level" on a lamp the lighting controller manages: it holds, then ends.

The controller renews every lamp's lease each ``refresh_s``; a level written behind its back
would be put back at the next renewal. So a set level from MQTT (``set_level``) or OPC UA
(``SetLevel``) must be an override with an expiry: the lamp keeps it across renewals,
``diag lights`` says why, and when it expires the lamp returns to its program.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from helpers.broker import Broker
from helpers.opcua import NAMESPACE, USER, Env, client_pki, connected
from helpers.paths import PROFILES
from helpers.platform import Platform
from helpers.ports import free_port
from helpers.processes import Proc, api, bus_ports
from helpers.waiting import wait_until
from smartpole.agent.api import call
from smartpole.agent.core.errors import ApiError
from smartpole.agent.core.points import PointTable
from smartpole.agent.uplink.opcua_auth import password_entry

POLE = "level-pole"
PROGRAM_LEVEL = 60
HOLD_S = 6.0


def _zone_near_midnight() -> str:
    """A fixed-offset zone where it is now between 00:00 and 01:00: the program below is on
    at its level from 12:00 to 11:59, so the test stays eleven hours from its one change."""
    offset = -datetime.now(UTC).hour % 24
    offset = offset - 24 if offset > 12 else offset
    return "Etc/GMT" + (f"{-offset:+d}" if offset else "")


def _pole(tmp_path: Path, *, broker_port: int, opcua_url: str | None = None) -> Path:
    data: dict[str, Any] = {
        "pole": {"id": POLE},
        "profiles_dir": str(PROFILES),
        "buses": {"rs485-1": {"type": "modbus-rtu", "port": "/dev/null", "timeout_s": 0.3}},
        "devices": {
            "lamp1": {"profile": "lamp-controller", "bus": "rs485-1", "unit_id": 1},
        },
        "site": {"latitude": 23.13, "longitude": 113.26, "timezone": _zone_near_midnight()},
        "lighting": {
            "lease_s": 10,
            "refresh_s": 1,  # a renewal every second: several during one override
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
        "uplink": {
            "host": "127.0.0.1",
            "port": broker_port,
            "commands": {"allow": {"ops-*": ["set_level"], USER: ["override"]}},
        },
    }
    if opcua_url is not None:
        data["opcua"] = {"endpoint": opcua_url}
    config = tmp_path / "pole.yaml"
    config.write_text(yaml.safe_dump(data))
    return config


def _lamp(proc: Proc) -> dict[str, Any]:
    (lamp,) = api(proc, "lights")
    assert isinstance(lamp, dict)
    return lamp


def _device_level(proc: Proc) -> object:
    """What the lamp controller itself holds, read from it now (not the point table)."""
    return call(Path(proc.extra["socket"]), "read", device="lamp1", point="dim_level")


def _holds_across_renewals_then_returns(proc: Proc, level: int, actor: str) -> None:
    lamp = wait_until(lambda: _lamp(proc)["source"] == "override" and _lamp(proc), 5, "override")
    assert (lamp["target"], lamp["override"]["level"]) == (level, level)
    assert lamp["override"]["actor"] == actor
    # Renewals: the controller pushes again every refresh_s; each resets pushed_age_s.
    renewals = 0
    last_age = _lamp(proc)["pushed_age_s"]
    deadline = time.monotonic() + HOLD_S - 2.0
    while time.monotonic() < deadline:
        lamp = _lamp(proc)
        if lamp["pushed_age_s"] is not None and lamp["pushed_age_s"] < last_age:
            renewals += 1
        last_age = lamp["pushed_age_s"]
        assert (lamp["source"], lamp["pushed_level"]) == ("override", level), lamp
        assert _device_level(proc) == level
        time.sleep(0.2)
    assert renewals >= 2, f"saw {renewals} lease renewals during the override"
    wait_until(lambda: _lamp(proc)["source"] == "program", HOLD_S + 5, "the override's expiry")
    wait_until(lambda: _device_level(proc) == PROGRAM_LEVEL, 5, "the program's level again")
    assert _lamp(proc)["override"] is None


def test_mqtt_set_level_is_an_override_that_holds_then_returns_to_the_program(
    tmp_path: Path, simulator: Callable[..., Proc], daemon: Callable[..., Proc]
) -> None:
    with Broker(tmp_path / "broker") as broker:
        config = _pole(tmp_path, broker_port=broker.port)
        sim = simulator(config)
        proc = daemon(config, *bus_ports(sim), "--clock", "trusted")
        wait_until(lambda: _device_level(proc) == PROGRAM_LEVEL, 10, "the program's level")
        for point, value in (("dim_level", 20), ("lamp_on", False)):
            with pytest.raises(ApiError, match="the lighting controller keeps on lamp1"):
                call(Path(proc.extra["socket"]), "write", device="lamp1", point=point, value=value)
        assert _device_level(proc) == PROGRAM_LEVEL
        platform = Platform(broker.port, POLE)
        try:
            wait_until(lambda: api(proc, "uplink")["state"] == "connected", 10, "the uplink")
            platform.send(
                {
                    "id": "level-1",
                    "issued_at": time.time(),
                    "actor": "ops-alice",
                    "command": "set_level",
                    "args": {"lamp": "lamp1", "level": 30, "duration_s": HOLD_S},
                }
            )
            (result,) = wait_until(lambda: platform.result("level-1"), 10, "the command's result")
            assert (result["status"], result["error"]) == ("ok", None)
            assert result["result"]["pushed_level"] == 30  # applied before the answer
            _holds_across_renewals_then_returns(proc, 30, "mqtt:ops-alice")
        finally:
            platform.close()


def _opcua_env(tmp_path: Path) -> tuple[Env, str]:
    state = tmp_path / "state"
    (state / "opcua" / "trusted").mkdir(parents=True)
    keys = tmp_path / "client"
    keys.mkdir()
    trusted = client_pki(keys, "scada")
    (state / "opcua" / "trusted" / "scada.der").write_bytes(trusted.cert.read_bytes())
    (state / "opcua" / "users").write_text(password_entry(USER, "pw", iterations=1000) + "\n")
    url = f"opc.tcp://127.0.0.1:{free_port()}/smartpole/"
    return Env(state, url, PointTable(), trusted, trusted, [0.0]), url


@pytest.mark.asyncio
async def test_opcua_set_level_is_an_override_that_holds_then_returns_to_the_program(
    tmp_path: Path, simulator: Callable[..., Proc], daemon: Callable[..., Proc]
) -> None:
    env, url = _opcua_env(tmp_path)
    config = _pole(tmp_path, broker_port=free_port(), opcua_url=url)  # no broker needed
    sim = simulator(config)
    proc = daemon(config, *bus_ports(sim), "--clock", "trusted")
    wait_until(lambda: proc.events("opcua_started"), 15, "the OPC UA server")
    wait_until(lambda: _device_level(proc) == PROGRAM_LEVEL, 10, "the program's level")
    async with connected(env, password="pw") as client:  # noqa: S106 - a test credential
        idx = await client.get_namespace_index(NAMESPACE)
        commands = await client.nodes.objects.get_child([f"{idx}:{POLE}", f"{idx}:Commands"])
        answer = await commands.call_method(f"{idx}:SetLevel", "lamp1", 40, HOLD_S)
    status, error, call_id = answer
    assert (status, error) == ("ok", "")
    assert call_id.startswith("opcua-")  # the id its cmd/result answer carries
    _holds_across_renewals_then_returns(proc, 40, f"opcua:{USER}")
