"""Honest restarts, seen from the platform: the daemon restarted three times (one SIGKILL)
with a DL/T 645 meter whose energy register keeps counting and an MCU that reboots once.

The simulator runs in its own process, so the meter and the MCU outlive every daemon, as
they do on a pole. An independent paho subscriber (persistent MQTT 5 session, QoS 1)
collects every message in arrival order. After de-duplication by the envelope's
``(epoch, stream, seq)``, as docs/uplink.md tells the platform to do:

- no value travels with a timestamp later than its acquisition: a non-null energy value
  stamped after the start of a daemon life must have been read in that life, so it cannot
  be one that was already published before that life began (the meter counts on while the
  daemon is down, so a value read again is a new value). Each life starts with the meter
  not answering for a while, so the restored values are all the daemon has: the old code
  published them then, stamped with the time of the quality change;
- the energy counter never decreases in arrival order;
- the boot event of each real MCU boot (two: the simulator's start and a reboot during the
  test) arrives exactly once, with its identity ``(device, boot_id, id)``.
"""

from __future__ import annotations

import itertools
import signal
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from helpers.broker import Broker
from helpers.paths import PROFILES
from helpers.processes import Proc, bus_ports
from helpers.sim import mcu_state, sim_control
from helpers.subscriber import StreamSubscriber
from helpers.waiting import wait_until

POLE = "restart-pole"
ENERGY = "forward_active_energy"


class Subscriber(StreamSubscriber):
    """The platform's stream messages, each once and in arrival order, read for the energy
    values and the MCU events."""

    def __init__(self, port: int) -> None:
        super().__init__(port, POLE, "restarts-platform")

    def messages(self, stream: str) -> list[dict[str, Any]]:
        return [m for m in self.first_copies() if m["stream"] == stream]

    def energy(self) -> list[tuple[float | None, float, str]]:
        """``(value, ts, quality)`` of every published energy value, in arrival order."""
        out = []
        for message in self.messages("telemetry"):
            for block in message["data"]["blocks"]:
                if block["device"] == "meter" and ENERGY in block["values"]:
                    quality = block.get("quality", {}).get(ENERGY, "good")
                    out.append((block["values"][ENERGY], block["ts"], quality))
        return out

    def mcu_events(self, kind: str) -> list[dict[str, Any]]:
        return [
            m["data"]
            for m in self.messages("events")
            if m["data"].get("source") == "mcu" and m["data"].get("kind") == kind
        ]


def _last_seqs(state: Path) -> dict[str, int]:
    """Each stream's last sequence number, read-only from the outbox file."""
    db = sqlite3.connect(f"file:{state / 'outbox.sqlite3'}?mode=ro", uri=True)
    try:
        return dict(db.execute("SELECT stream, last_seq FROM streams").fetchall())
    finally:
        db.close()


def _pole(tmp_path: Path, broker_port: int) -> Path:
    config = tmp_path / "pole.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "pole": {"id": POLE},
                "profiles_dir": str(PROFILES),
                "buses": {
                    "meters": {
                        "type": "dlt645",
                        "port": "/dev/null",
                        "baudrate": 9600,
                        "parity": "N",
                        "timeout_s": 0.3,
                    },
                    "cabinet-mcu": {
                        "type": "pole-mcu",
                        "port": "/dev/null",
                        "heartbeat_s": 0.2,
                        "fallback_after_s": 1.0,
                        "relays": {"lighting": {"channel": 1}},
                    },
                },
                "devices": {
                    "meter": {
                        "profile": "dlt645-meter",
                        "bus": "meters",
                        "address": "000000000001",
                        "poll_period_s": 0.2,
                        "offline_after": 2,
                    },
                    "mcu": {"profile": "pole-mcu", "bus": "cabinet-mcu", "poll_period_s": 0.2},
                },
                "uplink": {
                    "host": "127.0.0.1",
                    "port": broker_port,
                    "backoff": {"initial_s": 0.1, "max_s": 0.3, "jitter": 0.3},
                    "replay_rate_per_s": 500,
                    "telemetry": {"flush_interval_s": 0.1, "integrity_period_s": 0.5},
                },
            },
            sort_keys=False,
        )
    )
    return config


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    with Broker(tmp_path / "broker") as running:
        yield running


