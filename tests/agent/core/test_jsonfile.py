"""The shared atomic JSON file: the old file or the new one, failures logged once."""

from __future__ import annotations

import json
from pathlib import Path

from structlog.testing import capture_logs

from smartpole.agent.core.jsonfile import JsonFile


def test_writes_replace_atomically_and_failures_are_logged_once(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    store = JsonFile(path, "thing")
    assert store.write({"a": 1})
    assert json.loads(path.read_text()) == {"a": 1}
    blocked = JsonFile(tmp_path / "missing-dir" / "state.json", "thing")
    with capture_logs() as logs:
        assert not blocked.write({"a": 2})
        assert not blocked.write({"a": 3})
        (tmp_path / "missing-dir").mkdir()
        assert blocked.write({"a": 4})
    assert [entry["event"] for entry in logs] == ["thing_write_failed", "thing_write_recovered"]
    assert blocked.write_failures == 2
    assert not list(tmp_path.glob("**/*.tmp")), "no temporary file is left behind"
