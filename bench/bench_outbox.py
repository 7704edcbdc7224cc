"""Outbox append and drain rates, with the durability policy the product runs with.

Durability policy (agent/core/outbox.py): SQLite in WAL mode with ``synchronous=NORMAL``. Every
append is its own committed transaction without an fsync; a crash of the process loses
nothing committed, a power cut can lose only commits not yet checkpointed. ``pending()``
checkpoints the WAL (one fsync) before it hands a batch to the uplink, so nothing the
platform has seen can be lost, and alarm writers call ``flush()`` right after appending.
The append rate below therefore includes one ``flush()`` (checkpoint + fsync) per
``--batch`` appends, as the uplink's drain would cause.

* ``outbox_append_rate``: single ``append`` calls of ~200-byte JSON payloads, one commit
  each, plus one ``flush()`` per batch.
* ``outbox_append_many_rate``: ``append_many`` with ``--batch`` records, one commit (and one
  ``flush()``) per batch.
* ``outbox_drain_rate``: ``pending(limit=100)`` + ``ack`` cycles until empty (each
  ``pending`` includes its checkpoint).
* ``outbox_append_bounded_rate``: single appends into an outbox held at its ``max_bytes``
  bound, so telemetry is evicted (thinned and dropped) continuously.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

from smartpole.agent import logs
from smartpole.agent.core.outbox import Outbox, Priority

TARGET = 5000  # records/s: the outbox must keep up with the gateway workload


def payload(i: int, rng: random.Random) -> dict[str, object]:
    """About 200 bytes of JSON, like one telemetry batch entry."""
    return {
        "device": f"meter-{i % 7}",
        "ts": 1_700_000_000.0 + i * 0.1,
        "values": {
            "voltage_v": round(rng.uniform(220, 240), 2),
            "current_a": round(rng.uniform(0, 2), 3),
            "power_w": round(rng.uniform(0, 400), 1),
            "energy_kwh": round(rng.uniform(0, 9999), 3),
            "pf": round(rng.uniform(0.8, 1), 3),
        },
        "quality": "good",
        "pad": "p" * 40,
    }


def append_rate(n: int, batch: int, rng: random.Random) -> tuple[float, int]:
    with tempfile.TemporaryDirectory() as tmp, Outbox(Path(tmp)) as box:
        records = [payload(i, rng) for i in range(n)]
        size = len(json.dumps(records[0], separators=(",", ":")))
        started = time.perf_counter()
        for i, record in enumerate(records, 1):
            box.append("telemetry", record, priority=Priority.LOW)
            if i % batch == 0:
                box.flush()
        box.flush()
        return n / (time.perf_counter() - started), size


def append_many_rate(n: int, batch: int, rng: random.Random) -> float:
    with tempfile.TemporaryDirectory() as tmp, Outbox(Path(tmp)) as box:
        records = [("telemetry", payload(i, rng), int(Priority.LOW)) for i in range(n)]
        started = time.perf_counter()
        for first in range(0, n, batch):
            box.append_many(records[first : first + batch])
            box.flush()
        return n / (time.perf_counter() - started)


def drain_rate(n: int, rng: random.Random) -> float:
    with tempfile.TemporaryDirectory() as tmp, Outbox(Path(tmp)) as box:
        for first in range(0, n, 1000):
            box.append_many(
                [
                    ("telemetry", payload(i, rng), int(Priority.LOW))
                    for i in range(first, first + 1000)
                ]
            )
        drained = 0
        started = time.perf_counter()
        while batch := box.pending(limit=100):
            box.ack(batch[-1].stream, batch[-1].seq)
            drained += len(batch)
        elapsed = time.perf_counter() - started
        assert drained == n
        return drained / elapsed


def bounded_rate(n: int, batch: int, rng: random.Random) -> tuple[float, int]:
    with (
        tempfile.TemporaryDirectory() as tmp,
        Outbox(Path(tmp), max_bytes=2 * 1024 * 1024, report_interval_s=60) as box,
    ):
        for i in range(n):  # fill to the bound first
            box.append("telemetry", payload(i, rng), priority=Priority.LOW)
        box.flush()
        started = time.perf_counter()
        for i in range(n):
            box.append("telemetry", payload(i, rng), priority=Priority.LOW)
            if (i + 1) % batch == 0:
                box.flush()
        box.flush()
        rate = n / (time.perf_counter() - started)
        evicted = sum(box.evictions().get("telemetry", {}).values())
        return rate, evicted


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    logs.configure("error", "console", stream=sys.stderr)  # stdout is for BENCH lines
    rng = random.Random(args.seed)
    rate, size = append_rate(args.records, args.batch, rng)
    many = append_many_rate(args.records, args.batch, rng)
    drain = drain_rate(args.records, rng)
    bounded, evicted = bounded_rate(args.records // 2, args.batch, rng)
    print(
        "# fsync policy: WAL, synchronous=NORMAL, one commit per append (no fsync), "
        f"one WAL checkpoint + fsync per {args.batch} records (flush/pending)"
    )
    print(f"# payload ~{size} bytes of JSON, {args.records} records")
    print(f"BENCH outbox_append_rate {rate:.0f} records/s")
    print(f"BENCH outbox_append_target {TARGET} records/s")
    print(f"BENCH outbox_append_vs_target {rate / TARGET:.2f} x")
    print(f"BENCH outbox_append_many_rate {many:.0f} records/s")
    print(f"BENCH outbox_drain_rate {drain:.0f} records/s")
    print(f"BENCH outbox_append_bounded_rate {bounded:.0f} records/s")
    print(f"BENCH outbox_bounded_evicted {evicted} records")
    return 0


if __name__ == "__main__":
    sys.exit(main())
