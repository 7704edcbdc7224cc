"""Gateway workload end to end: 5 Modbus TCP devices x 50 registers -> the daemon -> Mosquitto.

The gateway bench. Everything is a real process: a Mosquitto broker
(``tests/helpers/broker.py``), ``smartpole sim`` serving five Modbus TCP devices of the
``bench-register-bank`` profile (50 holding registers whose values walk on every simulator
step, ``--step-s 0.1``), and the daemon (``python -m smartpole.agent run``) polling every
device every 0.1 s, with an uplink section (telemetry deadband 0; the default 1 s flush,
so each telemetry record carries a second of values, each with its acquisition timestamp)
to the broker. A subscriber (paho-mqtt, MQTT 5, QoS 1, persistent session, so nothing is
dropped while it reconnects after a broker restart) decodes every telemetry record and
counts its values.

Phases:

1. Steady state (``--seconds``, default 40): values per second at the subscriber, the
   daemon's CPU seconds per minute (utime + stime from /proc/PID/stat over the window) and
   its peak resident memory (VmHWM). The targets from the issue are printed beside the
   measurements, never asserted.
2. Broker outage (``--outage-s``, default 30): the broker stops, the daemon keeps polling
   into its outbox, the broker comes back and the backlog drains.
3. SIGKILL during an outage: the broker stops, the outbox is read (read-only) right before
   the daemon is killed, the daemon restarts on the same state dir, then the broker, and
   the backlog drains.

Loss is judged by ``(epoch, stream, seq)``: every telemetry seq from 1 to the stream's final
``last_seq`` must have reached the subscriber, unless the outbox's ``evictions`` table
counts it as evicted. Duplicates are allowed (at-least-once) and counted.

    .venv/bin/python bench/bench_gateway.py [--seconds 40] [--outage-s 30]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import yaml
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from helpers.broker import Broker  # noqa: E402
from smartpole.agent.api import SOCKET_NAME, call  # noqa: E402
from smartpole.agent.core.errors import ApiError  # noqa: E402

PROFILE = "bench-register-bank"
DEVICES = 5
REGISTERS = 50  # per device, as the profile declares
POLL_S = 0.1
STEP_S = 0.1
STREAM = "telemetry"
POLE_ID = "bench-gateway"
TICKS = os.sysconf("SC_CLK_TCK")
VALUES_TARGET = DEVICES * REGISTERS / POLL_S  # 2,500 values/s
CPU_TARGET = 1.5  # cpu-s/min
RSS_TARGET = 60  # MB


def note(text: str) -> None:
    print(f"# {text}", flush=True)


def pole_config(folder: Path, broker_port: int, flush_s: float) -> Path:
    """A pole with five Modbus TCP buses, one bench device each, and an uplink section."""
    buses = {}
    devices = {}
    for i in range(1, DEVICES + 1):
        buses[f"tcp-{i}"] = {
            "type": "modbus-tcp",
            "host": "127.0.0.1",
            "port": 15020 + i,  # replaced by --bus-port with the simulator's port
            "timeout_s": 0.5,
        }
        devices[f"bank{i}"] = {
            "profile": PROFILE,
            "bus": f"tcp-{i}",
            "unit_id": 1,
            "poll_period_s": POLL_S,
        }
    config = {
        "pole": {"id": POLE_ID, "name": "gateway bench pole", "location": "bench"},
        "profiles_dir": str(REPO / "bench" / "profiles"),  # a bench-only device model
        "buses": buses,
        "devices": devices,
        "uplink": {
            "host": "127.0.0.1",
            "port": broker_port,
            "keepalive_s": 10,
            "connect_timeout_s": 5,
            "publish_timeout_s": 5,
            "backoff": {"initial_s": 0.5, "max_s": 2.0, "jitter": 0.5},
            "replay_rate_per_s": 200,
            "replay_burst": 50,
            "window": 32,
            "telemetry": {
                "deadbands": {},  # 0: every changed value goes up
                "flush_interval_s": flush_s,
                "integrity_period_s": 3600,
            },
        },
    }
    path = folder / "pole.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


# -- the subscriber ------------------------------------------------------------------------


@dataclass
class Received:
    """What the subscriber saw; written by paho's network thread, read under ``lock``."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    seqs: dict[tuple[str, str], set[int]] = field(default_factory=dict)  # (epoch, stream)
    messages: int = 0
    duplicates: int = 0
    undecodable: int = 0
    values_missing_ts: int = 0
    arrivals: list[tuple[float, int]] = field(default_factory=list)  # (monotonic, values)
    latencies: list[float] = field(default_factory=list)  # arrival - acquisition, seconds
    connected: threading.Event = field(default_factory=threading.Event)

    def on_message(self, _client: Any, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        now_mono, now_wall = time.monotonic(), time.time()
        try:
            record = json.loads(message.payload)
            key = (str(record["epoch"]), str(record["stream"]))
            seq = int(record["seq"])
            blocks = record["data"]["blocks"]
            sizes = [(len(block["values"]), block.get("ts")) for block in blocks]
        except (ValueError, KeyError, TypeError, AttributeError):
            with self.lock:
                self.undecodable += 1
            return
        missing = 0
        newest = 0.0
        values = 0
        for size, stamp in sizes:
            values += size
            if not isinstance(stamp, int | float) or isinstance(stamp, bool) or stamp <= 0:
                missing += size
            else:
                newest = max(newest, float(stamp))
        with self.lock:
            self.messages += 1
            seen = self.seqs.setdefault(key, set())
            if seq in seen:
                self.duplicates += 1
                return  # a redelivery: its values were counted the first time
            seen.add(seq)
            self.values_missing_ts += missing
            self.arrivals.append((now_mono, values))
            if newest:
                self.latencies.append(now_wall - newest)

    def values_between(self, start: float, end: float) -> int:
        with self.lock:
            return sum(n for at, n in self.arrivals if start <= at < end)

    def count(self, key: tuple[str, str]) -> int:
        with self.lock:
            return len(self.seqs.get(key, ()))

    def missing(self, key: tuple[str, str], low: int, high: int) -> int:
        """How many of seq ``low..high`` never arrived."""
        with self.lock:
            seen = self.seqs.get(key, set())
            return sum(1 for seq in range(low, high + 1) if seq not in seen)


def start_subscriber(port: int, received: Received) -> mqtt.Client:
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id="bench-gateway-platform",
        protocol=mqtt.MQTTv5,
    )
    client.on_message = received.on_message

    def on_connect(
        client: mqtt.Client, _userdata: Any, _flags: Any, reason: Any, _props: Any
    ) -> None:
        if not reason.is_failure:
            # Subscribing again on every connect is harmless; the persistent session keeps
            # the subscription (and the messages queued for it) across a broker restart.
            client.subscribe(f"smartpole/v1/+/{STREAM}", qos=1)
            received.connected.set()

    def on_disconnect(*_args: Any) -> None:
        received.connected.clear()

    client.on_connect = on_connect
    client.on_disconnect = on_disconnect
    client.reconnect_delay_set(min_delay=1, max_delay=1)
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    client.connect("127.0.0.1", port, keepalive=10, clean_start=False, properties=props)
    client.loop_start()
    if not received.connected.wait(10):
        raise SystemExit("the subscriber did not connect")
    return client


