"""Fixtures of the OPC UA server tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers.opcua import Env, make_env


@pytest.fixture
def env(tmp_path: Path) -> Env:
    """A fresh server state folder, clients and point table (see ``helpers.opcua.make_env``)."""
    return make_env(tmp_path)
