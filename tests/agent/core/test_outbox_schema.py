"""The outbox file's schema version: an older file migrated in one transaction after a copy
is kept; a newer release's file set aside whole (never salvaged), this release's copy used.

No shipped migration exists yet (version 1 is the first), so the steps here are the tests'
own: 1 -> 2 adds a column, 2 -> 3 fills it.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import structlog

from smartpole.agent.core.outbox import FILE_NAME, REPORT_STREAM, Outbox, Priority
from smartpole.agent.core.outbox_file import connect
from smartpole.agent.core.state_schema import LEDGER, copy_name, newer_name


def _add_note(db: sqlite3.Connection) -> None:
    db.execute("ALTER TABLE records ADD COLUMN note TEXT")


def _fill_note(db: sqlite3.Connection) -> None:
    db.execute("UPDATE records SET note = 'v3'")


STEPS = {1: _add_note, 2: _fill_note}


def _thirty_pending(state: Path) -> None:
    with Outbox(state, report_interval_s=None) as box:
        for i in range(40):
            box.append("alarms", {"i": i}, priority=Priority.HIGH)
        box.ack("alarms", 10)  # 30 wait


def _query(path: Path, sql: str) -> list[tuple[object, ...]]:
    db = sqlite3.connect(path)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


def _set_version(path: Path, version: int) -> None:
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {version}")
    db.close()


def test_an_older_outbox_is_copied_then_migrated(tmp_path: Path) -> None:
    _thirty_pending(tmp_path)
    path = tmp_path / FILE_NAME
    db, _ = connect(path, current=3, steps=STEPS)
    db.close()
    assert _query(path, "PRAGMA user_version") == [(3,)]
    assert _query(path, "SELECT DISTINCT note FROM records") == [("v3",)]
    copy = copy_name(path, 1)
    assert _query(copy, "PRAGMA user_version") == [(1,)]
    # The copy is a whole outbox of the old release: its records, its format, no WAL needed.
    assert not copy.with_name(copy.name + "-wal").exists()
    old = tmp_path / "old"
    old.mkdir()
    copy.rename(old / FILE_NAME)
    with Outbox(old, report_interval_s=None) as box:
        assert [r.seq for r in box.pending("alarms", limit=100)] == list(range(11, 41))


def test_a_failing_step_leaves_the_old_file_as_it_was(tmp_path: Path) -> None:
    _thirty_pending(tmp_path)
    path = tmp_path / FILE_NAME

    def broken(db: sqlite3.Connection) -> None:
        raise sqlite3.OperationalError("a step that fails half way")

    with pytest.raises(sqlite3.OperationalError):
        connect(path, current=3, steps={1: _add_note, 2: broken})
    assert _query(path, "PRAGMA user_version") == [(1,)]
    columns = [row[1] for row in _query(path, "PRAGMA table_info(records)")]
    assert "note" not in columns  # step 1 rolled back with the rest
    assert _query(path, "SELECT count(*) FROM records") == [(30,)]


def test_a_newer_outbox_is_set_aside_whole_and_reported(tmp_path: Path) -> None:
    _thirty_pending(tmp_path)
    path = tmp_path / FILE_NAME
    _set_version(path, 9)
    with structlog.testing.capture_logs() as logs, Outbox(tmp_path) as box:
        assert box.pending("alarms") == []  # nothing of a format it does not know
        reports = [r.payload for r in box.pending(REPORT_STREAM)]
    (report,) = [r for r in reports if r["kind"] == "store_damaged"]
    assert "newer release (version 9" in str(report["reason"])
    assert report["lost"] == "unknown"
    aside = newer_name(path, 9)
    assert report["moved_to"] == str(aside)
    assert _query(aside, "SELECT count(*) FROM records") == [(30,)]  # kept whole
    assert _query(aside, "PRAGMA user_version") == [(9,)]
    assert not list(tmp_path.glob(f"{FILE_NAME}.corrupt-*"))  # not salvaged
    assert not [e for e in logs if e["event"] == "outbox_corrupt_moved_aside"]
    assert any("version 9" in p and "started afresh" in p for p in LEDGER.problems(tmp_path))


def test_after_a_rollback_the_copy_left_at_the_upgrade_is_used(tmp_path: Path) -> None:
    _thirty_pending(tmp_path)
    path = tmp_path / FILE_NAME
    db, _ = connect(path, current=2, steps={1: _add_note})  # the upgrade
    db.execute("DELETE FROM records")  # the newer release sent them all
    db.close()
    with Outbox(tmp_path, report_interval_s=None) as box:  # rolled back to version 1
        assert len(box.pending("alarms", limit=100)) == 30  # as it was at the upgrade
    assert _query(path, "PRAGMA user_version") == [(1,)]
    assert _query(newer_name(path, 2), "SELECT count(*) FROM records") == [(0,)]
    assert any(f"using {FILE_NAME}.schema-1" in p for p in LEDGER.problems(tmp_path)), (
        LEDGER.problems(tmp_path)
    )