# -- the processes ---------------------------------------------------------------------------


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def vm_kib(pid: int, key: str) -> int:
    match = re.search(rf"^{key}:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.M)
    return int(match.group(1)) if match else 0


def daemon_counters(api: Path) -> tuple[int, int]:
    """Values the telemetry reporter appended to the outbox, and polls done, so far."""
    uplink = call(api, "uplink", timeout_s=5.0)
    status = call(api, "status", timeout_s=5.0)
    appended = int(uplink.get("telemetry", {}).get("values", 0))
    return appended, sum(int(device["polls"]) for device in status["devices"])


def wait_until(predicate: Callable[[], bool], limit_s: float, step_s: float = 0.1) -> bool:
    deadline = time.monotonic() + limit_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(step_s)  # polling an observable condition
    return True


def wait_for_api(socket: Path, daemon: subprocess.Popen[bytes], limit_s: float = 20.0) -> None:
    def up() -> bool:
        if daemon.poll() is not None:
            raise SystemExit(f"the daemon exited with {daemon.returncode}")
        try:
            call(socket, "status", timeout_s=1.0)
        except ApiError:
            return False
        return True

    if not wait_until(up, limit_s):
        raise SystemExit(f"the daemon's API did not come up at {socket}")


def start_sim(config: Path) -> tuple[subprocess.Popen[str], list[str]]:
    sim = subprocess.Popen(
        [sys.executable, "-m", "smartpole.agent", "sim", "--config", str(config),
         "--step-s", str(STEP_S), "--log-level", "warning"],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    assert sim.stdout is not None
    overrides: list[str] = []
    for _ in range(DEVICES):
        line = sim.stdout.readline()  # the simulator prints one line per bus when served
        match = re.match(r"serving bus (\S+) at tcp://(\S+)", line)
        if not match:
            sim.kill()
            raise SystemExit(f"simulator did not start: {line!r}")
        overrides += ["--bus-port", f"{match.group(1)}={match.group(2)}"]
    return sim, overrides


def start_daemon(
    config: Path, state: Path, overrides: list[str], log: Path
) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "smartpole.agent", "run", "--config", str(config),
             "--state-dir", str(state), "--log-level", "warning", "--log-format", "json",
             *overrides],
            stdout=out,
            stderr=out,
        )  # fmt: skip


