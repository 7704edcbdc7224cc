"""The parts of smartpole-release that know the layout, the files and the service manager.

Shipped beside ``smartpole-release`` in every release folder (the entry script finds it on
``sys.path[0]``, its own folder). Standard library only, like the entry script: it runs with
the system's Python 3.11, outside every venv.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import select
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA = 1
SERVICE = "smartpole.service"
USER = "smartpole"
HISTORY_KEEP = 50
STOP_TIMEOUT_S = 20.0
# The steps of a switch, in order; the journal names the last one started.
STEPS = ("journal", "previous", "current", "stop", "start", "ready", "rollback")
VENV_PARTS = ("bin", "lib", "lib64", "include", "share", "pyvenv.cfg", ".complete")


class ReleaseError(Exception):
    """A failure the tool explains in one line on stderr and exits 1 for."""


@dataclass(frozen=True)
class Layout:
    """Every absolute path the tool touches, under ``--root`` for tests."""

    root: Path

    def p(self, path: str) -> Path:
        return self.root / path.lstrip("/")

    @property
    def opt(self) -> Path:
        return self.p("/opt/smartpole")

    @property
    def releases(self) -> Path:
        return self.opt / "releases"

    @property
    def current(self) -> Path:
        return self.opt / "current"

    @property
    def previous(self) -> Path:
        return self.opt / "previous"

    @property
    def state(self) -> Path:
        return self.p("/var/lib/smartpole")

    @property
    def history(self) -> Path:
        return self.state / "releases.json"

    @property
    def journal(self) -> Path:
        return self.state / "release-switch.json"

    @property
    def config(self) -> Path:
        return self.p("/etc/smartpole/pole.yaml")

    @property
    def rundir(self) -> Path:
        return self.p("/run/smartpole-release")

    @property
    def pidfile(self) -> Path:
        return self.rundir / "daemon.pid"

    @property
    def daemon_log(self) -> Path:
        return self.p("/var/log/smartpole/daemon.log")

    @property
    def systemd(self) -> bool:
        return self.p("/run/systemd/system").is_dir()

    def release(self, version: str) -> Path:
        if not version or "/" in version or version in {".", ".."}:
            raise ReleaseError(f"not a release version: {version!r}")
        return self.releases / version


def crash_point(step: str) -> None:
    """The test rig's stand-in for a kill between two steps."""
    if os.environ.get("SMARTPOLE_RELEASE_CRASH_AFTER") == step:
        os._exit(86)


