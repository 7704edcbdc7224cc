"""Record and replay scripted conversations with the MCU twin (``sessions.json`` vectors).

A session is what a test harness needs to drive any MCU implementation through the same
conversation and compare the bytes it transmits: a boot id and a list of steps, each one
of::

    {"t": ms, "inputs": {field: value, ...}}      set sensor inputs (only those named)
    {"t": ms, "rx": hex, "tx": hex}               host bytes in (one chunk), all bytes out
    {"t": ms, "tick": true, "tx": hex}            run the tick, every byte pushed
    {"expect": {"level", "relays", "source", "fallback", "tripped", "configured"}}

The recorder runs the Python twin to fill in ``tx`` and ``expect``; ``replay`` runs a
fresh twin through a recorded session and reports every difference, which is how the
vector test proves the committed vectors still match the twin.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Final

from smartpole.drivers.mcu.dictionary import DICTIONARY
from smartpole.drivers.mcu.frame import SEQ_MODULO, encode_frame
from smartpole.drivers.sim.mcu.twin import McuTwin
from smartpole.drivers.sim.mcu.twin_state import Inputs

INPUT_FIELDS: Final = tuple(field.name for field in dataclasses.fields(Inputs))
EXPECT_FIELDS: Final = ("level", "relays", "source", "fallback", "tripped", "configured")


def expect_of(twin: McuTwin) -> dict[str, int | bool]:
    """The twin's outputs in the shape of a session's ``expect`` step."""
    out = twin.outputs
    return {
        "level": out.level,
        "relays": out.relays,
        "source": int(out.source),
        "fallback": out.fallback,
        "tripped": out.tripped,
        "configured": out.configured,
    }


class SessionRecorder:
    """Drives a twin like a host would and records the steps with the twin's answers."""

    def __init__(self, name: str, boot_id: int) -> None:
        self.name = name
        self.boot_id = boot_id
        self.twin = McuTwin(boot_id)
        self.steps: list[dict[str, Any]] = []
        self.seq = 0  # the host's next sequence number

    def inputs(self, t: int, **fields: int) -> None:
        """Set sensor inputs at ``t``."""
        for name, value in fields.items():
            if name not in INPUT_FIELDS:
                raise ValueError(f"no input {name!r}")
            setattr(self.twin.inputs, name, value)
        self.steps.append({"t": t, "inputs": dict(fields)})

    def rx(self, t: int, data: bytes) -> bytes:
        """The host's raw bytes reach the MCU at ``t``; returns what it sent back."""
        tx = self.twin.receive(data, t)
        self.steps.append({"t": t, "rx": data.hex(), "tx": tx.hex()})
        return tx

    def frame(self, *messages: bytes, seq: int | None = None) -> bytes:
        """A host frame of ``messages`` with the next sequence number (or ``seq``)."""
        if seq is None:
            seq, self.seq = self.seq, (self.seq + 1) % SEQ_MODULO
        return encode_frame(seq, b"".join(messages))

    def send(self, t: int, *messages: tuple[str, dict[str, int | bytes]]) -> bytes:
        """Send one frame of named messages with the next sequence number."""
        encoded = [DICTIONARY.encode(name, **args) for name, args in messages]
        return self.rx(t, self.frame(*encoded))

    def tick(self, t: int) -> bytes:
        """Run the MCU's tick at ``t``; returns what it pushed."""
        tx = self.twin.tick(t)
        self.steps.append({"t": t, "tick": True, "tx": tx.hex()})
        return tx

    def ticks(self, start: int, stop: int, step: int = 10) -> bytes:
        """Ticks at ``start``, ``start + step`` ... before ``stop``; all bytes pushed."""
        return b"".join(self.tick(t) for t in range(start, stop, step))

    def expect(self) -> dict[str, int | bool]:
        """Record the twin's outputs now as an expectation."""
        expected = expect_of(self.twin)
        self.steps.append({"expect": expected})
        return expected

    def to_json(self) -> dict[str, Any]:
        """The session as it goes into sessions.json."""
        return {"name": self.name, "boot_id": self.boot_id, "steps": self.steps}


def replay(session: dict[str, Any]) -> list[str]:
    """Run a fresh twin through a recorded session; every mismatch, described."""
    twin = McuTwin(int(session["boot_id"]))
    problems: list[str] = []
    for number, step in enumerate(session["steps"]):
        where = f"{session['name']} step {number}"
        if "inputs" in step:
            for name, value in step["inputs"].items():
                setattr(twin.inputs, name, value)
        elif "rx" in step:
            tx = twin.receive(bytes.fromhex(step["rx"]), int(step["t"]))
            if tx.hex() != step["tx"]:
                problems.append(f"{where}: rx answered {tx.hex()}, vector says {step['tx']}")
        elif step.get("tick"):
            tx = twin.tick(int(step["t"]))
            if tx.hex() != step["tx"]:
                problems.append(f"{where}: tick sent {tx.hex()}, vector says {step['tx']}")
        elif "expect" in step:
            actual = expect_of(twin)
            if actual != step["expect"]:
                problems.append(f"{where}: outputs {actual}, vector says {step['expect']}")
        else:
            problems.append(f"{where}: unknown step {step}")
    return problems
