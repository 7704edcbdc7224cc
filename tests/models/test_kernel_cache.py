"""A Numba cache may cost a compile, never a start: damaged, unwritable or missing caches.

Each case runs a tiny kernel, defined like the real ones (``kernel_cache.njit``), in a
fresh interpreter: Numba reads its cache once per process, and a cold compile of a tiny
kernel takes a fraction of the real kernels' seconds. Before ``kernel_cache``, each of
these raised out of the kernel call, in every start of a worker.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

KERNEL = """
from smartpole.models.kernel_cache import njit

@njit
def add(a, b):
    return a + b
"""
RUN = """
import json, sys
sys.path.insert(0, sys.argv[1])
import structlog
from smartpole.models import kernel_cache
import tiny  # nothing may be logged here: a worker's stdout is still its protocol channel
with structlog.testing.capture_logs() as logs:
    repaired = kernel_cache.check()
    result = tiny.add(1, 2)
print(json.dumps({"repaired": repaired, "result": result, "events": [e["event"] for e in logs]}))
"""


def run(tmp_path: Path, **env: str) -> dict[str, Any]:
    (tmp_path / "code").mkdir(exist_ok=True)
    (tmp_path / "code" / "tiny.py").write_text(KERNEL)
    result = subprocess.run(
        [sys.executable, "-c", RUN, str(tmp_path / "code")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "cache"), **env},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (line,) = result.stdout.splitlines()  # structlog's default logger writes to stdout
    out: dict[str, Any] = json.loads(line)
    return out


def index(tmp_path: Path) -> Path:
    (found,) = (tmp_path / "cache").rglob("tiny.add-*.nbi")
    return found


def test_a_damaged_cache_file_is_emptied_and_the_kernel_compiled_again(tmp_path: Path) -> None:
    assert run(tmp_path) == {"repaired": 0, "result": 3, "events": []}
    index(tmp_path).write_bytes(b"garbage\n")  # what a torn write leaves

    assert run(tmp_path) == {"repaired": 1, "result": 3, "events": ["kernel_cache_damaged"]}

    # The fresh cache it wrote is what the next start reads: an empty data file (a power
    # cut after the rename, before the data reached the disk) is damage too.
    (data,) = (tmp_path / "cache").rglob("tiny.add-*.nbc")
    data.write_bytes(b"")
    assert run(tmp_path) == {"repaired": 1, "result": 3, "events": ["kernel_cache_damaged"]}


def blocked(path: Path) -> None:
    """Make ``path`` a folder with a file in it: opening it for reading fails, and so does
    replacing it (what Numba does to write), as on a full or read-only disk."""
    path.unlink(missing_ok=True)
    path.mkdir()
    (path / "keep").touch()


def test_a_cache_that_cannot_be_written_or_read_costs_a_compile(tmp_path: Path) -> None:
    run(tmp_path)
    (data,) = (tmp_path / "cache").rglob("tiny.add-*.nbc")
    index(tmp_path).unlink()
    blocked(data)  # the compile's save fails: the compiled kernel is used all the same
    assert run(tmp_path) == {"repaired": 0, "result": 3, "events": ["kernel_cache_not_saved"]}

    blocked(data.with_name(data.name.replace(".1.nbc", ".nbi")))  # no index was written
    out = run(tmp_path)  # unreadable, and emptying it fails too: used without a cache
    assert out == {"repaired": 1, "result": 3, "events": ["kernel_cache_disabled"]}


def test_without_any_cache_folder_the_kernel_is_compiled_uncached(tmp_path: Path) -> None:
    """The unit's situation without NUMBA_CACHE_DIR: package read-only, no home. Numba
    then refuses ``cache=True`` with a RuntimeError when the module is imported."""
    blocker = tmp_path / "not-a-folder"
    blocker.touch()
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "__pycache__").touch()  # the package folder: no cache beside it
    env = {
        "NUMBA_CACHE_DIR": str(blocker / "cache"),
        "HOME": str(blocker / "home"),
        "XDG_CACHE_HOME": str(blocker / "cache-home"),
    }
    out = run(tmp_path, **env)
    assert out == {"repaired": 0, "result": 3, "events": ["kernel_cache_unavailable"]}
