"""The issue's accuracy bar on every hand-labelled clip, as a user runs ``smartpole analyze``.

Every labels file in ``../shared/data/labels/`` (a new one is picked up without code
changes) and the project's own street clip: per direction, motor vehicles within
max(1, 3 %) of the truth, heavy vehicles within max(1, 15 %), bicycles and pedestrians
within max(1, 15 %), and nothing at all counted in a direction with no traffic. The
shipped model is used (no ``--model``), and the clips were not tuned on (only the street
clip was, before the others existed). ``bench/bench_accuracy.py`` prints the same numbers.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from helpers.paths import SHARED_DATA, TEST_DATA
from smartpole.models.labels import load, phantoms, score

LABELS = [*sorted((SHARED_DATA / "labels").glob("*.json")), TEST_DATA / "street-2lane-labels.json"]


@pytest.mark.skipif(
    not (SHARED_DATA / "video").is_dir(), reason=f"shared test data {SHARED_DATA} is absent"
)
@pytest.mark.parametrize("path", LABELS, ids=[p.stem for p in LABELS])
def test_every_direction_is_counted_within_the_bar(
    path: Path, analyzed_clip: Callable[[Path, str], dict[str, Any]]
) -> None:
    labels = load(path)
    clip = SHARED_DATA / "video" / labels.clip
    counts = analyzed_clip(clip, labels.line_arg)["counts"]
    off = {
        f"{row.direction}/{row.group}": f"counted {row.counted}, true {row.truth_text}"
        for row in score(labels, counts)
        if not row.ok
    }
    assert not off, f"{labels.clip} outside the bar: {off}"
    assert not phantoms(labels, counts), f"{labels.clip}: counts where nothing passed: {counts}"
