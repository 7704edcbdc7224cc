"""The package installs under its own names, editable (as `make` does) and as a real wheel."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from helpers.paths import REPO

SOURCE_FOLDERS = {
    "agent": "smartpole.agent",
    "drivers": "smartpole.drivers",
    "models": "smartpole.models",
}


def _declared_packages() -> set[str]:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    return set(pyproject["tool"]["setuptools"]["packages"])


def test_every_source_package_is_declared() -> None:
    found = set()
    for folder, name in SOURCE_FOLDERS.items():
        for init in (REPO / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(REPO / folder)
            found.add(".".join([name, *relative.parts]))
    assert found == _declared_packages(), "pyproject.toml's package list is out of date"


def test_editable_install_maps_to_the_source_folders() -> None:
    import smartpole.agent
    import smartpole.drivers
    import smartpole.models

    for module, folder in [
        (smartpole.agent, "agent"),
        (smartpole.drivers, "drivers"),
        (smartpole.models, "models"),
    ]:
        assert Path(module.__file__ or "").parent == REPO / folder


def test_wheel_installs_and_runs(tmp_path: Path) -> None:
    # Build from a copy: setuptools writes build/ next to pyproject.toml.
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    for folder in SOURCE_FOLDERS:
        shutil.copytree(
            REPO / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__")
        )
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(wheels), str(source)],
        check=True,
        capture_output=True,
        cwd=tmp_path,
    )  # fmt: skip
    (wheel,) = wheels.glob("smartpole-*.whl")
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target),
         str(wheel)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    assert not (target / "smartpole" / "__init__.py").exists(), "smartpole must stay a namespace"
    for package in _declared_packages():
        assert (target / package.replace(".", "/") / "__init__.py").is_file(), package
    assert (target / "smartpole" / "agent" / "py.typed").is_file()
    # The detector ships in the wheel, with its licence notice and provenance.
    assets = target / "smartpole" / "models" / "assets"
    for name in ("yolox-nano-coco-416.onnx", "NOTICE", "LICENSE-Apache-2.0.txt", "README.md"):
        assert (assets / name).read_bytes() == (REPO / "models" / "assets" / name).read_bytes()
    # Run from the wheel's copy, not the source tree: the config check needs every layer.
    probe = (
        "import smartpole.agent.cli as c, sys;"
        f"assert c.__file__.startswith({str(target)!r}), c.__file__;"
        "sys.exit(c.main(['config', 'check', sys.argv[1]]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe, str(REPO / "configs" / "poles" / "demo.yaml")],
        env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout
