"""Schema versions of the JSON state files: the machinery proved on a kind the tests register
with three versions, so migrations run for real although every shipped file is at 1 or 2.

Version 1 of the test kind is ``{"items": [..]}`` or, unversioned, the bare list; version 2
doubles each item and keeps the count; version 3 renames ``items`` to ``values`` and appends
the count. The steps do not commute, so running them out of order or twice shows.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smartpole.agent.core.state_schema import (
    KEY,
    Schema,
    SchemaError,
    SchemaLedger,
    copy_name,
    newer_name,
    prepare,
)

NAME = "things.json"


def _to_2(data: Any) -> Any:
    items = data["items"] if isinstance(data, dict) else data
    return {"items": [2 * x for x in items], "count": len(items)}


def _to_3(data: Any) -> Any:
    return {"values": [*data["items"], data["count"]]}


def release(version: int) -> Schema:
    """The test kind as the release that knows ``version`` declares it."""
    steps = {1: _to_2, 2: _to_3}
    return Schema("things", version, {n: steps[n] for n in range(1, version)})


def read_as(path: Path, version: int, ledger: SchemaLedger) -> Any:
    """What a release knowing ``version`` reads: ``prepare``, then its own strict check."""
    prepare(path, release(version), ledger=ledger)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    assert data[KEY] == version if isinstance(data, dict) and KEY in data else version == 1
    return data


def test_an_unversioned_file_is_read_migrated_and_kept_for_the_old_release(tmp_path: Path) -> None:
    path, ledger = tmp_path / NAME, SchemaLedger()
    old = b"[1, 2, 3]"  # what a release before versions wrote
    path.write_bytes(old)

    assert read_as(path, 3, ledger) == {"values": [2, 4, 6, 3], KEY: 3}
    assert copy_name(path, 1).read_bytes() == old  # byte for byte, for the old release
    assert ledger.migrated == 1
    assert ledger.set_aside == []
    assert sorted(p.name for p in tmp_path.iterdir()) == [NAME, f"{NAME}.schema-1"]

    # Rolled back to release 1: it finds a newer file and its own copy, and reads that.
    assert read_as(path, 1, ledger) == [1, 2, 3]
    assert json.loads(newer_name(path, 3).read_text())["values"] == [2, 4, 6, 3]
    (aside,) = ledger.set_aside
    assert aside.copy == copy_name(path, 1)
    assert ledger.problems(tmp_path) == [
        f"state file {path}: written by a newer release (version 3, this release knows 1); "
        f"set aside as {NAME}.from-schema-3, using {NAME}.schema-1"
    ]
    assert ledger.problems(tmp_path / "elsewhere") == []


def test_a_current_file_is_left_alone(tmp_path: Path) -> None:
    path, ledger = tmp_path / NAME, SchemaLedger()
    path.write_text('{"values": [1], "version": 3}')
    before = path.stat().st_mtime_ns
    prepare(path, release(3), ledger=ledger)
    assert path.stat().st_mtime_ns == before
    assert ledger.migrated == 0
    assert [p.name for p in tmp_path.iterdir()] == [NAME]


def test_a_newer_file_without_a_copy_is_set_aside_and_the_store_starts_afresh(
    tmp_path: Path,
) -> None:
    path, ledger = tmp_path / NAME, SchemaLedger()
    newer = b'{"version": 4, "whatever": "a future release means by it"}'
    path.write_bytes(newer)
    assert read_as(path, 3, ledger) is None
    assert newer_name(path, 4).read_bytes() == newer  # kept whole, for whoever looks
    assert not path.exists()
    assert ledger.problems(tmp_path) == [
        f"state file {path}: written by a newer release (version 4, this release knows 3); "
        f"set aside as {NAME}.from-schema-4, started afresh"
    ]
    prepare(path, release(3), ledger=ledger)  # nothing left to set aside: logged once
    assert len(ledger.set_aside) == 1


def test_a_copy_that_is_not_of_this_version_is_not_used(tmp_path: Path) -> None:
    path, ledger = tmp_path / NAME, SchemaLedger()
    path.write_text('{"version": 3, "values": []}')
    copy_name(path, 2).write_text('{"version": 1, "items": []}')  # misnamed: not used
    prepare(path, release(2), ledger=ledger)
    assert not path.exists()
    assert ledger.set_aside[0].copy is None


def test_a_killed_migration_leaves_the_old_file_and_is_done_again(tmp_path: Path) -> None:
    path, ledger = tmp_path / NAME, SchemaLedger()
    path.write_text('{"version": 1, "items": [5]}')

    class Killed(BaseException):
        pass

    def killed(data: Any) -> Any:
        raise Killed  # the power goes between keeping the copy and rewriting the file

    dying = Schema("things", 3, {1: _to_2, 2: killed})
    with pytest.raises(Killed):
        prepare(path, dying, ledger=ledger)
    assert json.loads(path.read_text()) == {"version": 1, "items": [5]}  # the old release's
    assert json.loads(copy_name(path, 1).read_text()) == {"version": 1, "items": [5]}
    # A half-written temporary file from a kill during a write is no obstacle either.
    path.with_name(NAME + ".tmp").write_text('{"version": 3, "val')

    assert read_as(path, 3, ledger) == {"values": [10, 1], KEY: 3}
    assert json.loads(copy_name(path, 1).read_text()) == {"version": 1, "items": [5]}


@pytest.mark.parametrize("writes_before_the_kill", [0, 1])
def test_a_newer_file_replaced_by_the_copy_survives_a_kill_at_any_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, writes_before_the_kill: int
) -> None:
    from smartpole.agent.core import state_schema

    path, ledger = tmp_path / NAME, SchemaLedger()
    newer = '{"version": 2, "items": [4], "count": 1}'
    path.write_text(newer)
    copy_name(path, 1).write_text('{"version": 1, "items": [2]}')
    real = state_schema.write_atomic
    done: list[Path] = []

    def dies(target: Path, data: bytes) -> None:
        if len(done) == writes_before_the_kill:
            raise KeyboardInterrupt  # the power goes before this write
        real(target, data)
        done.append(target)

    monkeypatch.setattr(state_schema, "write_atomic", dies)
    with pytest.raises(KeyboardInterrupt):
        prepare(path, release(1), ledger=ledger)
    # Nothing lost: the newer file is still where this release will find it again.
    assert path.read_text() == newer
    monkeypatch.setattr(state_schema, "write_atomic", real)
    assert read_as(path, 1, ledger) == {"version": 1, "items": [2]}
    assert newer_name(path, 2).read_text() == newer


def test_a_step_that_fails_leaves_the_file_and_counts(tmp_path: Path) -> None:
    path, ledger = tmp_path / NAME, SchemaLedger()
    path.write_text('{"version": 1, "not_items": []}')  # step 1 needs "items"
    prepare(path, release(3), ledger=ledger)
    assert ledger.migrate_failures == 1
    (problem,) = ledger.problems(tmp_path)
    assert "migrating it from version 1 failed (KeyError" in problem
    assert ledger.migrated == 0
    assert json.loads(path.read_text()) == {"version": 1, "not_items": []}


def test_a_file_that_is_not_json_is_left_to_the_store(tmp_path: Path) -> None:
    path, ledger = tmp_path / NAME, SchemaLedger()
    path.write_bytes(b"{torn")
    prepare(path, release(3), ledger=ledger)
    assert path.read_bytes() == b"{torn"
    assert [p.name for p in tmp_path.iterdir()] == [NAME]


def test_a_schema_with_a_gap_in_its_steps_is_refused() -> None:
    with pytest.raises(SchemaError):
        Schema("gap", 3, {1: _to_2})
    with pytest.raises(SchemaError):
        Schema("extra", 1, {1: _to_2})


@settings(max_examples=60, deadline=None)
@given(
    items=st.lists(st.integers(-1000, 1000), max_size=6),
    unversioned=st.booleans(),
    stops=st.lists(st.sampled_from([1, 2, 3]), max_size=4),
    kill_at=st.none() | st.sampled_from([1, 2]),
)
def test_a_chain_gives_the_same_file_in_one_run_or_across_restarts(
    tmp_path_factory: pytest.TempPathFactory,
    items: list[int],
    unversioned: bool,
    stops: list[int],
    kill_at: int | None,
) -> None:
    """Releases 1..3 started in any (ascending) order, with a kill in a step on the way,
    leave the same file as release 3 alone; and every copy is its release's version."""
    original = items if unversioned else {"version": 1, "items": items}
    direct = tmp_path_factory.mktemp("direct") / NAME
    direct.write_text(json.dumps(original))
    expected = read_as(direct, 3, SchemaLedger())

    path = tmp_path_factory.mktemp("restarts") / NAME
    path.write_text(json.dumps(original))
    ledger = SchemaLedger()
    for version in sorted(stops):
        if kill_at is not None and kill_at < version:

            def killed(data: Any) -> Any:
                raise KeyboardInterrupt

            steps = {n: killed if n == kill_at else release(3).steps[n] for n in range(1, version)}
            with pytest.raises(KeyboardInterrupt):
                prepare(path, Schema("things", version, steps), ledger=ledger)
            kill_at = None
        read_as(path, version, ledger)
    assert read_as(path, 3, ledger) == expected
    for version in (1, 2):
        copy = copy_name(path, version)
        if copy.exists():
            data = json.loads(copy.read_text())
            assert release(3).version_of(data) == version
