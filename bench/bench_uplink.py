"""Uplink fleet benchmark: N poles' uplinks (the product code, in one process) on one Mosquitto.

Every simulated pole has its own outbox file. All connect and drain; then the broker goes
away while each pole queues a backlog; then it comes back. Reported: how the reconnects
spread out (backoff + jitter), the peak message rate the broker sees at a subscriber, how
long the fleet takes to drain, and that nothing is lost (every (epoch, stream, seq) arrives).

    .venv/bin/python bench/bench_uplink.py [--poles N] [--backlog K] [--outage S]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import aiomqtt
import structlog

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from helpers.broker import Broker
from smartpole.agent.config.uplink import UplinkConfig
from smartpole.agent.core.outbox import Outbox, Priority
from smartpole.agent.uplink.mqtt import MqttUplink


async def wait_for(predicate: object, limit_s: float) -> bool:
    deadline = time.monotonic() + limit_s
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def subscriber(port: int, arrivals: list[float], keys: set[tuple[str, str, int]]) -> None:
    async with aiomqtt.Client(
        "127.0.0.1", port, identifier="bench-platform", max_queued_incoming_messages=0
    ) as client:
        await client.subscribe("smartpole/v1/+/events", qos=0)
        async for message in client.messages:
            assert isinstance(message.payload, bytes)
            data = json.loads(message.payload)
            arrivals.append(time.monotonic())
            keys.add((data["epoch"], data["stream"], data["seq"]))


async def run(poles: int, backlog: int, outage_s: float, rate: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        broker = Broker(root / "broker")
        broker.start()
        config = UplinkConfig.model_validate(
            {
                "host": "127.0.0.1",
                "port": broker.port,
                "keepalive_s": 10,
                "backoff": {"initial_s": 1.0, "max_s": 8.0, "jitter": 0.5},
                "replay_rate_per_s": rate,
                "replay_burst": 10,
                "idle_poll_s": 0.5,
                "telemetry": {"enabled": False},
            }
        )
        outboxes = []
        uplinks = []
        for i in range(poles):
            folder = root / f"pole-{i}"
            folder.mkdir()
            outbox = Outbox(folder)
            outboxes.append(outbox)
            uplinks.append(MqttUplink(config, pole_id=f"pole-{i}", outbox=outbox, base_dir=folder))
        arrivals: list[float] = []
        keys: set[tuple[str, str, int]] = set()
        sub = asyncio.create_task(subscriber(broker.port, arrivals, keys))
        started = time.monotonic()
        tasks = [asyncio.create_task(u.run()) for u in uplinks]
        ok = await wait_for(lambda: all(u.state == "connected" for u in uplinks), 120)
        print(f"BENCH uplink_fleet_poles {poles} poles")
        print(f"BENCH uplink_fleet_first_connect_all {time.monotonic() - started:.2f} s ok={ok}")
        sub.cancel()
        await asyncio.gather(sub, return_exceptions=True)
        broker.stop()
        await wait_for(lambda: all(u.state != "connected" for u in uplinks), 60)
        for outbox in outboxes:
            for n in range(backlog):
                outbox.append("events", {"source": "mcu", "n": n}, priority=Priority.HIGH)
        await asyncio.sleep(outage_s)  # the outage itself: time is the point here
        connects_before = [u.connects for u in uplinks]
        broker.start()
        back = time.monotonic()
        sub = asyncio.create_task(subscriber(broker.port, arrivals, keys))
        reconnected: dict[int, float] = {}

        def all_back() -> bool:
            now = time.monotonic()
            for i, u in enumerate(uplinks):
                if i not in reconnected and u.connects > connects_before[i]:
                    reconnected[i] = now - back
            return len(reconnected) == poles

        ok = await wait_for(all_back, 120)
        total = poles * backlog
        drained = await wait_for(lambda: len(keys) >= total, 300)
        drain_s = time.monotonic() - back
        spread = sorted(reconnected.values())
        buckets = Counter(int(at - back) for at in arrivals if at >= back)
        peak = max(buckets.values()) if buckets else 0
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        sub.cancel()
        await asyncio.gather(sub, return_exceptions=True)
        for outbox in outboxes:
            outbox.close()
        broker.stop()
    print(f"BENCH uplink_fleet_backlog {total} records ({backlog}/pole, outage {outage_s:.0f} s)")
    if spread:
        print(f"BENCH uplink_fleet_reconnect_first {spread[0]:.2f} s")
        print(f"BENCH uplink_fleet_reconnect_median {spread[len(spread) // 2]:.2f} s")
        print(f"BENCH uplink_fleet_reconnect_last {spread[-1]:.2f} s all={ok}")
    print(f"BENCH uplink_fleet_peak_rate {peak} msg/s (bucket limit {poles * rate:.0f}/s)")
    print(f"BENCH uplink_fleet_drain {drain_s:.2f} s complete={drained}")
    print(f"BENCH uplink_fleet_lost {total - len(keys)} records", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--poles", type=int, default=200)
    parser.add_argument("--backlog", type=int, default=50)
    parser.add_argument("--outage", type=float, default=5.0)
    parser.add_argument("--rate", type=float, default=20.0)
    args, _ = parser.parse_known_args()
    logging.basicConfig(level=logging.CRITICAL)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    asyncio.run(run(args.poles, args.backlog, args.outage, args.rate))
    return 0


if __name__ == "__main__":
    sys.exit(main())
