"""Outbox bounds: priority-aware eviction by size and age, counting, reporting, salvage."""

from __future__ import annotations

import sqlite3
import tempfile
from collections import Counter
from pathlib import Path

import pytest
import structlog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smartpole.agent.core.outbox import FILE_NAME, REPORT_STREAM, Outbox, OutboxError, Priority

MAX = 88 * 1024  # the database gets 3/4 (66 KiB), its WAL the rest
PAD = "x" * 400


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def present(box: Outbox) -> dict[tuple[str, int], int]:
    """(stream, seq) -> priority of every record waiting."""
    return {(r.stream, r.seq): r.priority for r in box.pending(limit=1_000_000)}


def evicting(box: Outbox) -> bool:
    return box.evicting  # a call, so the type checker does not carry a narrowing across


def test_telemetry_is_thinned_first_then_dropped_then_traffic_then_alarms(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    with Outbox(tmp_path, clock=clock, max_bytes=MAX, report_interval_s=None) as box:
        for i in range(20):
            clock.now += 1
            box.append("alarms", {"i": i, "pad": PAD}, priority=Priority.HIGH)
            box.append("traffic", {"i": i, "pad": PAD}, priority=Priority.NORMAL)
        telemetry = 0
        while not box.evictions():
            clock.now += 1
            box.append("telemetry", {"i": telemetry, "pad": PAD}, priority=Priority.LOW)
            telemetry += 1
        # first: telemetry only (thinned, maybe dropped), alarms and traffic untouched
        assert list(box.evictions()) == ["telemetry"]
        assert box.evictions()["telemetry"]["thinned"] > 0
        assert box.pending("telemetry")[0].seq > 1
        # more traffic: telemetry goes entirely before the first traffic record does
        i = 0
        while "traffic" not in box.evictions():
            clock.now += 1
            box.append("traffic", {"i": i, "pad": PAD}, priority=Priority.NORMAL)
            i += 1
        assert box.pending("telemetry") == []
        assert len(box.pending("alarms", limit=1000)) == 20
        assert box.pending("traffic")[0].seq > 1  # oldest first
        # alarms: traffic goes entirely before the first alarm does
        while "alarms" not in box.evictions():
            clock.now += 1
            box.append("alarms", {"pad": PAD}, priority=Priority.HIGH)
        assert box.pending("traffic") == []
        assert box.pending("alarms")[0].seq > 1
        assert set(box.evictions()["telemetry"]) <= {"thinned", "size"}


def test_thinning_drops_every_other_old_telemetry_record(tmp_path: Path) -> None:
    clock = FakeClock()
    with Outbox(tmp_path, clock=clock, max_bytes=4 * MAX, report_interval_s=None) as box:
        n = 0
        while not box.evictions():
            clock.now += 1
            box.append("telemetry", {"i": n, "pad": PAD}, priority=Priority.LOW)
            n += 1
        thinned = box.evictions()["telemetry"]["thinned"]
        dropped = box.evictions()["telemetry"].get("size", 0)
        assert thinned > 0
        kept = {r.seq for r in box.pending("telemetry", limit=10_000)}
        gone = set(range(1, n + 1)) - kept
        odd = set(range(1, 2 * thinned, 2))  # 1, 3, 5, ...: every other, oldest first
        assert odd <= gone
        assert max(odd) < n / 2  # only the older half is thinned
        assert gone - odd == set(range(2, 2 * dropped + 1, 2))  # then the oldest go


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    ops=st.lists(
        st.tuples(
            st.sampled_from(["telemetry", "traffic", "alarms", "results"]),
            st.sampled_from([Priority.LOW, Priority.NORMAL, Priority.HIGH]),
            st.integers(0, 3000),
            st.booleans(),
        ),
        min_size=1,
        max_size=250,
    )
)
def test_high_is_never_evicted_while_lower_priorities_remain(
    ops: list[tuple[str, Priority, int, bool]],
) -> None:
    clock = FakeClock()
    with (
        tempfile.TemporaryDirectory() as tmp,
        Outbox(Path(tmp), clock=clock, max_bytes=MAX, report_interval_s=None) as box,
    ):
        last: dict[str, int] = {}
        appended: dict[tuple[str, int], int] = {}
        before = present(box)
        refused = 0
        for stream, priority, size, drain in ops:
            clock.now += 0.5
            try:
                seq = box.append(stream, {"pad": "y" * size}, priority=priority)
            except OutboxError:
                refused += 1
                continue
            assert seq > last.get(stream, 0)  # strictly increasing, never reused
            last[stream] = seq
            appended[stream, seq] = priority
            after = present(box)
            evicted = {key: appended[key] for key in before.keys() - after.keys()}
            lowest_left = min(after.values())
            for evicted_priority in evicted.values():
                # an eviction never reaches past a lower priority still stored
                assert evicted_priority <= lowest_left or evicted_priority <= priority
                if evicted_priority == Priority.HIGH:
                    assert all(p == Priority.HIGH for p in after.values())
                assert evicted_priority <= priority  # never above the incoming record
            before = after
            if drain and after:
                oldest = min(after)
                box.ack(oldest[0], oldest[1])
                appended.pop(oldest)
                before = present(box)
        counted = sum(n for per in box.evictions().values() for n in per.values())
        refused_counted = sum(per.get("refused", 0) for per in box.evictions().values())
        assert refused_counted == refused == box.append_failures
        assert counted - refused == len(appended.keys() - before.keys())


