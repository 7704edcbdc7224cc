"""Fixtures of the analytics tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from helpers.analyze import analyze_json


@pytest.fixture(scope="session")
def analyzed_clip() -> Callable[[Path, str], dict[str, Any]]:
    """``analyze_json``, run once per clip and line for the whole session: the street clip's
    count is checked by two test modules and costs ten seconds of a core."""
    done: dict[tuple[Path, str], dict[str, Any]] = {}

    def run(clip: Path, line: str) -> dict[str, Any]:
        if (clip, line) not in done:
            done[(clip, line)] = analyze_json(clip, line)
        return done[(clip, line)]

    return run
