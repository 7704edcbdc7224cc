"""Last point values across restarts: an unreadable file is moved aside and its loss told."""

from __future__ import annotations

from pathlib import Path

import structlog

from smartpole.agent.core.points import PointTable
from smartpole.agent.state import FILE_NAME, PointStore


def test_an_unreadable_point_file_is_moved_aside_with_an_estimate_of_its_points(
    tmp_path: Path,
) -> None:
    path = tmp_path / FILE_NAME
    torn = (
        '{"version": 1, "points": [{"device": "ws", "point": "temperature", "value": 21.5},'
        ' {"device": "ws", "point": "humidity", "val'
    )
    path.write_text(torn)
    store = PointStore(tmp_path)
    with structlog.testing.capture_logs() as logs:
        assert store.restore(PointTable()) == 0
    damage = store.damage
    assert damage is not None
    assert (damage.store, damage.lost, damage.exact) == ("points", 2, False)
    assert damage.to_json()["kind"] == "store_damaged"
    assert [e["event"] for e in logs] == ["points_store_damaged"]
    assert not path.exists()
    assert damage.moved_to is not None
    assert Path(damage.moved_to).read_text() == torn


def test_an_empty_point_file_says_unknown(tmp_path: Path) -> None:
    (tmp_path / FILE_NAME).write_text("")
    store = PointStore(tmp_path)
    store.restore(PointTable())
    assert store.damage is not None
    assert store.damage.to_json()["lost"] == "unknown"
