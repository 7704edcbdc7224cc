"""OPC UA call ids: never reused across restarts, even when their state file is lost or
cannot be written (the processor would answer a reused id "duplicate" and run nothing)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from smartpole.agent.uplink.opcua_calls import CallIds


def test_ids_count_on_across_restarts(tmp_path: Path) -> None:
    path = tmp_path / "opcua_calls.json"
    first = CallIds(path)
    assert [first.next(), first.next()] == ["opcua-1", "opcua-2"]
    assert json.loads(path.read_text()) == {"version": 1, "next": 3}
    assert CallIds(path).next() == "opcua-3"


def test_an_unreadable_counter_gives_ids_that_cannot_repeat(tmp_path: Path) -> None:
    path = tmp_path / "opcua_calls.json"
    for garbage in ("{", '{"next": 0}', '{"next": true}', "[]"):
        path.write_text(garbage)
        ids = CallIds(path)
        assert re.fullmatch(r"opcua-1-[0-9a-f]{8}", ids.next()), garbage


def test_a_counter_that_cannot_be_written_is_counted_and_ids_stay_unique(tmp_path: Path) -> None:
    path = tmp_path / "opcua_calls.json"
    path.write_text('{"next": 5}')
    (tmp_path / "opcua_calls.json.tmp").mkdir()  # where the new file would go: every write fails
    ids = CallIds(path)
    made = [ids.next() for _ in range(3)]
    # The file still says 5: after a restart the numbers repeat, the random part does not.
    assert [i.rsplit("-", 1)[0] for i in made] == ["opcua-5", "opcua-6", "opcua-7"]
    assert all(re.fullmatch(r"opcua-[567]-[0-9a-f]{8}", i) for i in made), made
    assert ids.write_failures == 3
    assert json.loads(path.read_text()) == {"next": 5}
