"""The detector that ships with the product, found in the installed package and checked.

``smartpole analyze`` without ``--model`` and every camera whose config names no ``model:``
use it. It is package data (``models/assets/``, with its Apache-2.0 notice and provenance), so
it is wherever the package is: the repository in a development checkout, the release's venv
on a pole. Its sha256 is checked once per process before the detector loads it: a truncated
copy or a Git LFS pointer would otherwise surface as a confusing ONNX Runtime error, and a
different model with the same shapes would load and count differently without a word.
"""

from __future__ import annotations

import functools
import hashlib
from importlib import resources
from pathlib import Path
from typing import Final

from smartpole.models.errors import ModelError

MODEL_NAME: Final = "yolox-nano-coco-416.onnx"
MODEL_SHA256: Final = "e8af074932d4ed7e232278e3055cefcdea3edf178874a3694ae292649fb464dd"
_ASSETS: Final = "assets"


def shipped_model_file() -> Path:
    """Where the shipped model is, unchecked (``ModelError`` if the package lacks it)."""
    resource = resources.files("smartpole.models").joinpath(_ASSETS, MODEL_NAME)
    # A wheel installs as plain files; a zipped install would need a temporary copy, and
    # ONNX Runtime wants a path, so that case is an error rather than a silent extraction.
    if not isinstance(resource, Path) or not resource.is_file():
        raise ModelError(f"the shipped model {MODEL_NAME} is missing from the installed package")
    return resource


@functools.cache
def default_model() -> Path:
    """The shipped model's path, its sha256 checked (``ModelError`` if it does not match)."""
    path = shipped_model_file()
    with path.open("rb") as file:  # in chunks: the worker's memory is budgeted
        digest = hashlib.file_digest(file, "sha256").hexdigest()
    if digest != MODEL_SHA256:
        raise ModelError(
            f"{path}: sha256 {digest}, expected {MODEL_SHA256}: the shipped model is damaged; "
            "reinstall the package or configure a model path"
        )
    return path


def model_path(configured: str | Path | None) -> Path:
    """The model a camera or ``analyze`` uses: the configured path, else the shipped one."""
    return default_model() if configured is None else Path(configured)
