"""The .deb packages the packaging tests install: built once per test session.

``package/build_deb.py`` builds them from this checkout and, for upgrades, from patched
copies of it: a newer version, and a newer version whose daemon never says READY (the
broken release an upgrade must roll back from). Downloaded dependency wheels are cached
between builds and runs (``--wheel-cache``), so only the first build of a machine downloads.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

from helpers.paths import REPO

BUILD = REPO / "package" / "build_deb.py"
# What a copy of the checkout leaves out: environments, caches and earlier builds.
NOT_SOURCE = shutil.ignore_patterns(
    ".venv", ".git", "dist", "build", "*.egg-info", ".*_cache", ".hypothesis", "__pycache__"
)
# The line the broken release loses: the daemon's READY=1 to its service manager.
READY_CALL = 'return self.notify("READY=1")'


@dataclass(frozen=True)
class Deb:
    path: Path
    version: str
    arch: str


@dataclass(frozen=True)
class Packages:
    amd64: Deb
    arm64: Deb
    amd64_newer: Deb
    amd64_never_ready: Deb


def project_version(source: Path = REPO) -> str:
    version: str = tomllib.loads((source / "pyproject.toml").read_text())["project"]["version"]
    return version


def build(out: Path, *, arch: str, source: Path = REPO, version: str | None = None) -> Deb:
    """One package, built the way `make package` builds it."""
    out.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, str(BUILD), "--arch", arch, "--out", str(out), "--source", str(source)]
    if version is not None:
        argv += ["--version", version]
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=1200)
    assert done.returncode == 0, f"{' '.join(argv)}\n{done.stdout}\n{done.stderr}"
    made = sorted(out.glob(f"smartpole_*_{arch}.deb"))
    assert len(made) == 1, f"expected one package in {out}, found {made}"
    name = re.fullmatch(rf"smartpole_(.+)_{arch}\.deb", made[0].name)
    assert name is not None
    return Deb(made[0], name.group(1), arch)


def source_copy(where: Path, *, never_ready: bool = False) -> Path:
    """This checkout copied, optionally with the daemon's READY=1 taken out."""
    copy = where / "source"
    shutil.copytree(REPO, copy, ignore=NOT_SOURCE, symlinks=True)
    if never_ready:
        notifier = copy / "agent" / "sdnotify.py"
        text = notifier.read_text()
        assert READY_CALL in text, f"{notifier}: the READY call moved; update this helper"
        notifier.write_text(text.replace(READY_CALL, "return False  # broken on purpose"))
    return copy


def build_all(where: Path) -> Packages:
    base = project_version()
    broken_source = source_copy(where / "broken", never_ready=True)
    return Packages(
        amd64=build(where / "amd64", arch="amd64"),
        arm64=build(where / "arm64", arch="arm64"),
        amd64_newer=build(where / "newer", arch="amd64", version=f"{base}.post1"),
        amd64_never_ready=build(
            where / "never-ready", arch="amd64", source=broken_source, version=f"{base}.post2"
        ),
    )
