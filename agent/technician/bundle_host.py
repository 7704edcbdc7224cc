"""What a support bundle says about the machine, the service unit and its journal.

None of it needs the daemon: a pole whose daemon will not start is when these matter most.
Every fact is gathered on its own and a failure is a line in the manifest, never the end of
the bundle: a box without journald, a user not allowed to read the journal, a kernel without
some ``/proc`` file each still get the rest.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Final, Protocol

UNIT: Final = "smartpole"
COMMAND_TIMEOUT_S: Final = 20.0
DEVICES: Final = Path("/dev")
SERIAL_PATTERNS: Final = ("ttyS*", "ttyUSB*", "ttyACM*", "ttyAMA*")
SERIAL_BY_ID: Final = Path("/dev/serial/by-id")
MEMINFO_KEYS: Final = ("MemTotal", "MemAvailable", "SwapTotal", "SwapFree")


class Sink(Protocol):
    """Where gathered members and failures go (the bundle's collector)."""

    def add(self, name: str, data: bytes | str | object) -> None: ...

    def fail(self, item: str, reason: str) -> None: ...

    def note(self, item: str, text: str) -> None: ...


def machine(state_dir: Path, config: Path) -> dict[str, object]:
    """Kernel, CPU, memory, disks, serial ports: the basics a support call asks first."""
    uname = platform.uname()
    facts: dict[str, object] = {
        "hostname": uname.node,
        "kernel": f"{uname.system} {uname.release} {uname.version}",
        "machine": uname.machine,
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "os_release": _os_release(),
        "uptime_s": _first_number(Path("/proc/uptime")),
        "loadavg": _read(Path("/proc/loadavg")),
        "memory_kib": _meminfo(),
        "disks": {
            str(path): _disk(path) for path in dict.fromkeys([state_dir, config.parent, Path("/")])
        },
        "serial_ports": serial_ports(),
    }
    return facts


def serial_ports() -> dict[str, object]:
    """The serial devices present, and the stable names udev gives USB adapters."""
    ports = sorted({str(path) for pattern in SERIAL_PATTERNS for path in DEVICES.glob(pattern)})
    by_id: dict[str, str] = {}
    try:
        for link in sorted(SERIAL_BY_ID.iterdir()):
            by_id[link.name] = str(link.resolve())
    except OSError:
        pass  # no USB serial adapter plugged in: udev made no folder
    return {"devices": ports, "by_id": by_id}


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return None


def _first_number(path: Path) -> float | None:
    text = _read(path)
    try:
        return float(text.split()[0]) if text else None
    except ValueError:
        return None


def _cpu_model() -> str | None:
    """x86 says ``model name``; ARM kernels say ``Model`` (the board) or ``CPU part``."""
    text = _read(Path("/proc/cpuinfo")) or ""
    for key in ("model name", "Model", "Hardware", "CPU part"):
        for line in text.splitlines():
            name, sep, value = line.partition(":")
            if sep and name.strip() == key:
                return value.strip()
    return None


def _os_release() -> dict[str, str]:
    out: dict[str, str] = {}
    for line in (_read(Path("/etc/os-release")) or "").splitlines():
        name, sep, value = line.partition("=")
        if sep and name in ("PRETTY_NAME", "ID", "VERSION_ID"):
            out[name] = value.strip('"')
    return out


def _meminfo() -> dict[str, int]:
    out: dict[str, int] = {}
    for line in (_read(Path("/proc/meminfo")) or "").splitlines():
        name, sep, value = line.partition(":")
        if sep and name in MEMINFO_KEYS:
            out[name] = int(value.split()[0])
    return out


def _disk(path: Path) -> dict[str, object]:
    try:
        usage = shutil.disk_usage(path)
    except OSError as exc:
        return {"error": exc.strerror or str(exc)}
    return {"total_bytes": usage.total, "used_bytes": usage.used, "free_bytes": usage.free}


def command_output(sink: Sink, name: str, argv: list[str]) -> None:
    """Run a read-only system command; its output is the member ``name``, or its absence
    or failure a line in the manifest."""
    what = " ".join(argv)
    if shutil.which(argv[0]) is None:
        sink.fail(what, f"{argv[0]} is not installed on this machine")
        return
    try:
        done = subprocess.run(
            argv,
            capture_output=True,
            timeout=COMMAND_TIMEOUT_S,
            check=False,
            env={**os.environ, "SYSTEMD_COLORS": "0", "LC_ALL": "C"},
        )
    except subprocess.TimeoutExpired:
        sink.fail(what, f"no answer within {COMMAND_TIMEOUT_S:.0f} s")
        return
    except OSError as exc:
        sink.fail(what, exc.strerror or str(exc))
        return
    error = done.stderr.decode("utf-8", errors="replace").strip()
    if done.returncode != 0:
        sink.fail(what, f"exit {done.returncode}: {error[-500:] or 'no message'}")
        if not done.stdout:
            return
    sink.add(name, done.stdout.decode("utf-8", errors="replace"))


def journal_and_unit(sink: Sink, lines: int) -> None:
    """The unit's last journal lines and its state as systemd sees it."""
    command_output(
        sink,
        "journal.txt",
        ["journalctl", "-u", UNIT, "-n", str(lines), "--no-pager", "-o", "short-iso-precise"],
    )
    command_output(sink, "systemd-unit.txt", ["systemctl", "show", UNIT, "--no-pager"])
