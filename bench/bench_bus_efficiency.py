"""How close a poll cycle of the demo pole's RS-485 Modbus bus comes to what the wire allows.

The bus is ``rs485-1`` of configs/poles/demo.yaml (weather station, lamp controller, supply
meter, 9600 baud). The real simulator serves it as a subprocess (``smartpole sim --bus
rs485-1 --turnaround-ms T``, T = 10 ms by default, a realistic device turnaround); it delays
every answer by the wire time of request and answer, the 3.5-character silence and T
(drivers/line.py ``reply_delay_s``).

Code path: the agent's own. A ``ModbusBusTask`` is built from the loaded demo config with
the bus moved to the simulator's pty exactly as ``smartpole run --bus-port`` does
(``cli._with_bus_ports``), connected, and then driven by calling its ``_poll`` for every
device in turn, which is what its ``_poll_forever`` loop does when every device is due at
once. So the reads are the devices' plans from ``plan_reads`` (profile limits), executed by
``ModbusClient`` through pymodbus on the pty, with the master-side 3.5-character silence
of ``PolledBus._request`` (``frame_gap_s``) before every request, and the values decoded into
a point table. Only the scheduler's pick of the next due device and the command queue are
left out. One cycle is timed from the start of one cycle to the start of the next (so the
silence after the last answer counts), median of ``--cycles`` after one warm-up cycle.

Lower bound of a cycle: for each planned request, the wire time of the 8-byte request, 3.5
characters of silence, the turnaround T, the wire time of the answer (5 + 2 x count bytes
for registers, 5 + ceil(bits / 8) for coils and discrete inputs) and 3.5 characters before
the next request; a character is 11 bits, the constant the simulator charges
(``smartpole.drivers.line.BITS_PER_CHAR``).

Plan optimality: an independent exhaustive search, with its own implementation of the rules
(same kind, span <= max registers / bits, holes <= max_gap, no refused area touched; a
single point is always a read of its own), finds the fewest requests by dynamic programming
over each device's points sorted by address. The DP is checked (assert) against brute force
over every segmentation for each device with <= 16 points, and on random profiles that pass
the product's own profile rules (no overlapping points except bits of one register, no point
in a refused area) against brute force and, for <= 7 points, against every set partition.
The same again with lessons a device could teach at run time (``learning.py``: a smaller
cap per register kind, barriers where points start), planned by ``plan_reads`` with them
and searched under the same rules (``plan_learnt_vs_optimal``).

Baseline, run side by side: one request per point, each point read alone with its own
register count, through the same bus task on the same simulator.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import math
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from smartpole.agent import logs
from smartpole.agent.buses.kind import BusContext
from smartpole.agent.buses.modbus.config import ModbusRtuBus
from smartpole.agent.buses.modbus.task import ModbusBusTask
from smartpole.agent.buses.registry import load_config
from smartpole.agent.cli import _with_bus_ports
from smartpole.agent.config.loader import LoadedConfig
from smartpole.agent.core.audit import AuditLog
from smartpole.agent.core.points import PointTable
from smartpole.drivers.line import BITS_PER_CHAR
from smartpole.drivers.modbus.plan import ReadBlock, plan_reads
from smartpole.drivers.modbus.points import DataType, PointSpec, RegisterKind
from smartpole.drivers.modbus.profile import ModbusLimits, ModbusProfile, RefusedArea

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / "configs" / "poles" / "demo.yaml"
BUS = "rs485-1"
READ_REQUEST_BYTES = 8  # unit, function, address (2), count (2), CRC (2)
BRUTE_FORCE_MAX_POINTS = 16
PARTITION_MAX_POINTS = 7
RANDOM_MAX_POINTS = 12


# ----- the wire's lower bound -----


def reply_bytes(block: ReadBlock) -> int:
    """unit, function, byte count, data, CRC (2)."""
    data = math.ceil(block.count / 8) if block.kind.is_bit else 2 * block.count
    return 5 + data


def lower_bound_s(blocks: Sequence[ReadBlock], baudrate: int, turnaround_s: float) -> float:
    char_s = BITS_PER_CHAR / baudrate
    gap_s = 3.5 * char_s if baudrate <= 19200 else 0.00175  # Modbus serial line 2.5.1.1
    return sum(
        READ_REQUEST_BYTES * char_s + gap_s + turnaround_s + reply_bytes(b) * char_s + gap_s
        for b in blocks
    )


# ----- an independent exhaustive search for the fewest reads -----


@dataclass(frozen=True)
class Lessons:
    """What a device taught the plan (``drivers/modbus/learning.py``), in the rules' terms:
    a smaller read limit per register kind, and addresses no read may straddle."""

    caps: Mapping[RegisterKind, int] = field(default_factory=dict)
    barriers: frozenset[tuple[RegisterKind, int]] = frozenset()


NOTHING_LEARNT = Lessons()


def segment_ok(
    points: Sequence[PointSpec], limits: ModbusLimits, lessons: Lessons = NOTHING_LEARNT
) -> bool:
    """May these points be read in one request? Written from the rules, not from plan.py."""
    if len(points) == 1:
        return True  # a point has to be read somehow, however it sits
    kind = points[0].kind
    if any(p.kind != kind for p in points):
        return False
    low = min(p.address for p in points)
    high = max(p.end for p in points)  # one past the last register read
    limit = limits.max_bits_per_read if kind.is_bit else limits.max_registers_per_read
    limit = min(limit, lessons.caps.get(kind, limit))
    if high - low > limit:
        return False
    # A barrier at A: the device refused a read holding both A-1 and A.
    if any(k == kind and low <= at - 1 and at <= high - 1 for k, at in lessons.barriers):
        return False
    covered: set[int] = set()
    for p in points:
        covered.update(range(p.address, p.end))
    hole = longest = 0
    for address in range(low, high):
        hole = 0 if address in covered else hole + 1
        longest = max(longest, hole)
    if longest > limits.max_gap:
        return False
    return not any(
        area.kind == kind and area.start <= high - 1 and area.end >= low for area in limits.refused
    )


def in_address_order(points: Mapping[str, PointSpec]) -> list[PointSpec]:
    return sorted(points.values(), key=lambda p: (p.kind.value, p.address, p.end))


def fewest_reads_dp(
    points: Mapping[str, PointSpec], limits: ModbusLimits, lessons: Lessons = NOTHING_LEARNT
) -> int:
    """best[i]: fewest reads for the points from i on; every segment i..j-1 is tried."""
    ordered = in_address_order(points)
    n = len(ordered)
    best = [0] * (n + 1)
    for i in range(n - 1, -1, -1):
        best[i] = min(
            1 + best[j] for j in range(i + 1, n + 1) if segment_ok(ordered[i:j], limits, lessons)
        )
    return best[0]


def fewest_reads_brute(
    points: Mapping[str, PointSpec], limits: ModbusLimits, lessons: Lessons = NOTHING_LEARNT
) -> int:
    """Every way of cutting the address-ordered points into runs: 2^(n-1) of them."""
    ordered = in_address_order(points)
    n = len(ordered)
    valid: dict[tuple[int, int], bool] = {}
    fewest = n
    for mask in range(1 << (n - 1)):
        cuts = [0, *(k + 1 for k in range(n - 1) if mask >> k & 1), n]
        runs = list(itertools.pairwise(cuts))
        if len(runs) >= fewest:
            continue
        for run in runs:
            if run not in valid:
                valid[run] = segment_ok(ordered[run[0] : run[1]], limits, lessons)
        if all(valid[run] for run in runs):
            fewest = len(runs)
    return fewest


def _partitions(items: list[PointSpec]) -> Iterator[list[list[PointSpec]]]:
    if not items:
        yield []
        return
    first, rest = items[0], items[1:]
    for partition in _partitions(rest):
        yield [[first], *partition]
        for i in range(len(partition)):
            yield [*partition[:i], [first, *partition[i]], *partition[i + 1 :]]


def fewest_reads_any_grouping(
    points: Mapping[str, PointSpec], limits: ModbusLimits, lessons: Lessons = NOTHING_LEARNT
) -> int:
    """Every set partition, not only runs in address order (Bell(n) of them)."""
    return min(
        len(groups)
        for groups in _partitions(list(points.values()))
        if all(segment_ok(group, limits, lessons) for group in groups)
    )


def blocks_break_rules(
    blocks: Sequence[ReadBlock],
    points: Mapping[str, PointSpec],
    limits: ModbusLimits,
    lessons: Lessons = NOTHING_LEARNT,
) -> int:
    """Planned reads whose points may not share a request, or whose range is not theirs;
    also counts a plan that misses a point or reads one twice."""
    bad = 0
    for block in blocks:
        specs = [points[name] for name in block.points]
        span = (min(s.address for s in specs), max(s.end for s in specs))
        if not segment_ok(specs, limits, lessons) or span != (block.address, block.end):
            bad += 1
    names = sorted(name for block in blocks for name in block.points)
    return bad + (names != sorted(points))


def random_profile(rng: random.Random) -> tuple[dict[str, PointSpec], ModbusLimits]:
    """Points laid out the way the product's profile check allows: no overlaps except
    bits of one register, refused areas only between points."""
    points: dict[str, PointSpec] = {}
    refused: list[RefusedArea] = []
    for kind in rng.sample(list(RegisterKind), rng.randint(1, 3)):
        if len(points) == RANDOM_MAX_POINTS:
            break
        address = rng.randint(0, 5)
        for _ in range(rng.randint(1, 6)):
            gap = rng.choice((0, 0, 0, 1, 1, 2, 3, 5))
            if gap and rng.random() < 0.3:
                refused.append(
                    RefusedArea(kind=kind, start=address, end=address + rng.randint(0, gap - 1))
                )
            address += gap
            if kind.is_bit:
                specs = [PointSpec(kind=kind, address=address, type=DataType.BOOL)]
            else:
                shape = rng.choice(("u16", "u32", "f64", "string", "bits"))
                if shape == "string":
                    length = rng.randint(1, 6)
                    specs = [
                        PointSpec(kind=kind, address=address, type=DataType.STRING, length=length)
                    ]
                elif shape == "bits":
                    bits = rng.sample(range(16), rng.randint(1, 3))
                    specs = [PointSpec(kind=kind, address=address, bit=b) for b in bits]
                else:
                    specs = [PointSpec(kind=kind, address=address, type=DataType(shape))]
            for spec in specs[: RANDOM_MAX_POINTS - len(points)]:
                points[f"p{len(points):02d}"] = spec
            address = specs[0].end
    limits = ModbusLimits(
        max_registers_per_read=rng.randint(1, 20),
        max_bits_per_read=rng.randint(1, 20),
        max_gap=rng.randint(0, 3),
        refused=refused,
    )
    return points, limits


def random_lessons(
    rng: random.Random, points: Mapping[str, PointSpec], limits: ModbusLimits
) -> Lessons:
    """Lessons a device could teach (``learning.py``): a cap per kind no smaller than the
    kind's widest point (a point is never cut), barriers where a point starts (where
    ``split_block`` cuts)."""
    caps: dict[RegisterKind, int] = {}
    barriers: set[tuple[RegisterKind, int]] = set()
    for kind in {spec.kind for spec in points.values()}:
        specs = [spec for spec in points.values() if spec.kind == kind]
        limit = limits.max_bits_per_read if kind.is_bit else limits.max_registers_per_read
        widest = max(spec.register_count for spec in specs)
        if rng.random() < 0.6 and widest < limit:
            caps[kind] = rng.randint(widest, limit - 1)
        starts = sorted({spec.address for spec in specs})[1:]
        barriers.update((kind, at) for at in rng.sample(starts, rng.randint(0, len(starts))))
    return Lessons(caps, frozenset(barriers))


def check_learnt_planner(random_profiles: int, seed: int) -> tuple[int, int, int, float]:
    """The plan with learnt caps and barriers against the exhaustive optimum under the same
    lessons. Returns (planned, optimal, blocks breaking the rules, worst ratio)."""
    rng = random.Random(seed + 1)
    planned = optimal = broken = 0
    worst = 1.0
    for _ in range(random_profiles):
        points, limits = random_profile(rng)
        lessons = random_lessons(rng, points, limits)
        dp = fewest_reads_dp(points, limits, lessons)
        assert dp == fewest_reads_brute(points, limits, lessons), (points, limits, lessons)
        if len(points) <= PARTITION_MAX_POINTS:
            assert dp == fewest_reads_any_grouping(points, limits, lessons), (points, lessons)
        blocks = plan_reads(points, limits, lessons.barriers, lessons.caps)
        broken += blocks_break_rules(blocks, points, limits, lessons)
        planned += len(blocks)
        optimal += dp
        worst = max(worst, len(blocks) / dp)
    return planned, optimal, broken, worst


def check_planner(
    profiles: Mapping[str, ModbusProfile], random_profiles: int, seed: int
) -> tuple[int, int, int, float]:
    """Plan vs exhaustive optimum; the exhaustive search itself is asserted against brute
    force. Returns (planned, optimal, blocks breaking the rules, worst random ratio)."""
    planned = optimal = broken = 0
    for profile in profiles.values():
        blocks = plan_reads(profile.points, profile.limits)
        dp = fewest_reads_dp(profile.points, profile.limits)
        groups = [profile.points] if len(profile.points) <= BRUTE_FORCE_MAX_POINTS else []
        if not groups:  # reads never mix kinds, so each kind is a problem of its own
            groups = [
                {n: s for n, s in profile.points.items() if s.kind == kind} for kind in RegisterKind
            ]
        split = sum(fewest_reads_dp(g, profile.limits) for g in groups if g)
        assert split == dp, (profile.model, split, dp)
        for group in groups:
            if 0 < len(group) <= BRUTE_FORCE_MAX_POINTS:
                brute = fewest_reads_brute(group, profile.limits)
                assert brute == fewest_reads_dp(group, profile.limits), profile.model
        planned += len(blocks)
        optimal += dp
        broken += blocks_break_rules(blocks, profile.points, profile.limits)
    rng = random.Random(seed)
    worst = 1.0
    for _ in range(random_profiles):
        points, limits = random_profile(rng)
        dp = fewest_reads_dp(points, limits)
        assert dp == fewest_reads_brute(points, limits), (points, limits)
        if len(points) <= PARTITION_MAX_POINTS:
            assert dp == fewest_reads_any_grouping(points, limits), (points, limits)
        blocks = plan_reads(points, limits)
        broken += blocks_break_rules(blocks, points, limits)
        worst = max(worst, len(blocks) / dp)
    return planned, optimal, broken, worst


# ----- the measured cycles -----


def one_read_per_point(profile: ModbusProfile) -> list[ReadBlock]:
    ordered = sorted(profile.points.items(), key=lambda item: (item[1].kind, item[1].address))
    return [ReadBlock(s.kind, s.address, s.register_count, (name,)) for name, s in ordered]


async def timed_cycles(task: ModbusBusTask, cycles: int) -> list[float]:
    """Start-to-start times of ``cycles`` back-to-back poll cycles after one warm-up."""
    devices = list(task._devices.values())
    starts = []
    for _ in range(1 + cycles):
        starts.append(time.monotonic())
        for device in devices:
            await task._poll(device)
    # The next cycle could start once the line has been silent for 3.5 characters.
    await asyncio.sleep(max(0.0, task._line_free_at - time.monotonic()))
    starts.append(time.monotonic())
    return [b - a for a, b in itertools.pairwise(starts)][1:]


def failures(task: ModbusBusTask) -> int:
    counters = task.health.counters
    return counters.requests - counters.ok


async def measure(
    config: LoadedConfig, cycles: int, state_dir: Path
) -> tuple[list[ReadBlock], list[float], list[ReadBlock], list[float]]:
    bus = config.pole.buses[BUS]
    assert isinstance(bus, ModbusRtuBus)
    task = ModbusBusTask(
        BUS, bus, BusContext(config, PointTable(), AuditLog(state_dir), lambda: True)
    )
    await task._connect()
    try:
        planned = [block for device in task._devices.values() for block in device.plan]
        planned_s = await timed_cycles(task, cycles)
        if failures(task):
            raise SystemExit(f"planned cycles: {failures(task)} requests failed")
        for device in task._devices.values():
            device.plan = one_read_per_point(device.profile)
        naive = [block for device in task._devices.values() for block in device.plan]
        naive_s = await timed_cycles(task, cycles)
        if failures(task):
            raise SystemExit(f"naive cycles: {failures(task)} requests failed")
    finally:
        await task._disconnect()
    return planned, planned_s, naive, naive_s


def start_simulator(turnaround_ms: float) -> tuple[subprocess.Popen[str], str]:
    sim = subprocess.Popen(
        [sys.executable, "-m", "smartpole.agent", "sim", "--config", str(CONFIG),
         "--bus", BUS, "--turnaround-ms", str(turnaround_ms), "--log-level", "warning"],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    assert sim.stdout is not None
    line = sim.stdout.readline()
    match = re.match(rf"serving bus {re.escape(BUS)} at (\S+)", line)
    if not match:
        sim.kill()
        raise SystemExit(f"simulator did not start: {line!r}")
    return sim, match.group(1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--turnaround-ms", type=float, default=10.0, help="device turnaround")
    parser.add_argument("--cycles", type=int, default=20, help="timed cycles per plan (>= 20)")
    parser.add_argument("--random-profiles", type=int, default=300, help="planner cross-checks")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    logs.configure("warning")  # the bus task's device_online events are not results

    loaded = load_config(CONFIG)
    profiles = {
        name: loaded.modbus_profile_of(name)
        for name, device in loaded.pole.devices.items()
        if device.bus == BUS
    }
    planned_n, optimal_n, broken, worst = check_planner(profiles, args.random_profiles, args.seed)
    learnt_planned, learnt_optimal, learnt_broken, learnt_worst = check_learnt_planner(
        args.random_profiles, args.seed
    )

    sim, port = start_simulator(args.turnaround_ms)
    try:
        config = _with_bus_ports(loaded, [f"{BUS}={port}"])
        with tempfile.TemporaryDirectory(prefix="smartpole-bench-") as tmp:
            planned, planned_s, naive, naive_s = asyncio.run(
                measure(config, args.cycles, Path(tmp))
            )
    finally:
        sim.send_signal(signal.SIGTERM)
        sim.wait(timeout=10)
    assert len(planned) == planned_n

    bus = config.pole.buses[BUS]
    assert isinstance(bus, ModbusRtuBus)
    bound = lower_bound_s(planned, bus.baudrate, args.turnaround_ms / 1000)
    cycle = statistics.median(planned_s)
    naive_cycle = statistics.median(naive_s)
    print(f"BENCH bus_cycle_s {cycle:.4f} s")
    print(f"BENCH bus_cycle_lower_bound_s {bound:.4f} s")
    print(f"BENCH bus_cycle_vs_lower_bound {cycle / bound:.3f} ratio")
    print("BENCH bus_cycle_vs_lower_bound_target 1.05 ratio")
    print(f"BENCH plan_requests {planned_n} requests")
    print(f"BENCH plan_requests_optimal {optimal_n} requests")
    print(f"BENCH plan_vs_optimal {planned_n / optimal_n:.3f} ratio")
    print("BENCH plan_vs_optimal_target 1.00 ratio")
    print(f"BENCH plan_vs_optimal_random_worst {worst:.3f} ratio")
    print(f"BENCH plan_blocks_breaking_limits {broken} blocks")
    print(f"BENCH plan_learnt_vs_optimal {learnt_planned / learnt_optimal:.3f} ratio")
    print(f"BENCH plan_learnt_vs_optimal_random_worst {learnt_worst:.3f} ratio")
    print(f"BENCH plan_learnt_blocks_breaking_limits {learnt_broken} blocks")
    print(f"BENCH plan_requests_naive {len(naive)} requests")
    print(f"BENCH bus_cycle_naive_s {naive_cycle:.4f} s")
    print(f"BENCH naive_vs_planned {naive_cycle / cycle:.3f} ratio")
    return 0


if __name__ == "__main__":
    sys.exit(main())
