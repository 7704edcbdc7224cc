"""The uplink session number: one per connection attempt, growing across restarts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from smartpole.agent.config.uplink import UplinkConfig
from smartpole.agent.core.outbox import Outbox
from smartpole.agent.uplink.mqtt import MqttUplink
from smartpole.agent.uplink.session import FILE_NAME, SessionCounter


def test_numbers_grow_across_attempts_and_restarts(tmp_path: Path) -> None:
    first = SessionCounter(tmp_path)
    assert [first.next(), first.next(), first.next()] == [1, 2, 3]
    restarted = SessionCounter(tmp_path)  # a daemon restart reads the last number used
    assert restarted.next() == 4
    assert json.loads((tmp_path / FILE_NAME).read_text()) == {"version": 1, "session": 4}


@pytest.mark.parametrize(
    "content", [b"", b"{not json", b'{"session": -3}', b'{"session": true}', b"[1]", b"\xff"]
)
def test_a_damaged_file_restarts_the_count_above_any_count_reached(
    tmp_path: Path, content: bytes
) -> None:
    (tmp_path / FILE_NAME).write_bytes(content)
    counter = SessionCounter(tmp_path, wall=lambda: 1_767_225_600.7)
    assert counter.next() == 1_767_225_601
    assert SessionCounter(tmp_path).next() == 1_767_225_602


def test_a_file_in_the_way_of_the_state_file_is_counted_and_the_count_goes_on(
    tmp_path: Path,
) -> None:
    """A directory where the file should be: it cannot be replaced, even by root."""
    counter = SessionCounter(tmp_path)
    (tmp_path / FILE_NAME).mkdir()
    assert [counter.next(), counter.next()] == [1, 2]
    assert counter.write_failures == 2


def test_failed_writes_are_a_problem_in_diag_status(tmp_path: Path) -> None:
    counter = SessionCounter(tmp_path)
    config = UplinkConfig.model_validate({"host": "127.0.0.1"})
    with Outbox(tmp_path / "outbox") as outbox:
        uplink = MqttUplink(config, pole_id="p", outbox=outbox, base_dir=tmp_path, sessions=counter)
        counter.next()
        assert uplink.session_problem() is None
        (tmp_path / FILE_NAME).unlink()
        (tmp_path / FILE_NAME).mkdir()
        counter.next()
        assert "1 failed writes" in str(uplink.session_problem())
        assert uplink.status()["session_write_failures"] == 1
