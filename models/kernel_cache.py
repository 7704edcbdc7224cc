"""Numba's on-disk cache of the compiled kernels: it may cost a compile, never a start.

Numba lets every cache error through to the caller of the kernel. Reading: a cached kernel
is unpickled, and one damaged index or data file (a power cut while it was written, a copied
cache) makes every call raise, so every restart of the worker would fail the same way.
``check`` reads every cache file of every registered kernel the way Numba would and empties
the cache of a kernel whose files do not read back (Numba then compiles it and writes a
fresh one); a kernel whose cache cannot even be emptied runs without one. Writing: a full
disk or a folder turned read-only makes the compile that wanted to save its result raise;
``register`` wraps the save so that the compiled kernel is used and only the save is lost
(logged once per process).

This uses Numba's cache objects (``Dispatcher._cache`` and its index/data file), which are
not public API; the pinned Numba version (requirements.lock) is what the tests check, and
anything unexpected in them counts as a damaged cache, so the worst case is a recompile.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numba
import structlog
from numba.core.caching import NullCache

log = structlog.get_logger("smartpole.kernel_cache")

#: Every cached kernel, registered as it is defined (``kernels.njit_cached``).
KERNELS: list[Any] = []
#: Failures logged already in this process (each kind once).
_logged: set[str] = set()
#: Why kernels could not be cached at all (Numba found no folder), for ``check`` to log.
_unavailable: list[str] = []


def njit(fn: Callable[..., Any]) -> Any:
    """``numba.njit(cache=True, nogil=True)``, registered for ``check``, its saves guarded.

    Without any folder to cache in (``NUMBA_CACHE_DIR`` unwritable, the package read-only,
    no writable home) Numba refuses ``cache=True`` with a RuntimeError at import: the kernel
    is then compiled uncached, every start, instead of the worker failing to import.
    """
    try:
        dispatcher = numba.njit(cache=True, nogil=True)(fn)
    except RuntimeError as exc:
        # Logged by ``check``, not here: this runs at import, before the worker has sent
        # its log to stderr (stdout is its protocol to the supervisor).
        _unavailable.append(str(exc))
        return numba.njit(nogil=True)(fn)
    _register(dispatcher)
    return dispatcher


def _register(dispatcher: Any) -> None:
    KERNELS.append(dispatcher)
    cache = dispatcher._cache
    save = cache.save_overload

    def save_or_skip(sig: Any, data: Any) -> None:
        try:
            save(sig, data)
        except OSError as exc:
            if "save" not in _logged:
                _logged.add("save")
                log.warning(
                    "kernel_cache_not_saved",
                    cache=str(getattr(cache, "cache_path", "?")),
                    error=str(exc),
                )

    cache.save_overload = save_or_skip


def check() -> int:
    """Empty the cache of every registered kernel whose cache files do not load; return
    how many were emptied (or disabled). Called by ``kernels.warm_up`` before compiling,
    when the worker's log goes to stderr: a kernel defined without a cache is logged here."""
    if _unavailable and "locate" not in _logged:
        _logged.add("locate")
        log.warning("kernel_cache_unavailable", kernels=len(_unavailable), error=_unavailable[0])
    repaired = 0
    for dispatcher in KERNELS:
        cache = getattr(dispatcher, "_cache", None)
        if cache is None or isinstance(cache, NullCache):
            continue
        try:
            _read_all(cache)
        except Exception as exc:  # noqa: BLE001 - unpickling raises anything; all mean damage
            repaired += 1
            _forget(dispatcher, cache, exc)
    return repaired


def _read_all(cache: Any) -> None:
    """Read the index and every data file it names, as Numba does before using one."""
    files = cache._cache_file
    for name in files._load_index().values():
        try:
            files._load_data(name)
        except OSError:
            continue  # Numba treats an unreadable data file as "not cached" and recompiles


def _forget(dispatcher: Any, cache: Any, error: Exception) -> None:
    where = str(getattr(cache, "cache_path", "?"))
    kernel = getattr(dispatcher, "__qualname__", repr(dispatcher))
    try:
        cache.flush()  # writes an empty index: the next call compiles and caches afresh
    except OSError as exc:
        dispatcher._cache = NullCache()
        log.warning(
            "kernel_cache_disabled", kernel=kernel, cache=where, error=repr(error), reason=str(exc)
        )
        return
    log.warning("kernel_cache_damaged", kernel=kernel, cache=where, error=repr(error))
