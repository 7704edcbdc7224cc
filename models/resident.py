"""Give back the pages of library code that only a worker's start-up runs.

Why: a camera worker's resident memory was two-thirds shared-library code it ran once.
Importing numba and loading the kernels (even from the on-disk cache) goes through LLVM
(llvmlite's ``libllvmlite.so``, ~180 MB on disk): ~45 MB of it on import and ~45 MB more for
the first kernel, although no frame ever runs LLVM again (a loaded kernel is machine code
called through Numba's C dispatcher). ONNX Runtime, FFmpeg and numpy run their static
initialisers and registries on import and session creation, touching pages that
inference and decoding never touch again. All of these are clean copies of the files,
shared through the page cache; the kernel takes them away from a process only under memory
pressure, so until then they stay in every worker's RSS (241 MB, against a 180 MB budget).

``release`` drops such pages from this process's page tables (``madvise(MADV_DONTNEED)``),
after each start-up step. Nothing is lost: a page touched again (the code each frame runs;
LLVM compiling a kernel for a new signature) is faulted back in from the page cache, a
minor fault, once; the worker's RSS then settles at what it really uses.

Safe only for mappings whose pages are all the file's own bytes: dropping a private
mapping's written pages (a library's relocated read-only-after-relocation segment, its
``.data``) would revert them to the file's bytes. So only mappings that are not writable and
show no written (``Private_Dirty``) or anonymous pages in ``/proc/self/smaps`` are released;
a mapping that is not writable cannot become dirty afterwards. Linux only; elsewhere (no
``/proc/self/smaps``) nothing happens.
"""

from __future__ import annotations

import ctypes
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

#: What ``release_libraries`` matches in a mapped file's name: shared libraries.
LIBRARIES: Final = ".so"
MADV_DONTNEED: Final = 4
_HEADER: Final = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) (\S{4}) \S+ \S+ \d+\s*(.*)$")
_SMAPS: Final = Path("/proc/self/smaps")


@dataclass(frozen=True)
class Mapping:
    """One mapping of ``/proc/self/smaps`` with the fields ``release`` decides on (kB)."""

    start: int
    end: int
    perms: str
    path: str
    rss_kb: int = 0
    #: None when smaps did not say (an older kernel): then the mapping is never released.
    dirty_kb: int | None = None
    anonymous_kb: int | None = None

    @property
    def releasable(self) -> bool:
        """Not writable and holding only the file's own bytes (see the module docstring)."""
        return "w" not in self.perms and self.dirty_kb == 0 and self.anonymous_kb == 0


def mappings(lines: Iterable[str]) -> Iterator[Mapping]:
    """The mappings in the lines of ``/proc/<pid>/smaps``, with Rss/Private_Dirty/Anonymous.

    Read line by line, not as one text: a worker's smaps is a few hundred kB, held at the
    very moment the point is to lower the peak. ValueError for a field that is not a number.
    """
    header: tuple[int, int, str, str] | None = None
    fields: dict[str, int] = {}
    for line in lines:
        match = _HEADER.match(line)
        if match is None:
            name, _, value = line.partition(":")
            if header is not None and name in ("Rss", "Private_Dirty", "Anonymous"):
                fields[name] = int(value.split()[0])
            continue
        if header is not None:
            yield _mapping(header, fields)
        header = (int(match[1], 16), int(match[2], 16), match[3], match[4].strip())
        fields = {}
    if header is not None:
        yield _mapping(header, fields)


def _mapping(header: tuple[int, int, str, str], fields: dict[str, int]) -> Mapping:
    start, end, perms, path = header
    return Mapping(
        start,
        end,
        perms,
        path,
        rss_kb=fields.get("Rss", 0),
        dirty_kb=fields.get("Private_Dirty"),
        anonymous_kb=fields.get("Anonymous"),
    )


def release(library: str) -> int:
    """Drop the resident pages of every releasable mapping of a file whose name contains
    ``library`` (``libllvmlite``, ``.so``); return the kB dropped (0 where unsupported)."""
    try:
        with _SMAPS.open(encoding="utf-8", errors="replace") as smaps:
            found = [m for m in mappings(smaps) if library in Path(m.path).name]
        madvise = ctypes.CDLL(None).madvise
    except (OSError, AttributeError, ValueError):  # not Linux, or smaps not as expected
        return 0
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    madvise.restype = ctypes.c_int
    dropped = 0
    for mapping in found:
        if not mapping.releasable:
            continue
        if (
            mapping.rss_kb
            and madvise(mapping.start, mapping.end - mapping.start, MADV_DONTNEED) == 0
        ):
            dropped += mapping.rss_kb
    return dropped


def release_libraries() -> int:
    """``release`` for every shared library (``*.so*``): call after each start-up step."""
    return release(LIBRARIES)
