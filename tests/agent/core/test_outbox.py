"""The on-disk outbox: ordering, acknowledgement, sequence numbers, and damaged files."""

from __future__ import annotations

import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from smartpole.agent.core.errors import AgentError
from smartpole.agent.core.outbox import (
    FILE_NAME,
    REPORT_STREAM,
    Outbox,
    OutboxError,
    Priority,
)
from smartpole.agent.core.outbox_store import OutboxStore


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def outbox(tmp_path: Path, clock: FakeClock) -> Iterator[Outbox]:
    with Outbox(tmp_path, clock=clock) as box:
        yield box


def seqs(box: Outbox, stream: str | None = None) -> list[tuple[str, int]]:
    return [(r.stream, r.seq) for r in box.pending(stream, limit=10_000)]


def test_append_numbers_each_stream_from_one(outbox: Outbox) -> None:
    assert [outbox.append("alarms", {"n": i}, priority=Priority.HIGH) for i in range(3)] == [
        1,
        2,
        3,
    ]
    assert outbox.append("audit", {"n": 0}, priority=Priority.NORMAL) == 1
    assert outbox.append("alarms", {"n": 3}, priority=Priority.HIGH) == 4


def test_pending_is_ordered_by_stream_then_seq(outbox: Outbox) -> None:
    for i in range(3):
        outbox.append("telemetry", {"i": i}, priority=Priority.LOW)
        outbox.append("alarms", {"i": i}, priority=Priority.HIGH)
    assert seqs(outbox) == [
        ("alarms", 1),
        ("alarms", 2),
        ("alarms", 3),
        ("telemetry", 1),
        ("telemetry", 2),
        ("telemetry", 3),
    ]
    assert seqs(outbox, "telemetry") == [("telemetry", 1), ("telemetry", 2), ("telemetry", 3)]
    assert [(r.stream, r.seq) for r in outbox.pending(limit=2)] == [("alarms", 1), ("alarms", 2)]
    first = outbox.pending("telemetry", limit=1)[0]
    assert (first.priority, first.payload) == (Priority.LOW, {"i": 0})
    assert outbox.pending("nothing-here") == []


def test_ack_deletes_up_to_and_including_the_given_seq(outbox: Outbox) -> None:
    for i in range(5):
        outbox.append("alarms", {"i": i}, priority=Priority.HIGH)
    outbox.append("audit", {"i": 0}, priority=Priority.NORMAL)
    assert outbox.ack("alarms", 3) == 3
    assert seqs(outbox) == [("alarms", 4), ("alarms", 5), ("audit", 1)]
    assert outbox.ack("alarms", 3) == 0  # acknowledged twice: at-least-once from the other side
    assert outbox.ack("alarms", 99) == 2  # more than was ever sent: everything, nothing more
    assert outbox.ack("unknown", 5) == 0
    assert seqs(outbox) == [("audit", 1)]


def test_seq_survives_reopen_and_never_goes_back_after_acks(
    tmp_path: Path, clock: FakeClock
) -> None:
    with Outbox(tmp_path, clock=clock) as box:
        for i in range(4):
            box.append("alarms", {"i": i}, priority=Priority.HIGH)
        epoch = box.epoch
        assert box.ack("alarms", 4) == 4  # everything acknowledged: no record left
    with Outbox(tmp_path, clock=clock) as box:
        assert box.epoch == epoch
        assert box.pending() == []
        assert box.append("alarms", {"i": 4}, priority=Priority.HIGH) == 5
        assert box.stats()["alarms"]["last_seq"] == 5
        assert box.stats()["alarms"]["acked_seq"] == 4


def test_pending_records_survive_reopen(tmp_path: Path, clock: FakeClock) -> None:
    with Outbox(tmp_path, clock=clock) as box:
        box.append("alarms", {"kind": "leakage"}, priority=Priority.HIGH)
        box.append("alarms", {"kind": "door_open"}, priority=Priority.HIGH)
        box.ack("alarms", 1)
    with Outbox(tmp_path, clock=clock) as box:
        (record,) = box.pending()
        assert (record.seq, record.payload) == (2, {"kind": "door_open"})