def stop(process: subprocess.Popen[Any] | None, timeout: float = 10.0) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout)


# -- the outbox, read-only ----------------------------------------------------------------------


@dataclass(frozen=True)
class OutboxView:
    epoch: str
    last_seq: int
    acked_seq: int
    pending: int
    evicted: int


def read_outbox(state: Path) -> OutboxView:
    path = state / "outbox.sqlite3"
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5.0)
    try:
        epoch = db.execute("SELECT value FROM meta WHERE key = 'epoch'").fetchone()
        row = db.execute(
            "SELECT last_seq, acked_seq FROM streams WHERE stream = ?", (STREAM,)
        ).fetchone()
        pending = db.execute("SELECT count(*) FROM records WHERE stream = ?", (STREAM,))
        evicted = db.execute("SELECT sum(total) FROM evictions WHERE stream = ?", (STREAM,))
        return OutboxView(
            epoch=str(epoch[0]) if epoch else "",
            last_seq=int(row[0]) if row else 0,
            acked_seq=int(row[1]) if row else 0,
            pending=int(pending.fetchone()[0]),
            evicted=int(evicted.fetchone()[0] or 0),
        )
    finally:
        db.close()


def wait_drained(state: Path, received: Received, limit_s: float) -> tuple[bool, float]:
    """Until everything the outbox handed out has arrived; returns (drained, seconds)."""
    started = time.monotonic()

    def drained() -> bool:
        view = read_outbox(state)
        return view.last_seq > 0 and received.missing((view.epoch, STREAM), 1, view.last_seq) == 0

    ok = wait_until(drained, limit_s, step_s=0.2)
    return ok, time.monotonic() - started


# -- the bench ----------------------------------------------------------------------------------


