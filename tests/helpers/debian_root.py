"""A throwaway Debian root to install our package into, the way a pole vendor's box has it.

Built once with ``debootstrap`` (bookworm, minbase, plus what the package depends on and the
systemd a real box runs) and cached under ``~/.cache/smartpole/debian-root``: a cold build
takes about 100 s, a copy of the cache a few seconds. Each test gets its own copy.

Commands run in the root through ``chroot`` inside a private mount namespace (``unshare -m``)
with the host's ``/dev`` and a fresh ``/proc`` bound in, so nothing is mounted on the host
and a process left running in the root keeps its mounts until it ends. systemd is installed
in the root but does not run there (it is not PID 1), so ``/run/systemd/system`` is absent:
the release switcher then runs the daemon itself (its direct mode), exactly as in a container.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from helpers.waiting import wait_until

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
# What a pole's Debian image has before our package: its dependencies and systemd.
PACKAGES = ("python3.11", "python3.11-venv", "systemd")
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "smartpole"
STAMP = f"{SUITE} {MIRROR} {' '.join(PACKAGES)}\n"


class DebianRootError(Exception):
    """The root could not be built or a command in it failed."""


def _run_host(argv: Sequence[str], *, timeout: float, log: Path) -> None:
    with log.open("ab") as out:
        done = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, timeout=timeout)
    if done.returncode != 0:
        tail = log.read_text(errors="replace").splitlines()[-15:]
        raise DebianRootError(
            f"{' '.join(argv[:3])} failed ({done.returncode}):\n" + "\n".join(tail)
        )


def cached_root() -> Path:
    """The pristine root, built when missing or built for another package list."""
    base = CACHE / "debian-root"
    base.mkdir(parents=True, exist_ok=True)
    root = base / f"{SUITE}-amd64"
    with (base / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build at a time, however many test runs
        stamp = root / ".smartpole-stamp"
        if stamp.is_file() and stamp.read_text() == STAMP:
            return root
        if shutil.which("debootstrap") is None:
            raise DebianRootError(
                "debootstrap is not installed (scripts/setup-system.sh installs it)"
            )
        building = base / f"{SUITE}-amd64.building"
        shutil.rmtree(building, ignore_errors=True)
        shutil.rmtree(root, ignore_errors=True)
        log = base / "build.log"
        log.write_text("")
        _run_host(
            ["debootstrap", "--variant=minbase", SUITE, str(building), MIRROR],
            timeout=900,
            log=log,
        )
        # apt inside the root resolves dependencies better than debootstrap's --include.
        shutil.copy("/etc/resolv.conf", building / "etc" / "resolv.conf")
        install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *PACKAGES]
        _run_host(
            ["chroot", str(building), "env", "DEBIAN_FRONTEND=noninteractive", *install],
            timeout=900,
            log=log,
        )
        _run_host(["chroot", str(building), "apt-get", "clean"], timeout=120, log=log)
        (building / ".smartpole-stamp").write_text(STAMP)
        building.rename(root)
        return root


@dataclass
class DebianRoot:
    """One copy of the cached root, with commands run inside it."""

    path: Path

    def run(
        self,
        argv: Sequence[str],
        *,
        user: str | None = None,
        env: dict[str, str] | None = None,
        timeout: float = 600,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        """``argv`` inside the root (as ``user`` via runuser when given); output captured."""
        inner = list(argv)
        if user is not None:
            inner = ["runuser", "-u", user, "--", *inner]
        settings = {
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "LANG": "C.UTF-8",
            "DEBIAN_FRONTEND": "noninteractive",
            **(env or {}),
        }
        script = (
            'mount --rbind /dev "$R/dev" && mount -t proc proc "$R/proc"'
            ' && exec chroot "$R" env -i "$@"'
        )
        command = [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
            "sh",
            *(f"{key}={value}" for key, value in settings.items()),
            *inner,
        ]
        done = subprocess.run(
            command,
            env={**os.environ, "R": str(self.path)},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and done.returncode != 0:
            raise DebianRootError(
                f"{' '.join(inner)} exited {done.returncode}\n"
                f"--- stdout\n{done.stdout[-4000:]}\n--- stderr\n{done.stderr[-4000:]}"
            )
        return done

    def file(self, path: str) -> Path:
        """A path inside the root, seen from the host."""
        return self.path / path.lstrip("/")

    def processes(self) -> list[int]:
        """Pids of the processes whose root is this one (a daemon it left running)."""
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                if os.readlink(entry / "root") == str(self.path):
                    pids.append(int(entry.name))
        return pids

    def stop_everything(self, timeout: float = 10) -> None:
        """SIGTERM, then SIGKILL, every process still running in the root."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in self.processes():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            with contextlib.suppress(AssertionError):
                gone = "the root's processes to end"
                wait_until(lambda: not self.processes(), timeout=timeout, what=gone)
                return


@contextlib.contextmanager
def debian_root(where: Path) -> Iterator[DebianRoot]:
    """A fresh copy of the cached root under ``where``; its processes stopped afterwards."""
    pristine = cached_root()
    path = where / "root"
    subprocess.run(["cp", "-a", "--reflink=auto", str(pristine), str(path)], check=True)
    root = DebianRoot(path.resolve())
    try:
        yield root
    finally:
        root.stop_everything()
        # The copy is big (hundreds of MB): remove it now, not when pytest prunes tmp dirs.
        shutil.rmtree(path, ignore_errors=True)
