"""Zero loss: SIGKILL the agent again and again at random moments, with the broker going
down and coming back at random moments too, then bring everything back.

A real platform-side subscriber (persistent MQTT 5 session, QoS 1) listens from the start.
Each life of the agent is killed after a random time: while it is still importing, opening
or recovering its outbox, polling, appending, replaying to the broker or waiting for it. The
broker is stopped or started at random moments of some lives. Before each kill the test
reads what the agent appended straight from the outbox file (read-only); at the end every
record up to each stream's last sequence number must have arrived, every copy of a record
with the payload that was appended, so after de-duplication by (epoch, stream, seq) there
is nothing lost and nothing that differs. The seed is printed, so a failure can be rerun.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from helpers.broker import Broker
from helpers.processes import Proc, pole_config
from helpers.subscriber import Key, StreamSubscriber
from helpers.waiting import wait_until


class Platform(StreamSubscriber):
    """The city platform's subscriber: a persistent session that survives broker restarts."""

    def __init__(self, port: int) -> None:
        super().__init__(port, "test-pole", "platform")

    def received(self) -> dict[Key, list[Any]]:
        """Each record's payload, as often as it arrived."""
        out: dict[Key, list[Any]] = {}
        for data in self.copies():
            out.setdefault((data["epoch"], data["stream"], data["seq"]), []).append(data["data"])
        return out


def read_outbox(state: Path) -> tuple[dict[Key, Any], dict[str, Any]]:
    """Every record waiting in the outbox file, and each stream's last sequence number;
    nothing yet if the first life was killed before it made the file."""
    path = state / "outbox.sqlite3"
    if not path.exists():
        return {}, {}
    uri = f"file:{path}?mode=ro"
    db = sqlite3.connect(uri, uri=True)
    try:
        meta = db.execute("SELECT value FROM meta WHERE key = 'epoch'").fetchone()
        rows = db.execute("SELECT stream, seq, payload FROM records").fetchall()
        last = dict(db.execute("SELECT stream, last_seq FROM streams").fetchall())
    except sqlite3.OperationalError as exc:
        if "no such table" not in str(exc):
            raise
        return {}, {}  # the first life was killed while it created the tables
    finally:
        db.close()
    if meta is None:
        return {}, {}
    epoch = meta[0]
    return {(epoch, s, q): json.loads(p) for s, q, p in rows}, {"epoch": epoch, **last}


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    with Broker(tmp_path / "broker") as running:
        yield running


def run_kills(
    tmp_path: Path,
    broker: Broker,
    simulator: Callable[..., Proc],
    spawn: Callable[..., Proc],
    *,
    kills: int,
    life_s: tuple[float, float],
) -> None:
    """``kills`` lives, each SIGKILLed a random time in ``life_s`` after it started or (half
    of them) after it appended its first record."""
    seed = int(os.environ.get("ZERO_LOSS_SEED", random.randrange(1 << 32)))
    rng = random.Random(seed)
    config = pole_config(tmp_path)
    data = yaml.safe_load(config.read_text())
    data["uplink"] = {
        "host": "127.0.0.1",
        "port": broker.port,
        "backoff": {"initial_s": 0.1, "max_s": 0.3, "jitter": 0.3},
        "idle_poll_s": 0.05,
        "replay_rate_per_s": 500,
        "telemetry": {"flush_interval_s": 0.1, "integrity_period_s": 1.0},
    }
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    state = tmp_path / "state"
    platform = Platform(broker.port)
    started = time.monotonic()
    try:
        sim = simulator(config)
        args = ["--config", str(config), "--state-dir", str(state)]
        bus = ["--bus-port", f"rs485-1={sim.extra['rs485-1']}"]
        start = lambda: spawn("run", *args, *bus, name="daemon")  # noqa: E731
        expected: dict[Key, Any] = {}
        last: dict[str, Any] = {}
        outages = appending_lives = 0
        working_lives = [i < kills // 2 for i in range(kills)]
        rng.shuffle(working_lives)
        for working in working_lives:
            before = read_outbox(state)[1].get("telemetry", 0)  # the last life's, all of it
            proc = start()
            # The kill moment is the input under test, chosen at random: half the lives die
            # anywhere from their first instruction on (imports, opening or recovering the
            # outbox, the first polls), the other half once they have appended (polling,
            # appending, replaying or waiting for the broker). Half of the lives also see
            # the broker go down, or come back, at a random moment.
            if working:
                wait_until(
                    lambda: read_outbox(state)[1].get("telemetry", 0) > before,  # noqa: B023
                    15,
                    "this life's first record",
                )
            life = rng.uniform(*life_s)
            flip = rng.uniform(0.0, life) if rng.random() < 0.5 else None
            if flip is not None:
                time.sleep(flip)
                if broker.running:
                    broker.stop()
                    outages += 1
                else:
                    broker.start()
            time.sleep(life - (flip or 0.0))
            records, now = read_outbox(state)
            expected.update(records)
            last = now or last
            appending_lives += last.get("telemetry", 0) > before
            assert proc.process.poll() is None, f"died by itself: {proc.log_path.read_text()}"
            proc.process.send_signal(signal.SIGKILL)
            proc.process.wait()
        if not broker.running:
            broker.start()
        proc = start()
        epoch = last["epoch"]
        must_arrive = {
            (epoch, stream, seq)
            for stream, top in last.items()
            if stream != "epoch"
            for seq in range(1, top + 1)
        }
        wait_until(
            lambda: must_arrive <= platform.arrived_keys(), 30, "every record at the platform"
        )
        received = platform.received()
        arrived = len(platform.copies())
        assert read_outbox(state)[1]["epoch"] == epoch, "the outbox was replaced: records lost"
        for key, payload in expected.items():
            copies = received[key]
            assert all(copy == payload for copy in copies), (key, copies, payload)
        # Duplicates only ever repeat the same record (sequence numbers are never reused).
        for key, copies in received.items():
            assert all(copy == copies[0] for copy in copies), key
        # The kills must have hit working lives, not only start-ups, and outages.
        assert appending_lives >= kills // 2, (appending_lives, kills)
        assert outages >= 1
        print(f"zero-loss: seed {seed}, {kills} kills ({appending_lives} while appending), "
              f"{outages} broker outages, {len(must_arrive)} records must arrive, "
              f"{len(expected)} read from the file before kills, {arrived} messages, "
              f"{arrived - len(received)} duplicates dropped, "
              f"{time.monotonic() - started:.1f} s")  # fmt: skip
        proc.stop()
    finally:
        platform.close()


def test_zero_loss_across_20_sigkills_at_random_moments_and_broker_outages(
    tmp_path: Path, broker: Broker, simulator: Callable[..., Proc], spawn: Callable[..., Proc]
) -> None:
    run_kills(tmp_path, broker, simulator, spawn, kills=20, life_s=(0.0, 1.5))


@pytest.mark.soak
@pytest.mark.timeout(900)
def test_zero_loss_soak(
    tmp_path: Path, broker: Broker, simulator: Callable[..., Proc], spawn: Callable[..., Proc]
) -> None:
    run_kills(tmp_path, broker, simulator, spawn, kills=100, life_s=(0.0, 5.0))
