"""The outbox when its storage fails: a full disk, a directory in its place, a budget to keep,
and files found zero-length or truncated (what was lost is counted, not hidden)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from smartpole.agent.core.outbox import (
    FILE_NAME,
    REPORT_STREAM,
    Outbox,
    Priority,
)
from smartpole.agent.core.outbox_salvage import MANIFEST_NAME


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def tmpfs() -> Iterator[Path]:
    """A small tmpfs of its own, so the test can fill it without touching anything else."""
    if os.getuid() != 0:
        pytest.skip("filling a disk needs a tmpfs of its own, and mounting one needs root")
    mount = Path(tempfile.mkdtemp(prefix="smartpole-tmpfs-"))
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        mount.rmdir()
        pytest.skip(f"cannot mount a tmpfs here (no CAP_SYS_ADMIN?): {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)
        mount.rmdir()


def fill(mount: Path, leave: int = 0) -> Path:
    """Fill the file system up to ``leave`` bytes free; return the filler to delete later."""
    filler = mount / "filler"
    st = os.statvfs(mount)
    size = max(0, st.f_bavail * st.f_frsize - leave)
    with filler.open("wb", buffering=0) as out, contextlib.suppress(OSError):
        out.write(b"\0" * size)
        while not leave:  # the last blocks, until the file system says no
            out.write(b"\0" * 4096)
    return filler


def stored(box: Outbox, stream: str) -> list[int]:
    return [int(str(r.payload["i"])) for r in box.pending(stream, limit=100_000)]


def test_full_disk_records_wait_in_memory_and_reach_the_file_in_order(tmpfs: Path) -> None:
    state = tmpfs / "state"
    state.mkdir()
    with structlog.testing.capture_logs() as logs, Outbox(state, report_interval_s=None) as box:
        box.append("alarms", {"i": 0}, priority=Priority.HIGH)
        box.flush()
        filler = fill(tmpfs)
        for i in range(1, 200):  # nothing raises: lights and safety never see the disk
            box.append("alarms", {"i": i, "pad": "x" * 300}, priority=Priority.HIGH)
        assert not box.available
        assert box.held > 0
        problem = box.problem()
        assert problem is not None
        assert "full" in problem
        failures = box.storage_failures
        for _ in range(50):  # the uplink asks again and again: no loop on the disk
            assert box.pending("alarms") == []
        assert box.storage_failures == failures
        filler.unlink()
        assert box.retry(force=True)
        assert box.held == 0
        assert box.problem() is None
        assert stored(box, "alarms") == list(range(200))  # all of them, in order
    events = [e["event"] for e in logs if e["event"].startswith("outbox_storage")]
    assert events == ["outbox_storage_failed", "outbox_storage_recovered"]  # once each


def test_a_nearly_full_disk_is_not_eaten_by_the_wal(tmpfs: Path) -> None:
    """~1 MB free took 17 KB per record in the WAL; checkpointing under pressure keeps it
    near the record's own size."""
    state = tmpfs / "state"
    state.mkdir()
    filler = fill(tmpfs, leave=1024 * 1024)
    try:
        free = os.statvfs(tmpfs).f_bavail * os.statvfs(tmpfs).f_frsize
        with Outbox(state, report_interval_s=None) as box:
            for i in range(1000):
                box.append("alarms", {"i": i, "pad": "x" * 200}, priority=Priority.HIGH)
            assert box.available
            assert box.held == 0
            used = free - os.statvfs(tmpfs).f_bavail * os.statvfs(tmpfs).f_frsize
            assert used / 1000 < 1024  # bytes per ~230-byte record, WAL included
            assert stored(box, "alarms") == list(range(1000))
    finally:
        filler.unlink()


def test_the_outbox_and_its_wal_stay_within_max_bytes(tmp_path: Path) -> None:
    budget = 256 * 1024
    clock = FakeClock()
    with Outbox(tmp_path, clock=clock, max_bytes=budget, report_interval_s=None) as box:
        peak = 0
        for i in range(3000):
            clock.now += 1
            box.append("telemetry", {"i": i, "pad": "y" * 200}, priority=Priority.LOW)
            if i % 25 == 0:
                box.flush()  # as the uplink's drain does
            files = [tmp_path / FILE_NAME, tmp_path / f"{FILE_NAME}-wal"]
            peak = max(peak, sum(p.stat().st_size for p in files if p.exists()))
        assert box.evictions()["telemetry"]["thinned"] > 0  # the bound was reached
    assert peak <= budget