def test_streams_interleaved_keep_their_own_sequences(outbox: Outbox) -> None:
    expected: dict[str, list[int]] = {"a": [], "b": [], "c": []}
    for i in range(30):
        stream = "abc"[(i * 7) % 3]
        expected[stream].append(outbox.append(stream, {"i": i}, priority=1))
    for stream, numbers in expected.items():
        assert numbers == list(range(1, len(numbers) + 1))
        assert [r.seq for r in outbox.pending(stream)] == numbers
    outbox.ack("b", 5)
    assert [r.seq for r in outbox.pending("a")] == expected["a"]
    assert [r.seq for r in outbox.pending("b")] == expected["b"][5:]


def test_database_is_in_wal_mode(tmp_path: Path, outbox: Outbox) -> None:
    outbox.append("alarms", {}, priority=Priority.HIGH)
    other = sqlite3.connect(tmp_path / FILE_NAME)
    try:
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        other.close()


def test_payload_json_round_trip(outbox: Outbox) -> None:
    payload: dict[str, object] = {
        "text": "Störung Mast 12 — 过温 °C",
        "int": 2**53,
        "float": 0.1,
        "negative": -273.15,
        "flags": [True, False, None],
        "nested": {"a": {"b": [1, 2.5, "x"]}},
        "empty": {},
    }
    outbox.append("audit", payload, priority=Priority.NORMAL)
    assert outbox.pending("audit")[0].payload == payload


@pytest.mark.parametrize("payload", [{"value": float("nan")}, {"value": object()}])
def test_payload_that_is_not_json_is_an_outbox_error(
    outbox: Outbox, payload: dict[str, object]
) -> None:
    with pytest.raises(OutboxError, match="not JSON"):
        outbox.append("telemetry", payload, priority=Priority.LOW)
    assert outbox.append_failures == 1
    assert outbox.append("telemetry", {"value": 1.0}, priority=Priority.LOW) == 1  # no gap


def test_bad_arguments_are_programming_errors(outbox: Outbox) -> None:
    with pytest.raises(ValueError, match="stream"):
        outbox.append("", {}, priority=1)
    with pytest.raises(ValueError, match="stream"):
        outbox.append("a/b", {}, priority=1)
    with pytest.raises(ValueError, match="priority"):
        outbox.append("alarms", {}, priority=True)
    with pytest.raises(ValueError, match="limit"):
        outbox.pending(limit=0)


def test_stats_per_stream(outbox: Outbox, clock: FakeClock) -> None:
    outbox.append("alarms", {}, priority=Priority.HIGH)
    clock.now += 30
    outbox.append("alarms", {}, priority=Priority.HIGH)
    outbox.append("audit", {}, priority=Priority.NORMAL)
    clock.now += 10
    outbox.ack("audit", 1)
    assert outbox.stats() == {
        "alarms": {
            "count": 2,
            "oldest_age_s": 40.0,
            "last_seq": 2,
            "acked_seq": 0,
            "evicted": {},
        },
        "audit": {"count": 0, "oldest_age_s": None, "last_seq": 1, "acked_seq": 1, "evicted": {}},
    }


