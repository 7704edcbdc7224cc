"""Round-trip latency and pipelined throughput of the pole-MCU link against the wire's limit.

The MCU is ``McuEmulator`` (drivers/sim/mcu/emulator.py) at 115200 baud, in a subprocess of
its own (this script with ``--serve``) so its CPU time does not share the measuring loop. It
holds every frame for its wire time in both directions (drivers/line.py ``wire_time_s``,
which charges 11 bits per character, a parity slot included, so the emulated line is
already 10 % slower than a real 8N1 line). The host side is the product's own code path:
``McuClient`` over ``McuLink`` over ``AsyncSerialPort`` on the pty, connected and
configured as the agent would do it.

* Latency: ``--requests`` sequential ``set_level`` requests (the smallest request with an
  answer: an 8-byte frame out, a 9-byte frame back), each timed from the call to the typed
  result. Wire limit: (request frame + answer frame) bytes x 10 bits / 115200 (8N1).
* Throughput: ``--workers`` tasks issuing ``set_level`` back to back for ``--seconds``, so
  the MCU's window (4 frames) is always full and requests queue behind it (the link packs
  queued requests into shared frames). Wire limit: the line is full duplex and the MCU
  sends every answer in a frame of its own, so the answer direction bounds it at
  115200 / (answer frame bytes x 10) requests/s. The ratio printed is measured / limit
  (1.0 would be a saturated line).

Baseline, side by side: the same throughput run with a single requester (one request at a
time, the next sent when the previous is answered), i.e. without any pipelining.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import subprocess
import sys
import time
from typing import Final

from smartpole.agent import logs
from smartpole.drivers.mcu.client import McuClient
from smartpole.drivers.mcu.config import McuConfig, RelayConfig
from smartpole.drivers.mcu.dictionary import DICTIONARY
from smartpole.drivers.mcu.frame import MIN_FRAME
from smartpole.drivers.sim.mcu.emulator import McuEmulator

BAUD: Final = 115200
BITS_8N1: Final = 10
CONFIG: Final = McuConfig(relays=[RelayConfig(1)], heartbeat_ms=600_000, lease_ms=600_000)
REQUEST_FRAME: Final = MIN_FRAME + len(DICTIONARY.encode("set_level", tag=1, level=50))
ANSWER_FRAME: Final = MIN_FRAME + len(DICTIONARY.encode("level_state", tag=1, level=50, source=0))


async def serve() -> None:
    """The emulator, until stdin closes (the measuring process ended)."""
    async with McuEmulator(baudrate=BAUD, seed=1) as emulator:
        print(emulator.path, flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


async def latency(client: McuClient, requests: int) -> list[float]:
    samples = []
    for i in range(requests):
        started = time.perf_counter()
        await client.set_level(i % 101)
        samples.append(time.perf_counter() - started)
    return samples


async def throughput(client: McuClient, workers: int, seconds: float) -> float:
    done = 0
    deadline = time.perf_counter() + seconds

    async def worker(offset: int) -> None:
        nonlocal done
        level = offset
        while time.perf_counter() < deadline:
            await client.set_level(level % 101)
            level += 1
            done += 1

    started = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        for offset in range(workers):
            group.create_task(worker(offset))
    return done / (time.perf_counter() - started)


async def measure(path: str, args: argparse.Namespace) -> None:
    async with McuClient(path, CONFIG, baudrate=BAUD, exclusive=False) as client:
        await client.heartbeat(int(time.time()), 0)
        await latency(client, 20)  # warm-up: RTO estimate, caches
        samples = sorted(await latency(client, args.requests))
        rate = await throughput(client, args.workers, args.seconds)
        one_at_a_time = await throughput(client, 1, args.seconds / 4)
        stats = client.stats
    median = statistics.median(samples)
    p99 = samples[min(len(samples) - 1, round(0.99 * (len(samples) - 1)))]
    wire_rtt = (REQUEST_FRAME + ANSWER_FRAME) * BITS_8N1 / BAUD
    wire_rate = BAUD / (ANSWER_FRAME * BITS_8N1)
    print(f"BENCH mcu_rtt_median_ms {median * 1000:.3f} ms")
    print(f"BENCH mcu_rtt_p99_ms {p99 * 1000:.3f} ms")
    print(f"BENCH mcu_rtt_wire_limit_ms {wire_rtt * 1000:.3f} ms")
    print(f"BENCH mcu_rtt_vs_wire {median / wire_rtt:.2f} x")
    print(f"BENCH mcu_throughput {rate:.0f} req/s")
    print(f"BENCH mcu_throughput_wire_limit {wire_rate:.0f} req/s")
    print(f"BENCH mcu_throughput_vs_wire {rate / wire_rate:.2f} x")
    print(f"BENCH mcu_throughput_one_at_a_time_baseline {one_at_a_time:.0f} req/s")
    print(f"BENCH mcu_throughput_vs_one_at_a_time {rate / one_at_a_time:.2f} x")
    link = stats.link
    print(
        f"# frames_sent={link.frames_sent} messages={link.messages_sent} "
        f"retransmits={link.retransmits} timeouts={link.timeouts} srtt_ms={link.srtt_ms}",
        flush=True,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=500, help="sequential requests timed")
    parser.add_argument("--workers", type=int, default=16, help="concurrent requesters")
    parser.add_argument("--seconds", type=float, default=4.0, help="throughput run length")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args, _ = parser.parse_known_args()  # run_all.py passes its own arguments to all
    logs.configure("warning", "console", stream=sys.stderr)  # stdout is for BENCH lines
    if args.serve:
        asyncio.run(serve())
        return 0
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        path = server.stdout.readline().strip()
        if not path:
            print("# the emulator did not start", file=sys.stderr)
            return 1
        asyncio.run(measure(path, args))
    finally:
        with contextlib.suppress(BrokenPipeError):
            if server.stdin is not None:
                server.stdin.close()
        server.wait(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