def test_age_bound_evicts_old_records_lowest_priority_first(tmp_path: Path) -> None:
    clock = FakeClock()
    with (
        structlog.testing.capture_logs() as logs,
        Outbox(tmp_path, clock=clock, max_age_s=3600, report_interval_s=None) as box,
    ):
        box.append("alarms", {"old": True}, priority=Priority.HIGH)
        box.append("telemetry", {"old": True}, priority=Priority.LOW)
        box.append("traffic", {"old": True}, priority=Priority.NORMAL)
        clock.now += 1800
        box.append("telemetry", {"old": False}, priority=Priority.LOW)
        clock.now += 1801  # the first three are past an hour now, the last is not
        assert [(r.stream, r.seq) for r in box.pending()] == [("telemetry", 2)]
        assert box.evictions() == {
            "alarms": {"age": 1},
            "telemetry": {"age": 1},
            "traffic": {"age": 1},
        }
        assert box.stats()["alarms"]["evicted"] == {"age": 1}
        assert box.stats()["alarms"]["count"] == 0
        assert box.append("alarms", {}, priority=Priority.HIGH) == 2  # the gap stays
    started = [e for e in logs if e["event"] == "outbox_eviction_started"]
    assert len(started) == 1
    assert started[0]["reason"] == "age"


def test_evict_expired_can_be_called_directly(tmp_path: Path) -> None:
    clock = FakeClock()
    with Outbox(tmp_path, clock=clock, max_age_s=10, report_interval_s=None) as box:
        assert box.evict_expired() == 0
        box.append("telemetry", {}, priority=Priority.LOW)
        clock.now += 11
        assert box.evict_expired() == 1
    with Outbox(tmp_path, clock=clock) as box:
        assert box.evict_expired() == 0  # no age bound configured
        assert box.evictions() == {"telemetry": {"age": 1}}  # kept in the file


