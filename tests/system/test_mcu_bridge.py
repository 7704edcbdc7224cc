"""The cabinet MCU end to end: the real daemon, the MCU emulator over a pty, the real protocol.

The MCU's promise: when the agent stops sending heartbeats, the MCU applies its fallback on
its own within the configured timeout; when the agent comes back it re-identifies the MCU,
checks the configuration CRC, and takes control again. Plus the control process's side:
inputs become points, events reach the outbox, relays are what power management switches.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from helpers.paths import PROFILES
from helpers.processes import Proc, api, bus_ports
from helpers.sim import mcu_outputs, mcu_state, sim_control
from helpers.waiting import wait_until
from smartpole.agent.api import call

FALLBACK_AFTER_S = 1.0
HEARTBEAT_S = 0.2


def _pole(tmp_path: Path, *, fallback_level: int = 70) -> Path:
    config = tmp_path / "pole.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "pole": {"id": "mcu-rig"},
                "profiles_dir": str(PROFILES),
                "buses": {
                    "cabinet-mcu": {
                        "type": "pole-mcu",
                        "port": "/dev/null",
                        "heartbeat_s": HEARTBEAT_S,
                        "fallback_after_s": FALLBACK_AFTER_S,
                        "fallback_level": fallback_level,
                        "level_lease_s": 60,
                        "relays": {
                            "lighting": {"channel": 1},
                            "camera": {"channel": 2, "default_on": True},
                        },
                        "leakage_trip_ma": 30,
                        "leakage_cuts": ["lighting"],
                    }
                },
                "devices": {
                    "mcu": {"profile": "pole-mcu", "bus": "cabinet-mcu", "poll_period_s": 0.2}
                },
                "alarms": {
                    "door_open": {
                        "severity": "major",
                        "raise_when": True,
                        "sources": ["mcu.door_open"],
                    }
                },
            }
        )
    )
    return config


def _write(proc: Proc, point: str, value: object) -> Any:
    return call(
        Path(proc.extra["socket"]), "write", device="mcu", point=point, value=value, actor="test"
    )


def _diag_mcu(proc: Proc) -> dict[str, Any]:
    (mcu,) = api(proc, "mcu")
    return dict(mcu)


def _configured_pole(
    tmp_path: Path, simulator: Callable[..., Proc], daemon: Callable[..., Proc]
) -> tuple[Path, Path, Proc, Proc]:
    """The rig: the emulator with a control socket, and an agent that has configured it."""
    config = _pole(tmp_path)
    control = tmp_path / "sim.sock"
    sim = simulator(config, "--control", str(control))
    agent = daemon(config, *bus_ports(sim))
    wait_until(lambda: mcu_outputs(control)["configured"], 10, "the agent configures the MCU")
    return config, control, sim, agent


def test_fallback_when_the_agent_stops_and_resumed_control_when_it_returns(
    tmp_path: Path, simulator: Callable[..., Proc], daemon: Callable[..., Proc]
) -> None:
    config, control, sim, agent = _configured_pole(tmp_path, simulator, daemon)
    first_crc = mcu_outputs(control)["config_crc"]
    sim_control(control, {"device": "mcu", "set": {"photocell_dark": True}})  # it is night

    assert _write(agent, "level", 30) == 30
    assert _write(agent, "camera", False) is False
    outputs = mcu_outputs(control)
    assert (outputs["level"], outputs["source"], outputs["relays"] & 0b10) == (30, "host", 0)

    # The agent freezes: no heartbeat any more. The MCU must fall back by itself, no sooner
    # than the timeout allows after the last heartbeat and no later than the timeout.
    os.kill(agent.process.pid, signal.SIGSTOP)
    stopped = time.monotonic()
    try:
        wait_until(lambda: mcu_outputs(control)["fallback"], 5, "the MCU's fallback")
        elapsed = time.monotonic() - stopped
        outputs = mcu_outputs(control)
    finally:
        os.kill(agent.process.pid, signal.SIGCONT)
    assert FALLBACK_AFTER_S - HEARTBEAT_S - 0.05 <= elapsed <= FALLBACK_AFTER_S + 0.25
    # This pole has no fallback schedule, so the photocell decides: dark, hence the
    # configured fallback level.
    assert outputs["level"] == 70
    assert outputs["source"] == "photocell"
    assert outputs["relays"] & 0b10, "the camera relay went back to its default (on)"

    # The agent thaws: its heartbeat ends the fallback and it sets its outputs again.
    wait_until(
        lambda: (o := mcu_outputs(control))["level"] == 30 and not o["relays"] & 0b10,
        5,
        "the agent re-applies its level and relay after the fallback",
    )
    assert not mcu_outputs(control)["fallback"]

    # The agent dies for good and a new one starts: it re-identifies the MCU, finds the
    # configuration CRC it would send, and resumes without reconfiguring.
    agent.process.kill()
    agent.process.wait()
    wait_until(lambda: mcu_outputs(control)["fallback"], 5, "the fallback after the kill")
    agent = daemon(config, *bus_ports(sim))
    wait_until(lambda: _diag_mcu(agent)["connected"], 10, "the new agent's connect")
    diag = _diag_mcu(agent)
    assert diag["identity"]["resumed"] is True
    assert diag["identity"]["config_crc"] == first_crc
    assert diag["client"]["connects"] == 1
    assert diag["client"]["reconfigures"] == 0
    wait_until(lambda: not mcu_outputs(control)["fallback"], 5, "the heartbeat ends the fallback")
    assert _write(agent, "level", 55) == 55
    assert mcu_outputs(control)["level"] == 55


def test_a_changed_config_is_sent_again_and_a_reset_mcu_is_reconfigured(
    tmp_path: Path, simulator: Callable[..., Proc], daemon: Callable[..., Proc]
) -> None:
    _, control, sim, agent = _configured_pole(tmp_path, simulator, daemon)
    first_crc = mcu_outputs(control)["config_crc"]
    agent.process.terminate()
    agent.process.wait()

    changed = _pole(tmp_path, fallback_level=40)
    agent = daemon(changed, *bus_ports(sim))
    wait_until(lambda: _diag_mcu(agent)["connected"], 10, "the connect with a new config")
    diag = _diag_mcu(agent)
    assert diag["identity"]["resumed"] is False
    assert diag["client"]["reconfigures"] == 1
    assert mcu_outputs(control)["config_crc"] not in (0, first_crc)

    # The MCU resets in the middle of a frame: the agent notices, re-identifies and
    # configures the new boot, and its setpoints come back.
    assert _write(agent, "level", 20) == 20
    old_boot = mcu_state(control)["boot_id"]
    sim_control(control, {"device": "mcu", "mcu": {"reset": True, "mid_frame": True}})
    wait_until(
        lambda: (
            (m := mcu_state(control))["boot_id"] != old_boot
            and m["outputs"]["configured"]
            and m["outputs"]["level"] == 20
        ),
        10,
        "the reset MCU configured again and the level set again",
    )
    assert _diag_mcu(agent)["client"]["resets_detected"] >= 1


def test_inputs_become_points_and_events_reach_the_outbox(
    tmp_path: Path, simulator: Callable[..., Proc], daemon: Callable[..., Proc]
) -> None:
    _, control, _, agent = _configured_pole(tmp_path, simulator, daemon)

    sim_control(control, {"device": "mcu", "set": {"door_open": True, "tilt_x": 1.5}})

    def point(name: str) -> object:
        for sample in api(agent, "points"):
            if sample["device"] == "mcu" and sample["point"] == name:
                return sample["value"]
        raise AssertionError(f"no point mcu.{name}")

    wait_until(lambda: point("door_open") is True, 5, "mcu.door_open")
    wait_until(lambda: point("tilt_x") == 1.5, 5, "mcu.tilt_x")
    wait_until(
        lambda: any(a["kind"] == "door_open" for a in api(agent, "alarms")["active"]),
        5,
        "the door alarm from the MCU's input",
    )
    wait_until(
        lambda: api(agent, "alarms")["outbox"].get("events", {}).get("count", 0) >= 1,
        5,
        "the MCU's door event in the outbox",
    )

    # The MCU's own leakage trip cuts the lighting relay even though the agent wants it on;
    # the agent reports the trip and refuses to pretend the relay is on.
    sim_control(control, {"device": "mcu", "set": {"leakage": 45}})
    wait_until(lambda: point("tripped") is True, 5, "the trip seen by the agent")
    assert not mcu_outputs(control)["relays"] & 0b01
    sim_control(control, {"device": "mcu", "set": {"leakage": 2}})
    assert _write(agent, "tripped", False) is False
    wait_until(lambda: mcu_outputs(control)["relays"] & 0b01, 5, "the lighting relay back on")
