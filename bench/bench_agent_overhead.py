"""CPU time the daemon spends per Modbus transaction, against bare pymodbus doing the same reads.

A generated pole (written to a temp dir, profiles from configs/profiles) has one
``modbus-tcp`` bus with 10 devices of mixed profiles, unit ids 1..10, each polled every
0.1 s. ``smartpole sim`` serves it on loopback TCP (``--turnaround-ms``, default 1 ms) as
one subprocess; the real daemon (``smartpole run --bus-port lan=127.0.0.1:PORT --log-level
warning``) polls it as another. After the API is up and a warm-up, the daemon's CPU time
(utime + stime from /proc/<pid>/stat, all threads) is sampled over ``--seconds`` (30 s), and
its transactions from the API's ``status`` (``buses[0].counters.requests``).

Baseline, run side by side against the same simulator right after: a bare pymodbus
``AsyncModbusTcpClient`` loop in its own subprocess, doing the same reads (the daemon's own
read plan, fetched from its API: same units, areas, addresses and block sizes) on the same
schedule (each device due every 0.1 s, the earliest due first), and nothing else: no
decoding, no point table, no counters, no API. It is sampled the same way, so the ratio is
the agent's cost per transaction over the floor pymodbus itself sets.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
PROFILES = REPO / "configs" / "profiles"
TICKS = os.sysconf("SC_CLK_TCK")
BUS = "lan"
MIX = [
    "cwt-uwd",
    "lamp-controller",
    "chint-dtsu666",
    "eastron-sdm120",
    "eastron-sdm630",
    "relay-8ch",
    "alfen-ng9xx",
    "renke-rs-fsjt-n01",
    "cwt-uwd",
    "lamp-controller",
]


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def write_config(folder: Path, devices: int, period_s: float) -> Path:
    lines = [
        "pole: {id: bench-overhead, name: agent overhead benchmark}",
        f"profiles_dir: {json.dumps(str(PROFILES))}",
        "buses:",
        f"  {BUS}: {{type: modbus-tcp, host: 127.0.0.1, port: 1502, timeout_s: 1.0}}",
        "devices:",
    ]
    for unit in range(1, devices + 1):
        profile = MIX[(unit - 1) % len(MIX)]
        lines.append(
            f"  dev{unit:02d}: {{profile: {profile}, bus: {BUS}, unit_id: {unit}, "
            f"poll_period_s: {period_s}}}"
        )
    path = folder / "pole.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


class Sampled:
    """A process whose CPU time and transaction count can be read at any moment."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def transactions(self) -> tuple[int, int]:
        """(requests so far, of which failed)."""
        raise NotImplementedError


class Daemon(Sampled):
    def __init__(self, pid: int, socket: Path) -> None:
        super().__init__(pid)
        self.socket = socket

    def transactions(self) -> tuple[int, int]:
        from smartpole.agent.api import call

        counters = call(self.socket, "status")["buses"][0]["counters"]
        return int(counters["requests"]), int(counters["requests"] - counters["ok"])


class Bare(Sampled):
    def __init__(self, process: subprocess.Popen[str]) -> None:
        super().__init__(process.pid)
        self.process = process

    def transactions(self) -> tuple[int, int]:
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.write("?\n")
        self.process.stdin.flush()
        requests, failed = self.process.stdout.readline().split()
        return int(requests), int(failed)


def sample(process: Sampled, warmup_s: float, seconds: float) -> tuple[float, int, int, float]:
    """(CPU seconds, transactions, failed transactions, wall seconds) after a warm-up."""
    time.sleep(warmup_s)
    requests0, failed0 = process.transactions()
    cpu0, started = cpu_s(process.pid), time.monotonic()
    time.sleep(seconds)
    cpu1, elapsed = cpu_s(process.pid), time.monotonic() - started
    requests1, failed1 = process.transactions()
    return cpu1 - cpu0, requests1 - requests0, failed1 - failed0, elapsed


def wait_for_api(socket: Path, timeout: float = 20.0) -> None:
    from smartpole.agent.api import call
    from smartpole.agent.core.errors import ApiError

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            call(socket, "status", timeout_s=1.0)
            return
        except ApiError:
            time.sleep(0.1)
    raise SystemExit(f"daemon API did not come up at {socket}")


