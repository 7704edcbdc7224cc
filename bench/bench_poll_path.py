"""CPU time of the Modbus TCP poll path, per poll of a 50-register device, old against new.

Device: ``bench-register-bank`` (bench/profiles, 50 holding registers, u16, read as one
block), one per gateway bus in the gateway workload (5 devices x 10 polls/s). It is served by
the project's simulator, ``smartpole sim --config POLE --turnaround-ms 0 --step-s 0.1``, in
a subprocess of its own, so its CPU time is never counted here; values walk on every step
as in bench/bench_gateway.py. Everything measured runs in this process and is timed with
``time.process_time`` (this process' user + system CPU, the time spent waiting for the
simulator's answers excluded). Polls run back to back, in rounds that alternate baseline
and new so drift and cache effects hit both alike; one warm-up round each first.

* ``read``: ``ModbusClient.read(holding, 0, 50, unit 1)``, i.e. one request and its
  answer. New: our MBAP client (drivers/modbus/tcp_client.py). Baseline, side by side:
  ``PymodbusClient`` with the same endpoint, the pymodbus ``AsyncModbusTcpClient`` setup
  ``ModbusClient`` used for Modbus TCP before (transaction manager, trace hook).
* ``store``: what happens to the 50 registers of one block after the read. New:
  ``ModbusBusTask._store`` (precompiled decoders, ``PointTable.update_many``). Baseline:
  the former per-value loop (``codec.decode``, the quality check, ``PointTable.update``
  with its two clock reads), kept below verbatim. The table has one listener, a no-op
  function, so listener dispatch is counted but no listener's own work; in the daemon the
  telemetry, safety and OPC UA listeners add theirs on both sides alike.
* ``poll``: the bus task's whole ``_poll(device)``: counters, the request with its retry
  wrapper, the store. New: as shipped. Baseline: the same task with the pymodbus client
  and the former store.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import yaml

from smartpole.agent import logs
from smartpole.agent.buses.kind import BusContext
from smartpole.agent.buses.modbus import task as modbus_bus
from smartpole.agent.buses.modbus.config import ModbusTcpBus
from smartpole.agent.buses.registry import load_config
from smartpole.agent.cli import _with_bus_ports
from smartpole.agent.core.audit import AuditLog
from smartpole.agent.core.points import PointTable, Quality
from smartpole.drivers.errors import CodecError
from smartpole.drivers.modbus import codec
from smartpole.drivers.modbus.client import Endpoint, ModbusClient
from smartpole.drivers.modbus.plan import ReadBlock
from smartpole.drivers.modbus.points import RegisterKind
from smartpole.drivers.modbus.pymodbus_client import PymodbusClient

REPO = Path(__file__).resolve().parent.parent
BUS = "lan"
DEVICE = "bank"
REGISTERS = 50


def pole_config(folder: Path) -> Path:
    path = folder / "pole.yaml"
    config = {
        "pole": {"id": "bench-poll-path"},
        "profiles_dir": str(REPO / "bench" / "profiles"),
        "buses": {BUS: {"type": "modbus-tcp", "host": "127.0.0.1", "port": 1502}},
        "devices": {DEVICE: {"profile": "bench-register-bank", "bus": BUS, "unit_id": 1}},
    }
    path.write_text(yaml.safe_dump(config))
    return path


def start_sim(config: Path) -> tuple[subprocess.Popen[str], str]:
    sim = subprocess.Popen(
        [sys.executable, "-m", "smartpole.agent", "sim", "--config", str(config),
         "--turnaround-ms", "0", "--step-s", "0.1", "--log-level", "warning"],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    assert sim.stdout is not None
    line = sim.stdout.readline()
    match = re.match(r"serving bus (\S+) at tcp://(\S+)", line)
    if not match:
        sim.kill()
        raise SystemExit(f"simulator did not start: {line!r}")
    return sim, match.group(2)


def old_store(
    self: modbus_bus.ModbusBusTask, device: Any, block: ReadBlock, words: list[int]
) -> None:
    """``ModbusBusTask._store`` as it was before the block path: the baseline."""
    for point in block.points:
        spec = device.profile.points[point]
        offset = spec.address - block.address
        try:
            value = codec.decode(spec, words[offset : offset + spec.register_count])
        except CodecError:
            self._table.mark_point_bad(device.name, point)
            continue
        quality = modbus_bus._quality(spec, value)
        if quality is not Quality.GOOD:
            device.health.suspect_values += 1
        self._table.update(device.name, point, value, quality)


def no_op(*_args: object) -> None:
    pass


def cpu_per_call(call: Callable[[], object], n: int) -> float:
    started = time.process_time()
    for _ in range(n):
        call()
    return (time.process_time() - started) / n


async def acpu_per_call(call: Callable[[], Awaitable[object]], n: int) -> float:
    started = time.process_time()
    for _ in range(n):
        await call()
    return (time.process_time() - started) / n


async def side_by_side(
    sides: dict[str, Callable[[], Awaitable[object]]], polls: int, rounds: int
) -> dict[str, float]:
    """Median over rounds of CPU seconds per call, the sides alternating within a round."""
    for call in sides.values():
        await acpu_per_call(call, max(20, polls // 10))  # warm-up
    samples: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(rounds):
        for name, call in sides.items():
            samples[name].append(await acpu_per_call(call, polls))
    return {name: sorted(s)[len(s) // 2] for name, s in samples.items()}


async def measure(args: argparse.Namespace, config_path: Path, where: str) -> None:
    loaded = _with_bus_ports(load_config(config_path), [f"{BUS}={where}"])
    bus = loaded.pole.buses[BUS]
    assert isinstance(bus, ModbusTcpBus)
    endpoint = Endpoint("tcp", host=bus.host, tcp_port=bus.port)
    state = config_path.parent  # the audit log's folder; no writes are measured

    # ----- read: one request and its answer -----
    new_client = ModbusClient(endpoint, timeout_s=bus.timeout_s)
    old_client = PymodbusClient(endpoint, timeout_s=bus.timeout_s)
    await new_client.connect()
    await old_client.connect()
    holding = RegisterKind.HOLDING
    read = await side_by_side(
        {
            "pymodbus": lambda: old_client.read(holding, 0, REGISTERS, 1),
            "new": lambda: new_client.read(holding, 0, REGISTERS, 1),
        },
        args.polls,
        args.rounds,
    )

    # ----- store: the 50 values of one block into the point table -----
    def task_with(client: ModbusClient | PymodbusClient, *, old: bool) -> Any:
        table = PointTable()
        table.listen(no_op)
        task = modbus_bus.ModbusBusTask(
            BUS, bus, BusContext(loaded, table, AuditLog(state), lambda: True)
        )
        task._client = client
        if old:
            task._store = types.MethodType(old_store, task)  # type: ignore[method-assign]
        return task

    new_task = task_with(new_client, old=False)
    old_task = task_with(old_client, old=True)
    (new_device,) = new_task._devices.values()
    (old_device,) = old_task._devices.values()
    (block,) = new_device.plan
    words = await new_client.read(holding, block.address, block.count, 1)
    values = len(block.points)
    store_n = args.polls * 10
    store_old, store_new = [], []
    for _ in range(args.rounds):
        store_old.append(cpu_per_call(lambda: old_task._store(old_device, block, words), store_n))
        store_new.append(cpu_per_call(lambda: new_task._store(new_device, block, words), store_n))
    store = {
        "old": sorted(store_old)[args.rounds // 2] / values,
        "new": sorted(store_new)[args.rounds // 2] / values,
    }

    # ----- poll: the bus task's whole poll of the device -----
    poll = await side_by_side(
        {"old": lambda: old_task._poll(old_device), "new": lambda: new_task._poll(new_device)},
        args.polls,
        args.rounds,
    )
    for device in (old_device, new_device):
        counters = device.health.counters
        if counters.requests != counters.ok:
            raise SystemExit(f"polls failed: {counters}")
    new_client.close()
    old_client.close()

    def bench(name: str, value: float, unit: str) -> None:
        print(f"BENCH {name} {value:.2f} {unit}", flush=True)

    us = 1e6
    bench("poll_read_pymodbus_cpu_us", read["pymodbus"] * us, "us/poll")
    bench("poll_read_new_cpu_us", read["new"] * us, "us/poll")
    bench("poll_read_pymodbus_vs_new", read["pymodbus"] / read["new"], "x")
    bench("poll_store_old_cpu_us_per_value", store["old"] * us, "us/value")
    bench("poll_store_new_cpu_us_per_value", store["new"] * us, "us/value")
    bench("poll_store_old_vs_new", store["old"] / store["new"], "x")
    bench("poll_path_old_cpu_us", poll["old"] * us, "us/poll")
    bench("poll_path_new_cpu_us", poll["new"] * us, "us/poll")
    bench("poll_path_old_vs_new", poll["old"] / poll["new"], "x")
    per_s = 50  # the gateway workload: 5 devices x 10 polls/s
    bench("poll_path_new_cpu_s_per_min_issue7", poll["new"] * per_s * 60, "s/min")
    bench("poll_path_old_cpu_s_per_min_issue7", poll["old"] * per_s * 60, "s/min")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--polls", type=int, default=1000, help="polls per side and round")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (median)")
    args, _ = parser.parse_known_args()  # run_all.py passes its own arguments to all
    logs.configure("warning", "console", stream=sys.stderr)  # stdout is for BENCH lines
    with tempfile.TemporaryDirectory(prefix="bench-poll-path-") as folder:
        config = pole_config(Path(folder))
        sim, where = start_sim(config)
        try:
            asyncio.run(measure(args, config, where))
        finally:
            sim.terminate()
            sim.wait(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