def test_a_directory_in_place_of_the_file_degrades_then_recovers(tmp_path: Path) -> None:
    (tmp_path / FILE_NAME).mkdir()
    ticks = [0.0]
    with (
        structlog.testing.capture_logs() as logs,
        Outbox(tmp_path, monotonic=lambda: ticks[0], report_interval_s=None) as box,
    ):
        assert not box.available
        assert box.append("alarms", {"i": 0}, priority=Priority.HIGH) is None  # held
        assert box.pending() == []
        assert box.stats() == {}
        box.flush()  # nothing to make durable, nothing raised
        assert not box.retry()  # the backoff has not passed
        ticks[0] += 1.0
        assert not box.retry()  # tried: still a directory
        assert box.storage_failures == 2
        (tmp_path / FILE_NAME).rmdir()
        assert not box.retry()  # the backoff doubled
        ticks[0] += 2.0
        assert box.retry()
        assert stored(box, "alarms") == [0]
    assert [e["event"] for e in logs if e["event"].startswith("outbox_storage")] == [
        "outbox_storage_failed",
        "outbox_storage_recovered",
    ]


def test_the_memory_buffer_is_bounded_lowest_priority_first_and_counts_what_it_drops(
    tmp_path: Path,
) -> None:
    (tmp_path / FILE_NAME).mkdir()
    with Outbox(tmp_path, buffer_records=10, report_interval_s=0) as box:
        for i in range(5):
            box.append("alarms", {"i": i}, priority=Priority.HIGH)
        for i in range(8):
            box.append("telemetry", {"i": i}, priority=Priority.LOW)
        assert box.dropped == {"telemetry": 3}  # the oldest telemetry went, no alarm
        for i in range(5, 10):
            box.append("alarms", {"i": i}, priority=Priority.HIGH)
        assert box.dropped == {"telemetry": 8}  # alarms push telemetry out, never the reverse
        box.append("telemetry", {"i": 99}, priority=Priority.LOW)
        assert box.dropped == {"telemetry": 9}  # with only alarms held, telemetry is dropped
        for i in range(10, 12):
            box.append("alarms", {"i": i}, priority=Priority.HIGH)
        assert box.held == 10
        (tmp_path / FILE_NAME).rmdir()
        assert box.retry(force=True)
        assert stored(box, "alarms") == list(range(2, 12))  # and then the oldest alarms
        assert box.dropped == {"telemetry": 9, "alarms": 2}
        assert box.evictions() == {"alarms": {"buffer": 2}, "telemetry": {"buffer": 9}}
        box.pending()  # the eviction report is due (report_interval_s=0)
        (report,) = box.pending(REPORT_STREAM)
        assert report.payload["evicted"] == box.evictions()  # the platform hears of it


def _thirty_pending(state: Path) -> None:
    with Outbox(state, report_interval_s=None) as box:
        for i in range(40):
            box.append("alarms", {"i": i, "pad": "p" * 300}, priority=Priority.HIGH)
        box.ack("alarms", 10)  # 30 wait


def test_a_zero_length_outbox_is_moved_aside_and_its_loss_counted(tmp_path: Path) -> None:
    _thirty_pending(tmp_path)
    (tmp_path / FILE_NAME).write_bytes(b"")
    with structlog.testing.capture_logs() as logs, Outbox(tmp_path) as box:
        assert box.pending("alarms") == []
        reports = [r.payload for r in box.pending(REPORT_STREAM)]  # the platform hears of it
    (report,) = [r for r in reports if r["kind"] == "store_damaged"]
    (damaged,) = [e for e in logs if e["event"] == "outbox_store_damaged"]
    assert (damaged["lost"], damaged["exact"], damaged["recovered"]) == (30, True, 0)
    assert damaged["reason"] == "zero-length file"
    assert report["lost"] == 30
    assert report["store"] == "outbox"
    aside = Path(str(damaged["moved_to"]))
    assert aside.parent == tmp_path
    assert aside.name.startswith(f"{FILE_NAME}.corrupt-")
    assert aside.stat().st_size == 0  # kept as it was found


def test_a_zero_length_outbox_without_a_manifest_says_unknown(tmp_path: Path) -> None:
    _thirty_pending(tmp_path)
    (tmp_path / FILE_NAME).write_bytes(b"")
    (tmp_path / MANIFEST_NAME).unlink()
    with structlog.testing.capture_logs() as logs, Outbox(tmp_path) as box:
        (report,) = box.pending(REPORT_STREAM)
    (damaged,) = [e for e in logs if e["event"] == "outbox_store_damaged"]
    assert damaged["lost"] == "unknown"
    assert report.payload["lost"] == "unknown"


def test_a_truncated_outbox_counts_exactly_what_it_lost(tmp_path: Path) -> None:
    _thirty_pending(tmp_path)
    path = tmp_path / FILE_NAME
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with structlog.testing.capture_logs() as logs, Outbox(tmp_path) as box:
        kept = stored(box, "alarms")
    (damaged,) = [e for e in logs if e["event"] == "outbox_store_damaged"]
    assert damaged["exact"] is True
    assert damaged["recovered"] == len(kept)
    assert damaged["lost"] == 30 - len(kept) > 0
    assert set(kept) <= set(range(10, 40))
