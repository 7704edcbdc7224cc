"""Run a command under a system call filter like the unit's ``SystemCallFilter=``.

Without systemd as PID 1 (a container, CI) the unit's filter cannot be applied by systemd,
so this applies the same list with libseccomp, as systemd does: the calls the unit allows
pass, every other call fails with the unit's ``SystemCallErrorNumber=`` (or kills the
process, systemd's default when none is set). ``allowed_calls`` resolves the unit's groups
with ``systemd-analyze syscall-filter``, so the groups mean what they mean to systemd.

Usage as a script: ``python seccomp.py ALLOWED_FILE ERRNO|kill COMMAND...``; it loads the
filter and execs the command, whose children inherit it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import subprocess
import sys
from pathlib import Path

SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_ACT_KILL_PROCESS = 0x80000000
SCMP_ACT_ERRNO = 0x00050000


def _group(name: str, seen: set[str]) -> set[str]:
    """The calls of ``@group`` as systemd defines them, nested groups expanded."""
    if name in seen:
        return set()
    seen.add(name)
    out = subprocess.run(
        ["systemd-analyze", "syscall-filter", name],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    calls: set[str] = set()
    for line in out.splitlines()[1:]:  # the first line is the group's own name
        entry = line.split("#", 1)[0].strip()
        if not entry:
            continue
        calls |= _group(entry, seen) if entry.startswith("@") else {entry}
    return calls


def _calls(items: list[str]) -> set[str]:
    calls: set[str] = set()
    for item in items:
        calls |= _group(item, set()) if item.startswith("@") else {item}
    return calls


def allowed_calls(filters: list[str]) -> set[str]:
    """The calls a list of ``SystemCallFilter=`` values allows: the first, an allow list;
    the ones starting with ``~``, removed from it (systemd's rule for a mixed list)."""
    allowed: set[str] = set()
    for value in filters:
        if value.startswith("~"):
            allowed -= _calls(value[1:].split())
        else:
            allowed |= _calls(value.split())
    return allowed


def main(argv: list[str]) -> None:
    allowed_file, action_name, *command = argv
    path = ctypes.util.find_library("seccomp") or "libseccomp.so.2"
    lib = ctypes.CDLL(path)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_rule_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    if action_name == "kill":
        action = SCMP_ACT_KILL_PROCESS
    else:
        action = SCMP_ACT_ERRNO | getattr(errno, action_name)
    ctx = lib.seccomp_init(action)
    for name in Path(allowed_file).read_text().split():
        number = lib.seccomp_syscall_resolve_name(name.encode())
        if number < 0:
            continue  # a call of another architecture (chown32, ...)
        if lib.seccomp_rule_add(ctx, SCMP_ACT_ALLOW, number, 0) != 0:
            raise SystemExit(f"seccomp: cannot allow {name}")
    if lib.seccomp_load(ctx) != 0:
        raise SystemExit("seccomp: cannot load the filter")
    os.execvp(command[0], command)  # noqa: S606 - the command as given, like systemd's exec


if __name__ == "__main__":
    main(sys.argv[1:])