def run(args: argparse.Namespace, root: Path) -> int:
    broker = Broker(root / "broker")
    received = Received()
    sim: subprocess.Popen[str] | None = None
    daemon: subprocess.Popen[bytes] | None = None
    client: mqtt.Client | None = None
    state = root / "state"
    state.mkdir()
    log = root / "daemon.log"
    results: list[str] = []

    def bench(name: str, value: float | int, unit: str, fmt: str = ".1f") -> None:
        line = f"BENCH {name} {value:{fmt}} {unit}"
        results.append(line)
        print(line, flush=True)

    try:
        broker.start()
        config = pole_config(root, broker.port, args.flush_s)
        client = start_subscriber(broker.port, received)
        sim, overrides = start_sim(config)
        daemon = start_daemon(config, state, overrides, log)
        wait_for_api(state / SOCKET_NAME, daemon)
        if not wait_until(lambda: received.values_between(0, time.monotonic() + 1) > 0, 20):
            raise SystemExit(f"no telemetry arrived; daemon log:\n{log.read_text()[-3000:]}")
        time.sleep(args.warmup_s)  # the first polls, connects and the initial full report

        # 1. steady state
        note(
            f"steady state {args.seconds:.0f} s: {DEVICES} devices x {REGISTERS} registers, "
            f"poll {POLL_S} s, sim step {STEP_S} s, telemetry flush {args.flush_s} s"
        )
        pid = daemon.pid
        api = state / SOCKET_NAME
        appended0, polls0 = daemon_counters(api)
        cpu0, t0 = cpu_s(pid), time.monotonic()
        with received.lock:
            latencies_from = len(received.latencies)
        time.sleep(args.seconds)
        cpu1, t1 = cpu_s(pid), time.monotonic()
        hwm = vm_kib(pid, "VmHWM")
        appended1, polls1 = daemon_counters(api)
        # values whose record arrived in the window (a record in flight at the edges is
        # counted on the side it lands)
        values = received.values_between(t0, t1)
        with received.lock:
            window_latencies = received.latencies[latencies_from:]
        bench("gateway_values_per_s", values / (t1 - t0), "values/s")
        bench("gateway_values_target", VALUES_TARGET, "values/s", ".0f")
        # where a shortfall comes from: the daemon's own counters over the same window
        bench("gateway_values_appended_per_s", (appended1 - appended0) / (t1 - t0), "values/s")
        bench("gateway_polls_per_s", (polls1 - polls0) / (t1 - t0), "polls/s")
        bench("gateway_cpu_s_per_min", (cpu1 - cpu0) * 60 / (t1 - t0), "cpu-s/min", ".3f")
        bench("gateway_cpu_target", CPU_TARGET, "cpu-s/min")
        bench("gateway_rss_peak_mb", hwm / 1024, "MB")
        bench("gateway_rss_target", RSS_TARGET, "MB", ".0f")
        if window_latencies:
            bench(
                "gateway_latency_p50",
                1000 * statistics.median(window_latencies),
                "ms",
            )  # from the acquisition of a record's newest value to the subscriber

        # 2. broker outage
        epoch_key = (read_outbox(state).epoch, STREAM)
        note(f"broker outage {args.outage_s:.0f} s")
        broker.stop()
        time.sleep(args.outage_s)
        during = read_outbox(state)
        note(f"outbox after the outage: last_seq {during.last_seq}, pending {during.pending}")
        broker.start()
        ok, took = wait_drained(state, received, args.drain_limit_s)
        note(f"backlog {'drained' if ok else 'NOT drained'} in {took:.1f} s")
        outage_last = read_outbox(state).last_seq
        lost_outage = received.missing(epoch_key, 1, outage_last)

        # 3. SIGKILL during an outage
        note(f"broker down; SIGKILL the daemon after {args.kill_after_s:.0f} s")
        broker.stop()
        time.sleep(args.kill_after_s)
        before_kill = read_outbox(state)  # read-only, right before the kill
        daemon.send_signal(signal.SIGKILL)
        daemon.wait(timeout=10)
        note(
            f"killed with last_seq {before_kill.last_seq}, {before_kill.pending} pending "
            f"(acked {before_kill.acked_seq})"
        )
        daemon = start_daemon(config, state, overrides, log)
        wait_for_api(state / SOCKET_NAME, daemon)
        time.sleep(args.restart_gap_s)  # the restarted daemon polls into its outbox
        broker.start()
        ok, took = wait_drained(state, received, args.drain_limit_s)
        note(f"backlog {'drained' if ok else 'NOT drained'} in {took:.1f} s after the restart")
        final = read_outbox(state)
        if final.epoch != epoch_key[0]:
            note(f"the epoch changed across the restart ({epoch_key[0]} -> {final.epoch})")
        lost_kill = received.missing(epoch_key, outage_last + 1, before_kill.last_seq)
        total_missing = received.missing((final.epoch, STREAM), 1, final.last_seq)
        lost_after = total_missing - lost_outage - lost_kill  # appended after the restart
        evicted = final.evicted
        # Evicted records are not lost by the uplink; the table counts, it does not name.
        unexplained_outage = max(0, lost_outage - evicted)
        unexplained_kill = max(0, lost_kill - max(0, evicted - lost_outage))
        bench("gateway_lost_broker_outage", unexplained_outage, "records", "d")
        bench("gateway_lost_sigkill", unexplained_kill, "records", "d")
        bench("gateway_lost_after_restart", max(0, lost_after), "records", "d")
        bench("gateway_evicted", evicted, "records", "d")
        with received.lock:
            duplicates = received.duplicates
            missing_ts = received.values_missing_ts
            undecodable = received.undecodable
        bench("gateway_duplicates", duplicates, "records", "d")
        bench("gateway_values_without_ts", missing_ts, "values", "d")
        if undecodable:
            bench("gateway_undecodable_messages", undecodable, "messages", "d")
        checked = final.last_seq if final.epoch == epoch_key[0] else 0
        bench("zero_loss_records_checked", checked, "records", "d")
        code = 0 if daemon.poll() is None else 1
    finally:
        stop(daemon)
        stop(sim)
        if client is not None:
            client.loop_stop()
            with contextlib.suppress(Exception):
                client.disconnect()
        broker.stop()
    return code


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=40.0, help="steady-state window")
    parser.add_argument("--warmup-s", type=float, default=5.0)
    parser.add_argument("--outage-s", type=float, default=30.0, help="first broker outage")
    parser.add_argument("--kill-after-s", type=float, default=8.0, help="outage before SIGKILL")
    parser.add_argument("--restart-gap-s", type=float, default=4.0, help="restart to broker")
    parser.add_argument("--drain-limit-s", type=float, default=30.0)
    parser.add_argument(
        "--flush-s",
        type=float,
        default=1.0,
        help="telemetry flush interval (default: the config's default, 1 s)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    if args.keep:
        root = Path(tempfile.mkdtemp(prefix="smartpole-gateway-"))
        note(f"working folder {root}")
        return run(args, root)
    with tempfile.TemporaryDirectory(prefix="smartpole-gateway-") as tmp:
        return run(args, Path(tmp))


if __name__ == "__main__":
    sys.exit(main())
