"""Failed upgrades in ``releases.json`` go upstream once, through the durable outbox."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from helpers.contract import errors
from smartpole.agent.core.outbox import Outbox
from smartpole.agent.diag import render_status
from smartpole.agent.uplink.release_report import FAILED, FILE_NAME, ReleaseHistory

ROLLED = {
    "version": "0.3.0", "from": "0.2.1", "at": 1767225950.5, "outcome": "rolled_back",
    "reason": "release 0.3.0: not ready within 120 s", "reported": False,
}  # fmt: skip
RUNNING = {**ROLLED, "version": "0.2.2", "outcome": "running", "reason": None, "reported": True}
REFUSED = {**ROLLED, "version": "0.4.0", "outcome": "refused", "reason": "config check fails"}


def write(state: Path, history: list[dict[str, Any]], version: int = 1) -> Path:
    path = state / FILE_NAME
    path.write_text(json.dumps({"version": version, "history": history}))
    return path


def envelope(record: Any) -> dict[str, Any]:
    return {
        "pole": "pole-0042", "epoch": record.epoch, "stream": record.stream,
        "seq": record.seq, "ts": record.created_at, "data": record.payload,
    }  # fmt: skip


def test_each_unreported_failure_is_queued_once_and_marked(tmp_path: Path) -> None:
    path = write(tmp_path, [RUNNING, ROLLED, {**ROLLED, "reported": True}, REFUSED])
    with Outbox(tmp_path, report_interval_s=None) as outbox:
        assert ReleaseHistory(tmp_path).report(outbox) == 2
    with Outbox(tmp_path, report_interval_s=None) as outbox:  # durable: after a restart too
        records = outbox.pending("events")
        assert [r.payload for r in records] == [
            {"source": "release", "kind": "rolled_back", "version": "0.3.0", "from": "0.2.1",
             "at": 1767225950.5, "reason": "release 0.3.0: not ready within 120 s"},
            {"source": "release", "kind": "refused", "version": "0.4.0", "from": "0.2.1",
             "at": 1767225950.5, "reason": "config check fails"},
        ]  # fmt: skip
        for record in records:
            assert errors("event.schema.json", envelope(record)) == []
        saved = json.loads(path.read_text())
        assert saved["version"] == 1
        assert [e["reported"] for e in saved["history"]] == [True] * 4
        # The next start finds nothing left to report.
        history = ReleaseHistory(tmp_path)
        assert history.report(outbox) == 0
        assert history.status()["unreported"] == 0
        assert len(outbox.pending("events")) == 2


def test_no_file_means_nothing_to_report(tmp_path: Path) -> None:
    with Outbox(tmp_path, report_interval_s=None) as outbox:
        history = ReleaseHistory(tmp_path)
        assert history.report(outbox) == 0
        assert history.problem is None
        assert history.status() == {"history": [], "unreported": 0, "write_failures": 0}
    assert not (tmp_path / FILE_NAME).exists()


def test_a_file_of_another_format_is_a_problem_and_left_alone(tmp_path: Path) -> None:
    path = write(tmp_path, [ROLLED], version=2)
    before = path.read_bytes()
    with Outbox(tmp_path, report_interval_s=None) as outbox:
        history = ReleaseHistory(tmp_path)
        assert history.report(outbox) == 0
        assert outbox.pending("events") == []
    assert history.problem is not None
    assert "unknown format" in history.problem
    assert path.read_bytes() == before


def test_diag_status_shows_the_last_releases() -> None:
    status = {
        "pole": "p", "pole_name": None, "uptime_s": 5, "summary": "ok", "pid": 1,
        "config": "/etc/smartpole/pole.yaml", "buses": [], "devices": [], "problems": [],
        "releases": {"history": [RUNNING, ROLLED], "unreported": 1, "write_failures": 0},
    }  # fmt: skip
    text = render_status(status)
    assert "RELEASES" in text
    assert "rolled_back (unreported)" in text
    assert "not ready within 120 s" in text


JUNK = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=8,
)
ENTRY = st.fixed_dictionaries(
    {"outcome": st.sampled_from(["running", "rolled_back", "refused", "failed", "other"])},
    optional={
        "version": JUNK, "from": JUNK, "at": JUNK, "reason": JUNK,
        "reported": st.sampled_from([False, True, None, 0]),
    },
)  # fmt: skip


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(history=st.lists(ENTRY | JUNK, max_size=5))
@example(history=[{**ROLLED, "at": math.nan}, {**ROLLED, "at": math.inf}, {**ROLLED, "at": True}])
def test_whatever_the_file_holds_what_goes_up_is_valid(tmp_path: Path, history: list[Any]) -> None:
    # A fresh folder per example: tmp_path is shared by all of them, and an example that
    # hypothesis runs again (shrinking, replaying) would find the outbox of its first run.
    state = Path(tempfile.mkdtemp(dir=tmp_path))
    (state / FILE_NAME).write_text(json.dumps({"version": 1, "history": history}))
    with Outbox(state, report_interval_s=None) as outbox:
        queued = ReleaseHistory(state).report(outbox)
        records = outbox.pending("events")
    expected = [
        e for e in history
        if isinstance(e, dict) and e.get("outcome") in FAILED and e.get("reported") is False
    ]  # fmt: skip
    assert queued == len(records) == len(expected)
    for record in records:
        assert errors("event.schema.json", envelope(record)) == []
        at = record.payload["at"]
        assert at is None or (isinstance(at, float) and math.isfinite(at)), at
