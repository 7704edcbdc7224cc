"""Packages built once per session for every packaging test."""

from __future__ import annotations

import pytest

from helpers.packages import Packages, build_all


@pytest.fixture(scope="session")
def packages(tmp_path_factory: pytest.TempPathFactory) -> Packages:
    return build_all(tmp_path_factory.mktemp("packages"))