def test_an_episode_is_logged_once_when_it_starts_and_once_when_it_stops(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    with (
        structlog.testing.capture_logs() as logs,
        Outbox(tmp_path, clock=clock, max_bytes=MAX, report_interval_s=None) as box,
    ):
        for i in range(600):  # several eviction passes in one outage
            box.append("telemetry", {"i": i, "pad": PAD}, priority=Priority.LOW)
        assert evicting(box)
        total = sum(box.evictions()["telemetry"].values())
        assert total > 100
        last = box.stats()["telemetry"]["last_seq"]
        assert last == 600
        box.ack("telemetry", last)  # the uplink drains everything
        assert not evicting(box)
    events = [e for e in logs if e["event"].startswith("outbox_eviction")]
    assert [e["event"] for e in events] == ["outbox_eviction_started", "outbox_eviction_stopped"]
    assert events[1]["total"] == total


def test_eviction_counts_are_reported_upstream_in_the_outbox_stream_throttled(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    with Outbox(tmp_path, clock=clock, max_bytes=MAX, report_interval_s=60) as box:
        i = 0
        while not box.evictions():
            box.append("telemetry", {"i": i, "pad": PAD}, priority=Priority.LOW)
            i += 1
        (first,) = box.pending(REPORT_STREAM)
        assert first.priority == Priority.HIGH
        assert first.payload["kind"] == "evictions"
        assert first.payload["evicted"] == box.evictions()
        assert first.payload["totals"] == box.evictions()
        for _ in range(300):  # more evictions within the minute: no second report yet
            box.append("telemetry", {"i": i, "pad": PAD}, priority=Priority.LOW)
            i += 1
        assert len(box.pending(REPORT_STREAM)) == 1
        clock.now += 61
        box.pending()  # the drain reports what is due even without an append
        reports = box.pending(REPORT_STREAM)
        assert [r.seq for r in reports] == [1, 2]
        counted = Counter[str]()
        for report in reports:
            evicted = report.payload["evicted"]
            assert isinstance(evicted, dict)
            for reason, n in evicted["telemetry"].items():
                counted[reason] += n
        assert dict(counted) == box.evictions()["telemetry"]  # each eviction reported once
        clock.now += 61
        box.pending()
        assert len(box.pending(REPORT_STREAM)) == 2  # nothing new, nothing sent


def test_unreported_counts_survive_a_restart(tmp_path: Path) -> None:
    clock = FakeClock()
    with Outbox(tmp_path, clock=clock, max_age_s=10, report_interval_s=None) as box:
        box.append("telemetry", {}, priority=Priority.LOW)
        clock.now += 11
        box.evict_expired()
    with Outbox(tmp_path, clock=clock, report_interval_s=60) as box:
        (report,) = box.pending(REPORT_STREAM)
        assert report.payload["evicted"] == {"telemetry": {"age": 1}}


def test_append_many_commits_once_and_numbers_in_order(tmp_path: Path) -> None:
    with Outbox(tmp_path) as box:
        assert box.append_many([]) == []
        seqs = box.append_many(
            [
                ("telemetry", {"i": 0}, Priority.LOW),
                ("alarms", {"i": 1}, Priority.HIGH),
                ("telemetry", {"i": 2}, Priority.LOW),
            ]
        )
        assert seqs == [1, 1, 2]
        with pytest.raises(OutboxError, match="not JSON"):
            box.append_many(
                [("telemetry", {"i": 3}, Priority.LOW), ("telemetry", {"x": object()}, 0)]
            )
        assert box.append_failures == 2
        assert [(r.stream, r.seq) for r in box.pending()] == [
            ("alarms", 1),
            ("telemetry", 1),
            ("telemetry", 2),
        ]
        with pytest.raises(ValueError, match="stream"):
            box.append_many([("bad/name", {}, 0)])


def test_bad_bounds_are_programming_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_age_s"):
        Outbox(tmp_path, max_age_s=0)
    with pytest.raises(ValueError, match="max_bytes"):
        Outbox(tmp_path, max_bytes=0)


def _records_pages(path: Path) -> list[int]:
    db = sqlite3.connect(path)
    try:
        rows = db.execute(
            "SELECT pageno FROM dbstat WHERE name = 'records' AND pagetype = 'leaf' ORDER BY pageno"
        ).fetchall()
        return [int(r[0]) for r in rows]
    finally:
        db.close()


def test_a_corrupt_file_is_salvaged_into_a_fresh_one(tmp_path: Path) -> None:
    clock = FakeClock()
    expected: dict[tuple[str, int], dict[str, object]] = {}
    with Outbox(tmp_path, clock=clock) as box:
        for i in range(300):
            stream = "alarms" if i % 10 == 0 else "telemetry"
            payload: dict[str, object] = {"i": i, "pad": "z" * 200}
            seq = box.append(stream, payload, priority=Priority.HIGH if i % 10 == 0 else 0)
            expected[stream, seq] = payload
        box.ack("alarms", 3)
        for seq in (1, 2, 3):
            del expected["alarms", seq]
        epoch = box.epoch
        box.flush()
    path = tmp_path / FILE_NAME
    (tmp_path / f"{FILE_NAME}-wal").unlink(missing_ok=True)  # checkpointed already
    pages = _records_pages(path)
    assert len(pages) > 10
    victim = pages[len(pages) // 2]
    data = bytearray(path.read_bytes())
    data[(victim - 1) * 4096 : victim * 4096] = b"\xa5" * 4096  # one torn data page
    path.write_bytes(bytes(data))
    with structlog.testing.capture_logs() as logs, Outbox(tmp_path, clock=clock) as box:
        assert box.recoveries == 1
        got = {
            (r.stream, r.seq): r.payload
            for r in box.pending(limit=10_000)
            if r.stream != REPORT_STREAM
        }
        assert all(expected[key] == payload for key, payload in got.items())  # nothing made up
        lost = len(expected) - len(got)
        assert 0 < lost < 30  # one page of records, the rest survives
        assert box.salvaged == len(got)
        assert box.epoch == epoch  # counters read whole: numbering continues, gaps visible
        assert box.append("telemetry", {}, priority=Priority.LOW) == 271
        assert box.append("alarms", {}, priority=Priority.HIGH) == 31
        assert box.stats()["alarms"]["acked_seq"] == 3
        corrupt = sum(per.get("corrupt", 0) for per in box.evictions().values())
        assert corrupt == lost
        damage, report = box.pending(REPORT_STREAM)  # the platform hears of the loss
        assert damage.payload["lost"] == lost
        assert report.payload["evicted"] == box.evictions()
    assert [e["event"] for e in logs if e["log_level"] in ("error", "warning")] == [
        "outbox_corrupt_moved_aside",
        "outbox_store_damaged",
        "outbox_eviction_started",
    ]
    moved = [p for p in tmp_path.iterdir() if ".corrupt-" in p.name]
    assert [p.read_bytes() for p in moved if not p.name.endswith("-wal")] == [bytes(data)]
    assert not [p for p in tmp_path.iterdir() if "salvage" in p.name]
