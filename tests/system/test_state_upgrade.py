"""A rollback leaves state files of a newer release: the daemon starts anyway, reads none of
them as its own, uses the copies it left at the upgrade, and says what it set aside.

The state dir is laid out as the newer release leaves it when a rollback brings this one
back: ``points.json`` of a newer version with no copy (this release never migrated it),
``alarms.json`` of a newer version beside ``alarms.json.schema-1`` (this release's copy, kept
at the upgrade), and an outbox of a newer ``user_version``.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

from helpers.processes import Proc, api, pole_config
from smartpole.agent.core.outbox import FILE_NAME as OUTBOX_FILE

ALARMS_V1 = {"version": 1, "active": [], "watched": [["cabinet", "leakage"]], "history": []}


def test_the_daemon_starts_on_a_newer_release_state_and_reports_what_it_set_aside(
    tmp_path: Path, daemon: Callable[..., Proc]
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "points.json").write_text('{"version": 5, "points": "a future layout"}')
    (state / "alarms.json").write_text('{"version": 2, "alarms": "a future layout"}')
    (state / "alarms.json.schema-1").write_text(json.dumps(ALARMS_V1))
    db = sqlite3.connect(state / OUTBOX_FILE)
    db.execute("CREATE TABLE future (x)")
    db.execute("PRAGMA user_version = 7")
    db.close()

    proc = daemon(pole_config(tmp_path))  # waits for the API: it started
    status = api(proc, "status")
    problems = [p for p in status["problems"] if "newer release" in p]
    assert status["state_files"]["set_aside"] == 3  # points, alarms and the outbox
    assert len(problems) == 3, problems
    assert any("points.json" in p and "started afresh" in p for p in problems)
    assert any("alarms.json" in p and "using alarms.json.schema-1" in p for p in problems)
    assert any(OUTBOX_FILE in p and "version 7" in p for p in problems)
    assert len(proc.events("state_from_newer_release")) == 2  # once per JSON file
    code, _ = proc.stop()
    assert code == 0

    assert json.loads((state / "points.json.from-schema-5").read_text())["version"] == 5
    assert json.loads((state / "alarms.json.from-schema-2").read_text())["version"] == 2
    assert json.loads((state / "alarms.json").read_text())["version"] == 1
    aside = sqlite3.connect(state / f"{OUTBOX_FILE}.from-schema-7")
    assert aside.execute("PRAGMA user_version").fetchone() == (7,)
    aside.close()
