"""The audit log: a torn line (a power cut mid-write) is skipped and counted, never fatal."""

from __future__ import annotations

import json
from pathlib import Path

import structlog

from smartpole.agent.core.audit import FILE_NAME, AuditLog, AuditRecord
from smartpole.agent.diag import render_audit


def _log_with(tmp_path: Path, count: int) -> AuditLog:
    audit = AuditLog(tmp_path)
    for i in range(count):
        audit.record(AuditRecord(actor="cli:uid=0", action="write", target=f"lamp{i}.dim_level",
                                 requested=i, ok=True, at=1_700_000_000.0 + i))  # fmt: skip
    return audit


def test_a_torn_line_is_skipped_and_counted_by_the_reader(tmp_path: Path) -> None:
    audit = _log_with(tmp_path, 3)
    path = tmp_path / FILE_NAME
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], lines[1][:25], lines[2]]) + "\n")  # one torn
    records = audit.tail(10)
    assert [r["target"] for r in records] == ["lamp0.dim_level", "lamp2.dim_level"]
    assert audit.torn_lines == 1
    assert "1 torn lines skipped" in render_audit(records, {"torn_lines": 1, "file": "x"})
    assert "torn" not in render_audit(records, {"torn_lines": 0})


def test_salvage_keeps_the_good_records_aside_the_damaged_file_and_counts_the_loss(
    tmp_path: Path,
) -> None:
    audit = _log_with(tmp_path, 4)
    path = tmp_path / FILE_NAME
    lines = path.read_text().splitlines()
    # A power cut tore record 1; record 2 was then appended onto it (no newline between).
    damaged = "\n".join([lines[0], lines[1][:30] + lines[2], lines[3]]) + "\n"
    path.write_text(damaged)
    with structlog.testing.capture_logs() as logs:
        damage = audit.salvage(now=1_700_000_100.0)
    assert damage is not None
    assert (damage.store, damage.lost, damage.recovered) == ("audit", 2, 2)
    assert damage.exact is False  # two records began on one torn line: an estimate
    (event,) = [e for e in logs if e["event"] == "audit_store_damaged"]
    assert event["lost"] == 2
    assert damage.moved_to is not None
    assert Path(damage.moved_to).read_text() == damaged  # kept as it was found
    assert Path(damage.moved_to).name == f"{FILE_NAME}.corrupt-20231114T221500Z"
    kept = [json.loads(line)["target"] for line in path.read_text().splitlines()]
    assert kept == ["lamp0.dim_level", "lamp3.dim_level"]
    assert audit.tail(10)[-1]["target"] == "lamp3.dim_level"
    assert audit.torn_lines == 0
    assert audit.salvage() is None  # a clean file: nothing to report, nothing moved


def test_each_line_carries_its_version_and_a_newer_one_is_skipped_counted_and_kept(
    tmp_path: Path,
) -> None:
    """A rollback leaves lines of a newer release in the file every release appends to: they
    are not misread, and salvage keeps them for that release."""
    audit = _log_with(tmp_path, 2)
    path = tmp_path / FILE_NAME
    assert [json.loads(line)["version"] for line in path.read_text().splitlines()] == [1, 1]
    newer = json.dumps({"version": 2, "who": "a newer release", "actor": "x"})
    unversioned = json.dumps({"actor": "old", "action": "write", "target": "t", "requested": 1})
    with path.open("a") as out:
        out.write(newer + "\n" + unversioned + "\n" + '{"actor": "torn\n')
    records = audit.tail(10)
    assert [r["actor"] for r in records] == ["cli:uid=0", "cli:uid=0", "old"]
    assert (audit.newer_lines, audit.torn_lines) == (1, 1)
    assert audit.salvage() is not None  # the torn line goes; the newer one stays
    assert newer in path.read_text().splitlines()
    audit.tail(10)
    assert (audit.newer_lines, audit.torn_lines) == (1, 0)
