"""The camera workers' Numba cache: a writable folder for every start, also on a read-only
install, so a restarted worker loads its kernels instead of compiling them.

The install is made read-only as the unit makes it (``ProtectSystem=strict``): the worker
runs in a private mount namespace where the ``smartpole.models`` folder is a read-only bind
mount of itself, and with no writable home, as the service user has none.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import stat
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path

import pytest
import structlog

import smartpole.models
from helpers.paths import SHARED_DATA
from helpers.waiting import eventually
from smartpole.agent.cameras import NUMBA_CACHE_ENV, CameraWorker, KernelCacheDir
from smartpole.agent.config.cameras import CameraConfig

CLIP = SHARED_DATA / "video" / "street-2lane-640x352.mp4"
MODEL = SHARED_DATA / "models" / "yolox-nano-coco-416.onnx"
PACKAGE = Path(smartpole.models.__file__).parent
# The wrapper given to CameraWorker as its "python": a private mount namespace with the
# package read-only (checked: the worker is not started if it can still write there).
READ_ONLY = """#!/bin/sh
exec unshare --mount {map_root} sh -c '
  mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" "$0" || exit 97
  if touch "$0/.rw-probe" 2>/dev/null; then rm -f "$0/.rw-probe"; exit 98; fi
  exec "$@"' {package} {python} "$@"
"""


def test_the_state_directory_holds_the_cache_when_the_unit_names_none(tmp_path: Path) -> None:
    cache = KernelCacheDir({"STATE_DIRECTORY": f"{tmp_path / 'state'}:{tmp_path / 'other'}"})
    env = cache.environment()
    assert env is not None
    assert env[NUMBA_CACHE_ENV] == str(tmp_path / "state" / "numba-cache")
    assert stat.S_IMODE((tmp_path / "state" / "numba-cache").stat().st_mode) == 0o700
    # The unit's own setting wins; without either, Numba's rules apply (nothing is set).
    named = KernelCacheDir({NUMBA_CACHE_ENV: str(tmp_path / "c"), "STATE_DIRECTORY": "/x"})
    assert (named.environment() or {})[NUMBA_CACHE_ENV] == str(tmp_path / "c")
    assert NUMBA_CACHE_ENV not in (KernelCacheDir({"PATH": "/bin"}).environment() or {})


def test_an_unwritable_cache_is_replaced_by_a_private_one_logged_once(tmp_path: Path) -> None:
    blocker = tmp_path / "state"
    blocker.touch()  # a file where the folder should be: unwritable even for root
    cache = KernelCacheDir({NUMBA_CACHE_ENV: str(blocker / "numba-cache")})
    with structlog.testing.capture_logs() as logs:
        first, second = cache.environment(), cache.environment()
        status = cache.status()
        blocker.unlink()
        blocker.mkdir()
        third = cache.environment()
    assert first is not None
    assert second is not None
    fallback = Path(first[NUMBA_CACHE_ENV])
    try:
        assert second[NUMBA_CACHE_ENV] == str(fallback)  # one fallback for every start
        assert fallback.is_dir()
        assert os.access(fallback, os.W_OK)
        assert status["unwritable_starts"] == 2
        assert "NotADirectoryError" in str(status["problem"])
        assert [e["event"] for e in logs] == ["numba_cache_unwritable", "numba_cache_writable"]
        assert (third or {})[NUMBA_CACHE_ENV] == str(blocker / "numba-cache")
        assert cache.status()["problem"] is None
    finally:
        shutil.rmtree(fallback, ignore_errors=True)


async def _start(worker: CameraWorker) -> tuple[float, float]:
    """Start the worker until its ready line; (seconds to it, the compile_s it reported)."""
    started = time.monotonic()
    task = asyncio.create_task(worker.run())
    try:
        await eventually(
            lambda: worker.ready is not None or worker.last_error or task.done(),
            240,
            "the worker's ready line",
        )
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        # asyncio reaps each child in a thread of its own, which ends just after the reap.
        await eventually(
            lambda: not [t for t in threading.enumerate() if t.name.startswith("waitpid")],
            5,
            "the reaper threads' end",
        )
    assert worker.ready is not None, f"{worker.state}: {worker.last_error}"
    return time.monotonic() - started, float(worker.ready["compile_s"])


def _worker(python: Path, environ: Mapping[str, str]) -> CameraWorker:
    config = CameraConfig.model_validate(
        {
            "source": str(CLIP),
            "model": str(MODEL),
            "lines": {"road": {"from": [150, 230], "to": [640, 230]}},
            "realtime": False,
        }
    )
    return CameraWorker(
        "street",
        config,
        CLIP.parent,
        on_summary=lambda *_: None,
        on_event=lambda *_: None,
        python=str(python),
        kernel_cache=KernelCacheDir(environ),
    )


@pytest.mark.skipif(
    not CLIP.exists() or not MODEL.exists(), reason=f"shared test data not found in {SHARED_DATA}"
)
@pytest.mark.timeout(600)
@pytest.mark.asyncio
async def test_a_read_only_install_compiles_once_then_starts_from_the_cache(
    tmp_path: Path,
) -> None:
    if shutil.which("unshare") is None:
        pytest.fail("`unshare` is missing (Debian package util-linux)", pytrace=False)
    wrapper = tmp_path / "python"
    wrapper.write_text(
        READ_ONLY.format(
            map_root="" if os.geteuid() == 0 else "--map-root-user",
            package=PACKAGE,
            python=sys.executable,
        )
    )
    wrapper.chmod(0o755)
    no_home = tmp_path / "no-home"
    no_home.touch()
    cache = tmp_path / "state" / "numba-cache"
    environ = {
        **{k: v for k, v in os.environ.items() if k != NUMBA_CACHE_ENV},
        NUMBA_CACHE_ENV: str(cache),  # as the unit sets it
        "HOME": str(no_home),
        "XDG_CACHE_HOME": str(no_home),
    }

    cold_s, cold_compile_s = await _start(_worker(wrapper, environ))
    written = sorted(p.name for p in cache.rglob("*.nb[ic]"))
    warm_s, warm_compile_s = await _start(_worker(wrapper, environ))

    print(
        f"worker start, read-only package: first {cold_s:.2f} s (kernels {cold_compile_s:.2f} s),"
        f" second {warm_s:.2f} s (kernels {warm_compile_s:.2f} s)"
    )
    assert any(name.startswith("kernels.") for name in written), written
    # A ratio, not a bound: a busy 2-core box slows both starts alike. Loading from the
    # cache is ~10-100 times faster than compiling; without a cache both compile.
    assert cold_compile_s > 3 * warm_compile_s, (cold_compile_s, warm_compile_s)
