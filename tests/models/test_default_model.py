"""The detector that ships: in the package with its licence and provenance, and checked."""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path

import pytest

from helpers.paths import REPO
from smartpole.models import default_model
from smartpole.models.default_model import MODEL_NAME, MODEL_SHA256, model_path, shipped_model_file
from smartpole.models.errors import ModelError

ASSETS = REPO / "models" / "assets"


def test_the_shipped_model_is_the_documented_file_with_its_notice_and_provenance() -> None:
    path = shipped_model_file()
    assert path == ASSETS / MODEL_NAME
    assert hashlib.sha256(path.read_bytes()).hexdigest() == MODEL_SHA256
    readme = (ASSETS / "README.md").read_text()
    for fact in (MODEL_SHA256, "7f3f2fa34b351e3d2af150893458106ad3f3a84f", "Apache"):
        assert fact in readme
    assert "Megvii" in (ASSETS / "NOTICE").read_text()
    assert "Apache License" in (ASSETS / "LICENSE-Apache-2.0.txt").read_text()
    # The Debian build checks the same digest.
    build = (REPO / "package" / "build_deb.py").read_text()
    assert re.search(rf'MODEL_SHA256 = "{MODEL_SHA256}"', build)


def test_no_configured_model_means_the_shipped_one_and_a_path_wins() -> None:
    assert model_path(None) == shipped_model_file()
    assert model_path("/opt/models/other.onnx") == Path("/opt/models/other.onnx")


def test_a_damaged_shipped_model_is_a_model_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    damaged = tmp_path / MODEL_NAME
    shutil.copyfile(shipped_model_file(), damaged)
    with damaged.open("r+b") as file:
        file.truncate(damaged.stat().st_size // 2)
    monkeypatch.setattr(default_model, "shipped_model_file", lambda: damaged)
    default_model.default_model.cache_clear()
    try:
        with pytest.raises(ModelError, match=r"sha256 .* the shipped model is damaged"):
            model_path(None)
    finally:
        default_model.default_model.cache_clear()
