"""The suite's own layout: tests mirror the source folders and share code only via helpers.

Finding the test of a module stays mechanical (``drivers/mcu/link.py`` is tested in
``tests/drivers/mcu/``), and a test module can move or be renamed without breaking another
one, because none imports another test module or ``conftest``.
"""

from __future__ import annotations

import ast
from pathlib import Path

from helpers.paths import REPO

TESTS = REPO / "tests"
SOURCE_ROOTS = {"agent", "drivers", "models"}
# The suite's own folders: whole-process tests, checks on the repository, shared code, data,
# devices we did not write (built from source by the tests, such as a libmodbus server), and
# the Debian package (package/: built, then installed into a Debian root).
OWN_FOLDERS = {"system", "project", "helpers", "data", "devices", "package"}


def _folders() -> list[Path]:
    return sorted(
        path.relative_to(TESTS)
        for path in TESTS.rglob("*")
        if path.is_dir() and "__pycache__" not in path.parts
    )


def test_test_folders_mirror_the_source_folders() -> None:
    strays = [
        str(folder)
        for folder in _folders()
        if folder.parts[0] not in OWN_FOLDERS
        and (folder.parts[0] not in SOURCE_ROOTS or not (REPO / folder / "__init__.py").is_file())
    ]
    assert strays == [], "test folders without a source package of the same path"


def test_every_test_module_sits_in_a_folder() -> None:
    assert sorted(path.name for path in TESTS.glob("test_*.py")) == []


def _imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _is_test_code(module: str) -> bool:
    parts = module.split(".")
    return parts[0] in ("conftest", "tests") or parts[-1].startswith("test_")


def test_no_test_module_imports_another_or_conftest() -> None:
    found = {
        str(path.relative_to(TESTS)): sorted(filter(_is_test_code, _imported(path)))
        for path in sorted(TESTS.rglob("*.py"))
    }
    assert {path: names for path, names in found.items() if names} == {}