def test_garbage_file_is_moved_aside_and_a_fresh_outbox_starts(
    tmp_path: Path, clock: FakeClock
) -> None:
    garbage = b"this is not an sqlite database\x00\xff" * 200
    (tmp_path / FILE_NAME).write_bytes(garbage)
    with structlog.testing.capture_logs() as logs, Outbox(tmp_path, clock=clock) as box:
        assert box.append("alarms", {"after": "corruption"}, priority=Priority.HIGH) == 1
        assert box.recoveries == 1
    moved = [p for p in tmp_path.iterdir() if p.name.startswith(f"{FILE_NAME}.corrupt-")]
    assert [p.name for p in moved] == [f"{FILE_NAME}.corrupt-20231114T221320Z"]
    assert moved[0].read_bytes() == garbage  # kept for whoever wants to look at it
    assert [e["event"] for e in logs if e["log_level"] == "error"] == [
        "outbox_corrupt_moved_aside",
        "outbox_store_damaged",
    ]
    (damage,) = [e for e in logs if e["event"] == "outbox_store_damaged"]
    assert damage["lost"] == "unknown"  # no manifest and no tables: nobody can say
    with Outbox(tmp_path, clock=clock) as box:  # the fresh one is a good one
        assert [r.payload for r in box.pending("alarms")] == [{"after": "corruption"}]
        (report,) = box.pending(REPORT_STREAM)  # the platform hears of it
        assert report.payload["kind"] == "store_damaged"
        assert report.payload["lost"] == "unknown"


def test_damaged_pages_are_moved_aside(tmp_path: Path, clock: FakeClock) -> None:
    with Outbox(tmp_path, clock=clock) as box:
        for i in range(200):
            box.append("telemetry", {"i": i, "pad": "x" * 200}, priority=Priority.LOW)
    path = tmp_path / FILE_NAME
    data = bytearray(path.read_bytes())
    assert len(data) > 8 * 4096
    data[4096 : 8 * 4096] = b"\xa5" * (7 * 4096)  # the header survives, the tables do not
    path.write_bytes(bytes(data))
    with Outbox(tmp_path, clock=clock) as box:
        assert box.recoveries == 1
        assert box.pending("telemetry") == []
        damage = box.pending(REPORT_STREAM)[0].payload
        assert (damage["kind"], damage["lost"], damage["exact"]) == ("store_damaged", 200, True)
        assert box.append("telemetry", {}, priority=Priority.LOW) == 1


def test_a_foreign_database_is_moved_aside(tmp_path: Path, clock: FakeClock) -> None:
    other = sqlite3.connect(tmp_path / FILE_NAME)
    other.execute("CREATE TABLE records (something TEXT)")
    other.commit()
    other.close()
    with Outbox(tmp_path, clock=clock) as box:
        assert box.recoveries == 1
        assert box.append("alarms", {}, priority=Priority.HIGH) == 1


def test_a_new_file_gets_a_new_epoch(tmp_path: Path, clock: FakeClock) -> None:
    with Outbox(tmp_path, clock=clock) as box:
        first = box.epoch
        box.append("alarms", {}, priority=Priority.HIGH)
        assert box.pending()[0].epoch == first
    (tmp_path / FILE_NAME).write_bytes(b"\x00" * 8192)
    (tmp_path / f"{FILE_NAME}-wal").unlink(missing_ok=True)
    with Outbox(tmp_path, clock=clock) as box:
        assert box.epoch != first  # seq starts again at 1: the platform tells them apart
        assert len(box.epoch) == 16


def test_no_room_even_after_evicting_is_an_outbox_error_logged_once(
    tmp_path: Path, clock: FakeClock
) -> None:
    """Telemetry never evicts an alarm: with only alarms left, a LOW append is refused."""
    with (
        structlog.testing.capture_logs() as logs,
        Outbox(tmp_path, clock=clock, max_bytes=88 * 1024, report_interval_s=None) as box,
    ):
        alarms = 0
        while not box.evictions():  # fill with alarms until the first one is evicted
            box.append("alarms", {"i": alarms, "pad": "x" * 500}, priority=Priority.HIGH)
            alarms += 1
        kept = len(box.pending(limit=100_000))
        big = {"pad": "x" * 20_000}  # more than eviction left free, less than the bound
        error: OutboxError | None = None
        try:
            box.append("telemetry", big, priority=Priority.LOW)
        except OutboxError as exc:
            error = exc
        assert isinstance(error, AgentError)
        assert "full" in str(error)
        for _ in range(3):
            with pytest.raises(OutboxError):
                box.append("telemetry", big, priority=Priority.LOW)
        assert box.append_failures == 4
        assert box.evictions()["telemetry"] == {"refused": 4}
        assert box.stats()["telemetry"]["evicted"] == {"refused": 4}
        assert len(box.pending(limit=100_000)) == kept  # nothing half-written, no alarm lost
        box.ack("alarms", alarms)  # the uplink drains: room again
        assert box.append("telemetry", big, priority=Priority.LOW) == 1  # refused: no seq used
    assert [e["event"] for e in logs if e["event"].startswith("outbox_append")] == [
        "outbox_append_failed",
        "outbox_append_recovered",
    ]


