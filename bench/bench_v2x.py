"""Capture-to-wire latency of the V2X output: a 720p25 camera on one core, RSM at 10 Hz.

What issue #18 asks: from a frame's capture to its RSM on the wire, p99 <= 100 ms at 10 Hz
for a 1280x720 camera on one core, never a position older than 200 ms.

1. The 1280x720 25 fps stream of ``bench_pipeline`` (the street clip upscaled; cached).
2. A real Mosquitto broker as the RSU's, and an independent paho subscriber on the RSM
   topic, counting messages per wall second.
3. A camera worker with a geo-calibration and a ``v2x`` section reads the stream paced in
   real time, pinned to one CPU with one thread everywhere, for ~20 s after ``ready``.
4. Its health lines carry the latency percentiles the worker measured (capture: when the
   decoder handed the frame over, after pacing; wire: the message handed to the socket).

The baseline is the budget itself: ``v2x_latency_p99_vs_budget`` is p99 / 100 ms (below 1
meets it).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

# Run as `python bench/bench_v2x.py`: bench/ is on the path already, the tests' helpers not.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from bench_pipeline import (
    CACHE,
    CLIP,
    FPS,
    HEIGHT,
    LINE,
    MODEL,
    WIDTH,
    build_stream,
    one_core,
    running_worker,
)

from helpers import street_geo
from helpers.broker import Broker

BUDGET_MS = 100.0
RSU = "R-bench"


def worker_command(stream: Path, port: int) -> list[str]:
    config = {
        "source": str(stream),
        "loop": True,
        "realtime": True,
        "model": str(MODEL),
        "lines": {"main": {"from": list(LINE[:2]), "to": list(LINE[2:])}},
        "zones": {"road": street_geo.wrong_way_zone(WIDTH, HEIGHT)},
        "calibration": street_geo.calibration(WIDTH, HEIGHT),
        "interval_s": 10,
        "health_period_s": 1.0,
    }
    v2x = {"host": "127.0.0.1", "port": port, "rsu_id": RSU}
    command = [sys.executable, "-m", "smartpole.models.worker", "--camera", "bench"]
    return [*command, "--config", json.dumps(config), "--v2x", json.dumps(v2x)]


def subscribe(port: int, arrivals: list[float]) -> mqtt.Client:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-rsu")
    client.on_message = lambda _c, _u, _m: arrivals.append(time.monotonic())
    client.connect("127.0.0.1", port)
    client.subscribe(f"V2X/RSU/{RSU}/RSM/UP/#")
    client.loop_start()
    return client


def run(stream: Path, seconds: float) -> tuple[dict[str, Any], float]:
    """The last health line's ``v2x`` after ``seconds`` of sending, and the RSM rate."""
    arrivals: list[float] = []
    with tempfile.TemporaryDirectory() as folder, Broker(Path(folder) / "broker") as broker:
        subscriber = subscribe(broker.port, arrivals)
        try:
            with running_worker(worker_command(stream, broker.port)) as (_, lines):
                started = time.monotonic()
                time.sleep(seconds)  # a fixed measuring window, not synchronisation
                ended = time.monotonic()
        finally:
            subscriber.loop_stop()
            subscriber.disconnect()
    health = [m for m in lines if m["type"] == "health"]
    received = [t for t in arrivals if started <= t <= ended]
    if not health:
        raise SystemExit("no health line from the worker")
    v2x: dict[str, Any] = health[-1]["v2x"]
    return v2x, len(received) / (ended - started)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    if not CLIP.is_file() or not MODEL.is_file():
        print(f"# skipped: needs {CLIP} and {MODEL}")
        return 0
    build_stream(CACHE)
    cpu = one_core()
    print(f"# pinned to CPU {cpu}; stream {CACHE.name} ({WIDTH}x{HEIGHT} {FPS} fps)", flush=True)
    v2x, rate = run(CACHE, args.seconds)
    print(f"# worker v2x: {v2x}")
    p50, p99 = v2x["latency_p50_ms"], v2x["latency_p99_ms"]
    if p50 is None or p99 is None:
        raise SystemExit(f"no latency measured: {v2x}")
    print(f"BENCH v2x_latency_p50 {p50:.1f} ms")
    print(f"BENCH v2x_latency_p99 {p99:.1f} ms")
    print(f"BENCH v2x_latency_budget {BUDGET_MS:.0f} ms")
    print(f"BENCH v2x_latency_p99_vs_budget {p99 / BUDGET_MS:.2f} x")
    print(f"BENCH v2x_rsm_rate_at_subscriber {rate:.2f} Hz")
    print(f"BENCH v2x_stale_participants {v2x['stale']} participants")
    return 0


if __name__ == "__main__":
    sys.exit(main())