def test_three_restarts_publish_no_stale_value_no_falling_counter_and_each_boot_once(
    tmp_path: Path, broker: Broker, simulator: Callable[..., Proc], spawn: Callable[..., Proc]
) -> None:
    config = _pole(tmp_path, broker.port)
    control = tmp_path / "sim.sock"
    sim = simulator(config, "--control", str(control), "--step-s", "0.05")
    state = tmp_path / "state"
    wait_until(control.exists, 10, "the simulator's control socket")  # made after the ptys
    boots = [mcu_state(control)["boot_id"]]
    lives: list[float] = []  # wall time at which each daemon life was started
    platform = Subscriber(broker.port)

    def start() -> Proc:
        lives.append(time.time())
        return spawn(
            "run", "--config", str(config), "--state-dir", str(state), *bus_ports(sim),
            name="daemon",
        )  # fmt: skip

    def fresh_energy_values(since: float, count: int) -> bool:
        return sum(1 for v, ts, q in platform.energy() if ts >= since and q == "good") >= count

    try:
        for life, end in enumerate(["term", "kill", "term", "term"]):
            if life > 0:
                # The meter does not answer when the daemon comes back: all it has is what
                # it saved before, and the device goes offline (a quality change).
                sim_control(control, {"device": "meter", "fault": "no_answer"})
            proc = start()
            begun = lives[-1]
            if life > 0:
                wait_until(
                    lambda: proc.events("device_offline"),  # noqa: B023
                    15,
                    "the silent meter goes offline",
                )
                # Two integrity reports while the meter is silent.
                reports = len(platform.messages("telemetry"))
                wait_until(
                    lambda: (
                        sum(
                            1
                            for m in platform.messages("telemetry")[reports:]  # noqa: B023
                            if m["data"]["kind"] == "integrity"
                        )
                        >= 2
                    ),
                    10,
                    "integrity reports while the meter is silent",
                )
                sim_control(control, {"device": "meter", "fault": "none"})
            wait_until(lambda: fresh_energy_values(begun, 5), 15, "fresh energy values")  # noqa: B023
            if life == 1:
                # A real reboot of the MCU while the daemon runs: its second boot event.
                sim_control(control, {"device": "mcu", "mcu": {"reset": True}})
                boots.append(mcu_state(control)["boot_id"])
                wait_until(
                    lambda: {e["boot_id"] for e in platform.mcu_events("boot")} >= set(boots),
                    10,
                    "the reboot's boot event at the platform",
                )
            else:
                wait_until(lambda: platform.mcu_events("boot"), 10, "the first boot event")
            if life == 3:
                last = _last_seqs(state)
                wait_until(
                    lambda: all(
                        (s, q) in {(k[1], k[2]) for k in platform.arrived_keys()}
                        for s, top in last.items()  # noqa: B023
                        for q in range(top, top + 1)
                    ),
                    15,
                    "every record of the last life at the platform",
                )
            if end == "kill":
                proc.process.send_signal(signal.SIGKILL)
                proc.process.wait()
            else:
                code, _ = proc.stop(timeout=10)
                assert code == 0, proc.log_path.read_text()[-3000:]

        energy = platform.energy()
        # Nothing published with a timestamp later than its reading: a value stamped after a
        # life's start was read in that life, so it was never published before that start.
        stale = []
        for k, begun in enumerate(lives[1:], start=1):
            before = {v for v, ts, _ in energy if v is not None and ts < begun}
            for value, ts, quality in energy:
                if value is not None and ts >= begun and value in before:
                    stale.append((k, value, ts, quality))
        # The counter never goes back in arrival order.
        values = [v for v, _, _ in energy if v is not None]
        falls = [(a, b) for a, b in itertools.pairwise(values) if b < a]
        # Each MCU event once, identified by (device, boot_id, id); one boot event per boot.
        all_mcu = [m["data"] for m in platform.messages("events") if m["data"]["source"] == "mcu"]
        keys = [(e.get("device"), e["boot_id"], e["id"]) for e in all_mcu]
        again = sorted({key for key in keys if keys.count(key) > 1})
        boot_ids = sorted(e["boot_id"] for e in platform.mcu_events("boot"))
        assert (stale, falls, again, boot_ids) == ([], [], [], sorted(boots)), (
            f"stale values with fresh timestamps: {stale[:5]}; "
            f"the energy counter went backwards: {falls[:5]}; "
            f"MCU events queued more than once: {again}; "
            f"boot events {boot_ids} for the boots {sorted(boots)}"
        )
        assert all(e.get("device") == "mcu" for e in all_mcu), all_mcu
        assert len(set(values)) >= 10, values  # it was counting
        events = platform.messages("events")
        resets = [m for m in events if m["data"].get("kind") == "counter_reset"]
        assert not resets, "a counter that only grew was reported reset"
        print(
            f"restarts: {len(lives)} lives, {len(energy)} energy values "
            f"({min(values)} .. {max(values)}), {len(all_mcu)} MCU events, "
            f"{len(platform.copies()) - len(platform.arrived_keys())} duplicate copies dropped"
        )
    finally:
        platform.close()