def test_a_record_bigger_than_the_bound_is_refused_and_evicts_nothing_it_may_not(
    tmp_path: Path, clock: FakeClock
) -> None:
    with Outbox(tmp_path, clock=clock, max_bytes=64 * 1024) as box:
        box.append("alarms", {"kind": "door"}, priority=Priority.HIGH)
        with pytest.raises(OutboxError, match="full"):
            box.append("telemetry", {"pad": "x" * 200_000}, priority=Priority.LOW)
        assert [r.payload for r in box.pending("alarms")] == [{"kind": "door"}]


def test_closed_outbox_raises_outbox_error(tmp_path: Path) -> None:
    box = Outbox(tmp_path)
    box.close()
    box.close()
    with pytest.raises(OutboxError, match="closed"):
        box.append("alarms", {}, priority=Priority.HIGH)
    with pytest.raises(OutboxError, match="closed"):
        box.ack("alarms", 1)


def test_missing_state_directory_is_an_outbox_error_of_the_store(tmp_path: Path) -> None:
    with pytest.raises(OutboxError, match="cannot open"):
        OutboxStore(tmp_path / "missing")


class OutboxModel(RuleBasedStateMachine):
    """Any interleaving of appends, acks and restarts, checked against a plain model."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.TemporaryDirectory()
        self.box = Outbox(Path(self.dir.name))
        self.pending: dict[str, list[tuple[int, dict[str, object]]]] = {}
        self.last_seq: dict[str, int] = {}

    streams = st.sampled_from(["alarms", "audit", "telemetry"])

    @rule(stream=streams, n=st.integers(-1000, 1000))
    def append(self, stream: str, n: int) -> None:
        payload: dict[str, object] = {"n": n}
        seq = self.box.append(stream, payload, priority=Priority.NORMAL)
        assert seq > self.last_seq.get(stream, 0)  # strictly increasing, acked or not
        assert seq == self.last_seq.get(stream, 0) + 1
        self.last_seq[stream] = seq
        self.pending.setdefault(stream, []).append((seq, payload))

    @precondition(lambda self: bool(self.last_seq))
    @rule(data=st.data())
    def ack(self, data: st.DataObject) -> None:
        stream = data.draw(st.sampled_from(sorted(self.last_seq)))
        up_to = data.draw(st.integers(0, self.last_seq[stream] + 2))
        expected = [(s, p) for s, p in self.pending[stream] if s > up_to]
        assert self.box.ack(stream, up_to) == len(self.pending[stream]) - len(expected)
        self.pending[stream] = expected

    @rule()
    def restart(self) -> None:
        self.box.close()
        self.box = Outbox(Path(self.dir.name))

    @invariant()
    def pending_is_appended_minus_acked(self) -> None:
        expected = [
            (stream, seq, payload)
            for stream in sorted(self.pending)
            for seq, payload in self.pending[stream]
        ]
        got = [(r.stream, r.seq, r.payload) for r in self.box.pending(limit=10_000)]
        assert got == expected
        stats = self.box.stats()
        for stream, last in self.last_seq.items():
            assert stats[stream]["last_seq"] == last
            assert stats[stream]["count"] == len(self.pending[stream])

    def teardown(self) -> None:
        self.box.close()
        self.dir.cleanup()


OutboxModel.TestCase.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
test_outbox_model = OutboxModel.TestCase
