"""Hand labels: both file shapes read the same, the truth ranges, and the bar."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smartpole.models.labels import GROUPS, LabelsError, load, phantoms, score

CLASSES = ["car", "large", "truck", "bus", "motorcycle", "bicycle", "pedestrian", "person"]


def write(tmp_path: Path, data: Any) -> Path:
    path = tmp_path / "labels.json"
    path.write_text(json.dumps(data))
    return path


def test_the_shared_and_the_project_shapes_mean_the_same(tmp_path: Path) -> None:
    shared = load(
        write(
            tmp_path,
            {
                "clip": "a.mp4",
                "line": [[0, 10], [100, 10]],
                "events": [
                    {"frame": 3, "direction": "A", "class": "car"},
                    {"frame": 9, "direction": "B", "class": "large", "alt_class": "car"},
                ],
            },
        )
    )
    assert shared.line_arg == "0,10,100,10"
    assert shared.truth("in", "motor") == (1, 1)
    assert shared.truth("out", "heavy") == (0, 1)  # the van may be light or heavy
    assert shared.truth("out", "motor") == (1, 1)
    project = load(
        write(
            tmp_path,
            {
                "video": "a.mp4",
                "line": [[0, 10], [100, 10]],
                "crossings": [{"frame": 3, "direction": "in", "class": "car"}],
            },
        )
    )
    assert project.truth("in", "motor") == (1, 1)
    assert project.clip == "a.mp4"


@pytest.mark.parametrize(
    "data",
    [
        "not an object",
        {"clip": "a.mp4", "line": [[0, 0]], "events": []},
        {"clip": "a.mp4", "line": [[0, 0], [1, 1]], "events": [{"frame": 1}]},
        {
            "clip": "a.mp4",
            "line": [[0, 0], [1, 1]],
            "events": [{"frame": 1, "direction": "C", "class": "car"}],
        },
        {
            "clip": "a.mp4",
            "line": [[0, 0], [1, 1]],
            "events": [{"frame": 1, "direction": "A", "class": "tram"}],
        },
        {"clip": "a.mp4", "line": [[0, "nan"], [1, 1]], "events": []},
    ],
)
def test_a_file_that_is_not_labels_is_one_clear_error(tmp_path: Path, data: Any) -> None:
    with pytest.raises(LabelsError, match=r"labels\.json"):
        load(write(tmp_path, data))


events = st.lists(
    st.fixed_dictionaries(
        {
            "frame": st.integers(0, 10_000),
            "direction": st.sampled_from(["A", "B"]),
            "class": st.sampled_from(CLASSES),
        },
        optional={"alt_class": st.sampled_from(CLASSES)},
    ),
    max_size=40,
)


@given(events=events, extra=st.integers(-3, 3))
def test_a_count_equal_to_the_truth_passes_and_far_off_fails(
    tmp_path_factory: pytest.TempPathFactory, events: list[dict[str, Any]], extra: int
) -> None:
    path = write(
        tmp_path_factory.mktemp("l"), {"clip": "a", "line": [[0, 0], [9, 9]], "events": events}
    )
    labels = load(path)
    for direction in ("in", "out"):
        for group in GROUPS:
            low, high = labels.truth(direction, group)
            assert 0 <= low <= high <= len(labels.crossings)
    # Count exactly the main classes: every group is within the bar, nothing is a phantom.
    counts: dict[str, dict[str, int]] = {"in": {}, "out": {}}
    for c in labels.crossings:
        counts[c.direction][c.class_name] = counts[c.direction].get(c.class_name, 0) + 1
    assert all(row.ok for row in score(labels, counts))
    assert phantoms(labels, counts) == []
    # Twenty more cars in a direction is outside the bar (or a phantom) there.
    counts["in"]["car"] = counts["in"].get("car", 0) + 20 + extra
    rows = {(r.direction, r.group): r for r in score(labels, counts)}
    assert not rows[("in", "motor")].ok