def write_atomic(path: Path, data: dict[str, Any], *, owner_of: Path | None = None) -> None:
    """Write, fsync, rename, fsync the folder: a reader sees the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("w", encoding="utf-8") as f:
            json.dump(data, f, indent=1, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        tmp.chmod(0o644)
        if owner_of is not None and os.geteuid() == 0:
            # The daemon (user smartpole) marks entries reported: it must own the file.
            st = owner_of.stat()
            os.chown(tmp, st.st_uid, st.st_gid)
        tmp.replace(path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ReleaseError(f"{path} is unreadable ({exc}); move it aside to continue") from exc
    if not isinstance(data, dict):
        raise ReleaseError(f"{path} is not a JSON object; move it aside to continue")
    return data


def link_target(link: Path) -> str | None:
    """The release version a link names, or None when there is no link."""
    try:
        return link.readlink().name
    except FileNotFoundError:
        return None


def set_link(link: Path, version: str | None) -> None:
    """Point ``link`` at ``releases/<version>`` atomically (new link + rename), or drop it."""
    if version is None:
        with contextlib.suppress(FileNotFoundError):
            link.unlink()
    else:
        tmp = link.with_name(f".{link.name}.new")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        tmp.symlink_to(Path("releases") / version)
        tmp.replace(link)
    fsync_dir(link.parent)


def complete(layout: Layout, version: str) -> bool:
    return (layout.release(version) / ".complete").is_file()


class History:
    """``releases.json``: what each activation came to; the daemon reports the failures."""

    def __init__(self, layout: Layout) -> None:
        self._layout = layout

    def entries(self) -> list[dict[str, Any]]:
        data = read_json(self._layout.history)
        if data is None:
            return []
        if data.get("version") != SCHEMA or not isinstance(data.get("history"), list):
            raise ReleaseError(f"{self._layout.history} has an unknown schema")
        return [e for e in data["history"] if isinstance(e, dict)]

    def record(self, version: str, old: str | None, outcome: str, reason: str | None) -> None:
        """Append an outcome. Never fails a switch: the history is a report, not a step."""
        try:
            self._record(version, old, outcome, reason)
        except (OSError, ReleaseError) as exc:
            print(f"smartpole-release: warning: history not written: {exc}", file=sys.stderr)

    def _record(self, version: str, old: str | None, outcome: str, reason: str | None) -> None:
        try:
            entries = self.entries()
        except ReleaseError:
            aside = self._layout.history.with_name(
                f"releases.json.corrupt-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
            )
            self._layout.history.replace(aside)
            print(f"smartpole-release: unreadable history kept as {aside}", file=sys.stderr)
            entries = []
        entries.append(
            {
                "version": version,
                "from": old,
                "at": round(time.time(), 3),
                "outcome": outcome,
                "reason": reason,
                "reported": outcome == "running",
            }
        )
        # The oldest reported entries go first; an unreported failure only when all are.
        while len(entries) > HISTORY_KEEP:
            idx = next((i for i, e in enumerate(entries) if e.get("reported")), 0)
            del entries[idx]
        state = self._layout.state
        state.mkdir(parents=True, exist_ok=True)
        write_atomic(self._layout.history, {"version": SCHEMA, "history": entries}, owner_of=state)


class Identity:
    """Who runs ``config check`` and the daemon: smartpole, or the caller in a test root."""

    def __init__(self, layout: Layout, *, required: bool = True) -> None:
        try:
            pw = pwd.getpwnam(USER)
        except KeyError:
            if layout.root == Path("/") and required:
                raise ReleaseError(f"user {USER} does not exist; reinstall the package") from None
            self.kwargs: dict[str, Any] = {}
            return
        groups = [g for g in os.getgrouplist(pw.pw_name, pw.pw_gid) if g != pw.pw_gid]
        if os.geteuid() == 0:
            self.kwargs = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": groups}
        else:
            self.kwargs = {}


def config_check(layout: Layout, version: str, ident: Identity) -> str | None:
    """None when ``version`` accepts the pole file, else the check's own last words."""
    exe = layout.release(version) / "bin" / "smartpole"
    try:
        proc = subprocess.run(
            [str(exe), "config", "check", str(layout.config)],
            capture_output=True,
            text=True,
            timeout=60,
            cwd="/",
            check=False,
            **ident.kwargs,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"config check could not run: {exc}"
    if proc.returncode == 0:
        return None
    lines: list[str] = (proc.stderr or proc.stdout).strip().splitlines()
    if not lines:
        return f"config check exited {proc.returncode}"
    # The first problem, named with its line; the rest are one command away.
    more = f" (and {len(lines) - 1} more lines: smartpole config check)" if len(lines) > 1 else ""
    return lines[0][:300] + more


class Service:
    """Restart the daemon and wait for READY, via systemd or, without it, by itself."""

    def __init__(self, layout: Layout, ident: Identity, timeout: float) -> None:
        self.layout, self.ident, self.timeout = layout, ident, timeout
        self._children: dict[int, subprocess.Popen[bytes]] = {}

    def running(self) -> bool:
        if self.layout.systemd:
            return self._systemctl("is-active", "--quiet", SERVICE) == 0
        return self._pid() is not None

    def stop(self) -> None:
        if self.layout.systemd:
            self._systemctl("stop", SERVICE)
            return
        pid = self._pid()
        if pid is not None:
            self._kill(pid)
        with contextlib.suppress(FileNotFoundError):
            self.layout.pidfile.unlink()

    def start(self) -> str | None:
        """Start ``current``; None once it said READY=1, else why not."""
        if self.layout.systemd:
            try:
                rc = self._systemctl("restart", SERVICE, timeout=self.timeout)
            except subprocess.TimeoutExpired:
                return f"not ready within {self.timeout:g} s"
            crash_point("start")
            if rc != 0 or self._systemctl("is-active", "--quiet", SERVICE) != 0:
                return f"systemctl restart {SERVICE} failed (see journalctl -u {SERVICE})"
            return None
        return self._start_direct()

    def _systemctl(self, *args: str, timeout: float = 120) -> int:
        return subprocess.run(["systemctl", *args], check=False, timeout=timeout).returncode

    def _pid(self) -> int | None:
        try:
            pid = int(self.layout.pidfile.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        return pid if alive(pid) else None

    def _kill(self, pid: int) -> None:
        """SIGTERM the daemon's session, wait, then SIGKILL: it owns its worker processes."""
        for sig, wait in ((signal.SIGTERM, STOP_TIMEOUT_S), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, sig)
            if self._wait_gone(pid, wait):
                return
        raise ReleaseError(f"daemon pid {pid} survives SIGKILL")

    def _wait_gone(self, pid: int, seconds: float) -> bool:
        child = self._children.pop(pid, None)
        if child is not None:
            try:
                child.wait(seconds)
            except subprocess.TimeoutExpired:
                self._children[pid] = child
                return False
            return True
        deadline = time.monotonic() + seconds
        while alive(pid):
            if time.monotonic() > deadline:
                return False
            select.select([], [], [], 0.05)  # a bounded poll: the pid is not our child
        return True

    def _start_direct(self) -> str | None:
        layout = self.layout
        exe = layout.current / "bin" / "smartpole"
        runtime = layout.p("/run/smartpole")
        folders = (layout.rundir, runtime, layout.state, layout.daemon_log.parent)
        for folder in folders:
            folder.mkdir(parents=True, exist_ok=True)
        # As the unit's RuntimeDirectoryMode: technicians' groups reach the socket, the
        # daemon decides each call from the caller's credentials (whatever the umask).
        runtime.chmod(0o755)
        owner = self.ident.kwargs.get("user")
        if owner is not None:
            os.chown(runtime, owner, self.ident.kwargs["group"])
        name = f"smartpole-release-{os.getpid()}-{time.monotonic_ns()}"
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.bind("\0" + name)
            env = {
                "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
                "LANG": os.environ.get("LANG", "C.UTF-8"),
                "PYTHONUNBUFFERED": "1",
                "STATE_DIRECTORY": str(layout.state),
                "RUNTIME_DIRECTORY": str(layout.p("/run/smartpole")),
                "NOTIFY_SOCKET": "@" + name,
            }
            with layout.daemon_log.open("ab") as log:
                try:
                    proc = subprocess.Popen(
                        [str(exe), "run", "--config", str(layout.config)],
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=log,
                        env=env,
                        cwd="/",
                        start_new_session=True,
                        **self.ident.kwargs,
                    )
                except OSError as exc:
                    return f"cannot start {exe}: {exc}"
            self._children[proc.pid] = proc
            layout.pidfile.write_text(f"{proc.pid}\n")
            crash_point("start")
            return self._wait_ready(sock, proc)

    def _wait_ready(self, sock: socket.socket, proc: subprocess.Popen[bytes]) -> str | None:
        deadline = time.monotonic() + self.timeout
        while (left := deadline - time.monotonic()) > 0:
            readable, _, _ = select.select([sock], [], [], min(left, 0.2))
            if readable and b"READY=1" in sock.recv(4096).split(b"\n"):
                return None
            if (rc := proc.poll()) is not None:
                return f"daemon exited with status {rc} before READY (see {self.layout.daemon_log})"
        return f"not ready within {self.timeout:g} s"


def alive(pid: int) -> bool:
    """True for a live process; a zombie (dead, not yet reaped by init) counts as gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in {"Z", "X"}
