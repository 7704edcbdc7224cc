"""Giving back start-up-only library pages: the smaps parser, and ``release`` on real mappings.

The mappings are real (``mmap`` of files in tmp_path, named like libraries), the page
tables are the kernel's, and what the tests read back is ``/proc/self/smaps``: a released
mapping is no longer resident and still reads the file's bytes; a mapping holding written
bytes is left alone, so nothing the process wrote is ever lost.
"""

from __future__ import annotations

import ctypes
import mmap
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smartpole.models import resident
from smartpole.models.resident import Mapping, mappings, release

PAGE = mmap.PAGESIZE
PAGES = 64
PROT_READ = 1


def _render(found: list[Mapping]) -> str:
    """``/proc/<pid>/smaps`` text for ``found``, with the fields the parser must skip."""
    lines = []
    for m in found:
        lines.append(f"{m.start:08x}-{m.end:08x} {m.perms} 00000000 fd:01 1234   {m.path}".rstrip())
        lines += [f"Size:           {(m.end - m.start) // 1024} kB", "KernelPageSize:        4 kB"]
        lines.append(f"Rss:            {m.rss_kb} kB")
        lines.append(f"Pss:            {m.rss_kb // 2} kB")
        if m.dirty_kb is not None:
            lines.append(f"Private_Dirty:  {m.dirty_kb} kB")
        if m.anonymous_kb is not None:
            lines.append(f"Anonymous:      {m.anonymous_kb} kB")
        lines.append("VmFlags: rd ex mr mw me sd")
    return "\n".join(lines) + "\n"


_SIZES = st.none() | st.just(0) | st.integers(1, 1 << 20)
_MAPPING = st.builds(
    lambda start, pages, perms, path, rss, dirty, anon: Mapping(
        start * PAGE, (start + pages) * PAGE, perms, path, rss, dirty, anon
    ),
    st.integers(1, 1 << 30),
    st.integers(1, 1000),
    st.sampled_from(["r--p", "r-xp", "rw-p", "---p", "rw-s", "r--s"]),
    st.sampled_from(["", "[heap]", "/usr/lib/libc.so.6", "/a b/libx.so (deleted)"]),
    st.integers(0, 1 << 20),
    _SIZES,
    _SIZES,
)


@given(st.lists(_MAPPING, max_size=8))
def test_smaps_parse_back_to_the_mappings_they_were_rendered_from(found: list[Mapping]) -> None:
    assert list(mappings(_render(found).splitlines(keepends=True))) == found


@given(_MAPPING)
def test_only_a_mapping_known_to_hold_only_file_bytes_is_releasable(mapping: Mapping) -> None:
    clean = mapping.dirty_kb == 0 and mapping.anonymous_kb == 0
    assert mapping.releasable == ("w" not in mapping.perms and clean)


def test_a_field_that_is_not_a_number_is_an_error_and_release_gives_nothing_back(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    bad = "00001000-00002000 r-xp 00000000 fd:01 1 /x/libbad.so\nRss:  many kB\n"
    with pytest.raises(ValueError, match="many"):
        list(mappings(bad.splitlines()))
    smaps = tmp_path / "smaps"
    smaps.write_text(bad)
    monkeypatch.setattr(resident, "_SMAPS", smaps)
    assert release("libbad") == 0
    monkeypatch.setattr(resident, "_SMAPS", tmp_path / "missing")  # not Linux
    assert release("libbad") == 0


def _library(tmp_path: Path, name: str) -> Path:
    """A file written to disk: its pages in the page cache clean, as an installed library's
    are (smaps counts a file's not-yet-written pages as ``Private_Dirty``)."""
    path = tmp_path / name
    with path.open("wb") as file:
        file.write(os.urandom(PAGES * PAGE))
        file.flush()
        os.fsync(file.fileno())
    return path


def _mapping_of(path: Path) -> Mapping:
    with Path("/proc/self/smaps").open() as smaps:
        return next(m for m in mappings(smaps) if m.path == str(path))


@pytest.fixture
def read_only(tmp_path: Path) -> Iterator[tuple[Path, mmap.mmap]]:
    """A library-like file mapped private and read-only, every page touched."""
    path = _library(tmp_path, "libfake-code.so.1")
    with path.open("rb") as file:
        mapped = mmap.mmap(file.fileno(), 0, flags=mmap.MAP_PRIVATE, prot=PROT_READ)
    assert mapped[:] == path.read_bytes()  # every page resident now
    yield path, mapped
    mapped.close()


def test_release_drops_a_clean_mapping_which_still_reads_the_file(
    read_only: tuple[Path, mmap.mmap],
) -> None:
    path, mapped = read_only
    assert _mapping_of(path).rss_kb == PAGES * PAGE // 1024
    assert release("libfake-code") == PAGES * PAGE // 1024
    assert _mapping_of(path).rss_kb == 0
    assert mapped[:] == path.read_bytes()  # faulted back in from the file
    assert _mapping_of(path).rss_kb == PAGES * PAGE // 1024


def test_release_leaves_other_files_and_written_pages_alone(
    read_only: tuple[Path, mmap.mmap], tmp_path: Path
) -> None:
    """Written pages of a private mapping made read-only afterwards (a library's relocated
    segment): dropping them would silently revert them to the file's bytes."""
    path = _library(tmp_path, "libfake-relro.so")
    with path.open("rb") as file:
        mapped = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_COPY)
    mapped[: 4 * PAGE] = b"\x5a" * (4 * PAGE)
    written = mapped[:]
    address = _address(mapped)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    try:
        assert libc.mprotect(address, len(mapped), PROT_READ) == 0
        relro = _mapping_of(path)
        assert relro.perms == "r--p"
        assert relro.dirty_kb, "the written pages should show as private dirty"
        assert release("libfake") == PAGES * PAGE // 1024  # the clean one only
        assert ctypes.string_at(address, len(written)) == written
        assert _mapping_of(path).rss_kb == relro.rss_kb
        assert _mapping_of(read_only[0]).rss_kb == 0
    finally:
        mapped.close()


def _address(mapped: mmap.mmap) -> int:
    """Where ``mapped`` starts; the buffer export ends here, so the mapping can close."""
    return ctypes.addressof(ctypes.c_char.from_buffer(mapped))