def stop(process: subprocess.Popen[str]) -> int:
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return -9


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="sampling time per side")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds before sampling")
    parser.add_argument("--devices", type=int, default=10)
    parser.add_argument("--period", type=float, default=0.1, help="poll period of each device")
    parser.add_argument("--turnaround-ms", type=float, default=1.0, help="device turnaround")
    parser.add_argument("--bare", metavar="HOST:PORT", help=argparse.SUPPRESS)
    parser.add_argument("--plan", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare:
        return bare_client(args.bare, json.loads(args.plan), args.period)

    from smartpole.agent.api import SOCKET_NAME, call

    cli = [sys.executable, "-m", "smartpole.agent"]
    with tempfile.TemporaryDirectory(prefix="smartpole-bench-") as tmp:
        config = write_config(Path(tmp), args.devices, args.period)
        sim = subprocess.Popen(
            [*cli, "sim", "--config", str(config), "--turnaround-ms", str(args.turnaround_ms),
             "--log-level", "warning"],
            stdout=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        try:
            assert sim.stdout is not None
            line = sim.stdout.readline()
            match = re.match(rf"serving bus {BUS} at tcp://(\S+):(\d+)", line)
            if not match:
                raise SystemExit(f"simulator did not start: {line!r}")
            host, port = match.group(1), int(match.group(2))
            state = Path(tmp) / "state"
            daemon = subprocess.Popen(
                [*cli, "run", "--config", str(config), "--state-dir", str(state),
                 "--bus-port", f"{BUS}={host}:{port}", "--log-level", "warning"],
                text=True,
            )  # fmt: skip
            try:
                wait_for_api(state / SOCKET_NAME)
                agent = sample(Daemon(daemon.pid, state / SOCKET_NAME), args.warmup, args.seconds)
                plan = call(state / SOCKET_NAME, "plan")[BUS]
            finally:
                stop(daemon)
            units = {f"dev{unit:02d}": unit for unit in range(1, args.devices + 1)}
            reads = [
                [units[device], [[b["kind"], b["address"], b["count"]] for b in blocks]]
                for device, blocks in plan.items()
                if isinstance(blocks, list)  # not the "(learnt)" summary
            ]
            bare = subprocess.Popen(
                [sys.executable, __file__, "--bare", f"{host}:{port}", "--plan", json.dumps(reads),
                 "--period", str(args.period)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )  # fmt: skip
            try:
                assert bare.stdout is not None
                if bare.stdout.readline().strip() != "ready":
                    raise SystemExit("bare pymodbus client did not connect")
                baseline = sample(Bare(bare), args.warmup, args.seconds)
            finally:
                assert bare.stdin is not None
                bare.stdin.close()  # end of input is its signal to stop
                bare.wait(timeout=10)
        finally:
            stop(sim)

    for name, (_, requests, failed, elapsed) in (("agent", agent), ("bare", baseline)):
        if requests <= 0:
            raise SystemExit(f"{name}: no transactions in {elapsed:.0f} s")
        if failed > requests * 0.01:
            raise SystemExit(f"{name}: {failed} of {requests} transactions failed")
    agent_ms = 1000 * agent[0] / agent[1]
    bare_ms = 1000 * baseline[0] / baseline[1]
    print(f"BENCH agent_cpu_per_transaction_ms {agent_ms:.3f} ms")
    print("BENCH agent_cpu_per_transaction_ms_target 0.50 ms")
    print(f"BENCH agent_transactions_per_s {agent[1] / agent[3]:.1f} transactions/s")
    print(f"BENCH bare_pymodbus_cpu_per_transaction_ms {bare_ms:.3f} ms")
    print(f"BENCH bare_pymodbus_transactions_per_s {baseline[1] / baseline[3]:.1f} transactions/s")
    print(f"BENCH agent_vs_bare_pymodbus_cpu {agent_ms / bare_ms:.2f} ratio")
    return 0


# ----- the baseline, in its own process -----


def bare_client(where: str, plan: list[list[Any]], period_s: float) -> int:
    """Poll like the bus task does, with nothing but pymodbus; report counts on request."""
    host, _, port = where.rpartition(":")
    return asyncio.run(_bare_loop(host, int(port), plan, period_s))


async def _bare_loop(host: str, port: int, plan: list[list[Any]], period_s: float) -> int:
    from pymodbus.client import AsyncModbusTcpClient
    from pymodbus.exceptions import ModbusException

    client = AsyncModbusTcpClient(host, port=port, timeout=1.0, retries=0)
    if not await client.connect():
        return 1
    read = {
        "holding": client.read_holding_registers,
        "input": client.read_input_registers,
        "coil": client.read_coils,
        "discrete": client.read_discrete_inputs,
    }
    counts = [0, 0]  # requests, failed
    done = asyncio.Event()
    loop = asyncio.get_running_loop()

    def answer() -> None:
        if not os.read(0, 64):
            done.set()
            return
        sys.stdout.write(f"{counts[0]} {counts[1]}\n")
        sys.stdout.flush()

    async def poll() -> None:
        due = [time.monotonic()] * len(plan)
        while True:
            i = min(range(len(due)), key=due.__getitem__)
            wait = due[i] - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            unit, blocks = plan[i]
            for kind, address, count in blocks:
                counts[0] += 1
                try:
                    reply = await read[kind](address, count=count, device_id=unit)
                except ModbusException:
                    counts[1] += 1
                    continue
                if reply.isError():
                    counts[1] += 1
            due[i] = max(due[i] + period_s, time.monotonic())

    loop.add_reader(0, answer)
    poller = loop.create_task(poll())
    print("ready", flush=True)
    await done.wait()
    poller.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await poller
    client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
