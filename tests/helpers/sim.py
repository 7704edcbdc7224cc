"""A running ``smartpole sim --control SOCKET``, asked and steered over its control socket."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any


def sim_control(control: Path, request: dict[str, Any]) -> dict[str, Any]:
    """Send one request, return the simulator's answer; fail unless it says ``ok``."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(str(control))
        sock.sendall(json.dumps(request).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            assert chunk, "the simulator closed its control socket"
            data += chunk
    answer: dict[str, Any] = json.loads(data)
    assert answer["ok"], answer
    return answer


def mcu_state(control: Path) -> dict[str, Any]:
    """The emulated pole MCU's whole state, as its twin holds it."""
    state: dict[str, Any] = sim_control(control, {"device": "mcu", "mcu": {}})["mcu"]
    return state


def mcu_outputs(control: Path) -> dict[str, Any]:
    """What the emulated MCU drives: level, its source, relays, fallback, configuration."""
    outputs: dict[str, Any] = mcu_state(control)["outputs"]
    return outputs
