"""``smartpole-release prepare``: a real venv built offline from the release's wheelhouse.

The wheelhouse holds a tiny hand-made ``smartpole`` wheel (a console script that prints its
version), so the build is the real one (venv, ensurepip, pip --no-index) in seconds. A full
disk is a real one: a 1 MiB tmpfs mounted over the release folder in a private mount
namespace (we run as root; ``unshare`` makes the mount invisible outside).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from helpers.release_tool import SYSTEM_PYTHON, TOOL, TOOL_ARGV

VERSION = "3.0"


def make_wheel(wheelhouse: Path, version: str) -> None:
    wheelhouse.mkdir(parents=True, exist_ok=True)
    info = f"smartpole-{version}.dist-info"
    files = {
        "fakesp.py": f"def main() -> None:\n    print({version!r})\n",
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: smartpole\nVersion: {version}\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n",
        f"{info}/entry_points.txt": "[console_scripts]\nsmartpole = fakesp:main\n",
    }
    files[f"{info}/RECORD"] = "".join(f"{name},,\n" for name in [*files, f"{info}/RECORD"])
    with zipfile.ZipFile(wheelhouse / f"smartpole-{version}-py3-none-any.whl", "w") as whl:
        for name, text in files.items():
            whl.writestr(name, text)


def run(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*TOOL_ARGV, "--root", str(root), *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_prepare_rebuilds_a_release_left_incomplete(tmp_path: Path) -> None:
    release = tmp_path / "opt/smartpole/releases" / VERSION
    make_wheel(release / "wheelhouse", VERSION)
    # What a killed earlier build left: a venv that never got its .complete marker.
    (release / "bin").mkdir()
    (release / "bin" / "smartpole").write_text("#!/bin/sh\nexit 99\n")
    (release / "pyvenv.cfg").write_text("home = /nowhere\n")

    result = run(tmp_path, "prepare", VERSION)
    assert result.returncode == 0, result.stderr
    assert (release / ".complete").read_text().strip() == VERSION
    answer = subprocess.run(
        [str(release / "bin" / "smartpole")], capture_output=True, text=True, check=True
    )
    assert answer.stdout.strip() == VERSION
    assert (release / "wheelhouse").is_dir(), "the package's own files stay"

    # Complete: a second prepare leaves it alone.
    stamp = (release / ".complete").stat().st_mtime_ns
    assert run(tmp_path, "prepare", VERSION).returncode == 0
    assert (release / ".complete").stat().st_mtime_ns == stamp


def test_prepare_without_a_matching_wheel_fails_cleanly(tmp_path: Path) -> None:
    release = tmp_path / "opt/smartpole/releases" / VERSION
    make_wheel(release / "wheelhouse", "2.9")
    result = run(tmp_path, "prepare", VERSION)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"smartpole-release: building release {VERSION} failed")
    assert sorted(p.name for p in release.iterdir()) == ["wheelhouse"]


DISK_FULL = """
set -e
mount -t tmpfs -o size=1m none "$RELEASES"
mkdir -p "$RELEASES/$VERSION"
cp -r "$WHEELHOUSE" "$RELEASES/$VERSION/wheelhouse"
set +e
"$PYTHON" -S -E "$TOOL" --root "$ROOT" prepare "$VERSION"
echo "rc=$?"
ls -A "$RELEASES/$VERSION"
"""


def test_a_full_disk_during_prepare_fails_cleanly_and_leaves_current(tmp_path: Path) -> None:
    if shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.fail("needs root and unshare (util-linux) to mount a tiny tmpfs", pytrace=False)
    root = tmp_path / "root"
    releases = root / "opt/smartpole/releases"
    (releases / "1.0").mkdir(parents=True)
    (releases / "1.0" / ".complete").write_text("1.0")
    (root / "opt/smartpole/current").symlink_to("releases/1.0")
    make_wheel(tmp_path / "wheelhouse", VERSION)
    result = subprocess.run(
        ["unshare", "--mount", "sh", "-c", DISK_FULL],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={
            **os.environ,
            "RELEASES": str(releases),
            "VERSION": VERSION,
            "ROOT": str(root),
            "WHEELHOUSE": str(tmp_path / "wheelhouse"),
            "PYTHON": str(SYSTEM_PYTHON),
            "TOOL": str(TOOL),
        },
    )
    out = result.stdout.strip().splitlines()
    assert "rc=1" in out, result.stdout + result.stderr
    assert out[out.index("rc=1") + 1 :] == ["wheelhouse"], "the partial venv must be removed"
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "disk full while building release 3.0" in lines[0]
    assert "the running release is untouched" in lines[0]
    assert (root / "opt/smartpole/current").readlink() == Path("releases/1.0")
    assert (releases / "1.0" / ".complete").exists()
    history = json.loads((root / "var/lib/smartpole/releases.json").read_text())["history"]
    assert [(e["version"], e["from"], e["outcome"], e["reported"]) for e in history] == [
        (VERSION, "1.0", "refused", False)
    ]
    assert "disk full" in history[0]["reason"]
