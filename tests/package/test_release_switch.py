"""The release switcher against a throwaway root: switch, READY, roll back, recover.

A release here is a tiny folder whose ``bin/smartpole`` is a Python script that answers
``config check`` and ``run`` the way its ``mode`` file says (ready, never ready, exit,
reject the config). It stands in for a real release only in these tests; the Debian-root
test runs the real package. The switcher runs as a subprocess, as postinst runs it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers.release_tool import TOOL_ARGV

FAKE = """#!{python}
import os, signal, socket, sys
from pathlib import Path
release = Path(__file__).resolve().parent.parent
mode = (release / "mode").read_text().split()
args = sys.argv[1:]
if args[:1] == ["--version"]:
    print(release.name)
    sys.exit(0)
if args[:2] == ["config", "check"]:
    if "badconfig" in mode:
        print("pole.yaml:2: uplink.hots: unknown key", file=sys.stderr)
        print("pole.yaml: 1 configuration problem", file=sys.stderr)
        sys.exit(2)
    sys.exit(0)
if args[:1] == ["run"]:
    with open(Path(os.environ["STATE_DIRECTORY"]) / "runs.log", "a") as f:
        f.write(f"{{release.name}} {{os.getpid()}}\\n")
    if "exit" in mode:
        sys.exit(3)
    if "ready" in mode:
        address = os.environ["NOTIFY_SOCKET"].replace("@", "\\0", 1)
        socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).sendto(b"READY=1", address)
    while True:
        signal.pause()
sys.exit(64)
"""


class Rig:
    """A root folder with fake releases, and the switcher run against it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.releases = root / "opt/smartpole/releases"
        self.state = root / "var/lib/smartpole"
        (root / "etc/smartpole").mkdir(parents=True)
        (root / "etc/smartpole/pole.yaml").write_text("pole: {id: test}\n")

    def release(self, version: str, mode: str = "ready", *, complete: bool = True) -> Path:
        folder = self.releases / version
        (folder / "bin").mkdir(parents=True)
        exe = folder / "bin" / "smartpole"
        exe.write_text(FAKE.format(python=sys.executable))
        exe.chmod(0o755)
        (folder / "mode").write_text(mode)
        if complete:
            (folder / ".complete").write_text(version)
        return folder

    def run(
        self, *args: str, timeout: float = 5, crash: str | None = None, path: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k != "SMARTPOLE_RELEASE_CRASH_AFTER"}
        if path is not None:
            env["PATH"] = f"{path}:{env['PATH']}"
        if crash is not None:
            env["SMARTPOLE_RELEASE_CRASH_AFTER"] = crash
        return subprocess.run(
            [*TOOL_ARGV, "--root", str(self.root), "--timeout", str(timeout), *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env=env,
        )

    def link(self, name: str) -> str | None:
        path = self.root / "opt/smartpole" / name
        return path.readlink().name if path.is_symlink() else None

    def pid(self) -> int | None:
        path = self.root / "run/smartpole-release/daemon.pid"
        return int(path.read_text()) if path.exists() else None

    def runs(self) -> list[tuple[str, int]]:
        path = self.state / "runs.log"
        if not path.exists():
            return []
        return [(v, int(p)) for v, p in (line.split() for line in path.read_text().splitlines())]

    def history(self) -> list[dict[str, object]]:
        data = json.loads((self.state / "releases.json").read_text())
        assert data["version"] == 1
        return data["history"]  # type: ignore[no-any-return]

    def running(self) -> tuple[str, int]:
        """The release whose daemon runs now, checked three ways: pid file, log, /proc."""
        pid = self.pid()
        assert pid is not None, "no daemon pid file"
        assert alive(pid), f"daemon pid {pid} is not running"
        version = dict((p, v) for v, p in self.runs())[pid]
        return version, pid


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    rig = Rig(tmp_path / "root")
    yield rig
    for _, pid in rig.runs():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("smartpole-release: ")
    return lines[0]


def test_first_activation_starts_the_daemon_and_records_it(rig: Rig) -> None:
    rig.release("1.0")
    result = rig.run("activate", "1.0")
    assert result.returncode == 0, result.stderr
    assert rig.link("current") == "1.0"
    assert rig.link("previous") is None
    assert rig.running()[0] == "1.0"
    [entry] = rig.history()
    assert entry["version"] == "1.0"
    assert entry["from"] is None
    assert entry["outcome"] == "running"
    assert not (rig.state / "release-switch.json").exists()


def test_upgrade_switches_and_keeps_the_old_one_as_previous(rig: Rig) -> None:
    rig.release("1.0")
    rig.release("2.0")
    assert rig.run("activate", "1.0").returncode == 0
    _, old_pid = rig.running()
    result = rig.run("activate", "2.0")
    assert result.returncode == 0, result.stderr
    assert (rig.link("current"), rig.link("previous")) == ("2.0", "1.0")
    assert rig.running()[0] == "2.0"
    assert not alive(old_pid)
    assert rig.history()[-1] | {"at": 0} == {
        "version": "2.0",
        "from": "1.0",
        "at": 0,
        "outcome": "running",
        "reason": None,
        "reported": True,
    }


@pytest.mark.parametrize(
    ("mode", "reason"),
    [("never", "not ready within 1 s"), ("exit", "daemon exited with status 3 before READY")],
)
def test_a_release_that_never_gets_ready_is_rolled_back(rig: Rig, mode: str, reason: str) -> None:
    rig.release("1.0")
    rig.release("2.0", mode)
    assert rig.run("activate", "1.0").returncode == 0
    _, old_pid = rig.running()
    result = rig.run("activate", "2.0", timeout=1)
    assert result.returncode == 1
    assert reason in one_line(result.stderr)
    assert (rig.link("current"), rig.link("previous")) == ("1.0", None)
    version, pid = rig.running()
    assert version == "1.0"
    assert pid != old_pid, "the old release was not restarted"
    assert [v for v, _ in rig.runs()] == ["1.0", "2.0", "1.0"]
    entry = rig.history()[-1]
    assert (entry["version"], entry["from"], entry["outcome"]) == ("2.0", "1.0", "rolled_back")
    assert reason in str(entry["reason"])
    assert entry["reported"] is False


def test_a_config_the_new_release_rejects_keeps_the_old_one_running(rig: Rig) -> None:
    rig.release("1.0")
    rig.release("2.0", "ready badconfig")
    assert rig.run("activate", "1.0").returncode == 0
    before = rig.running()
    result = rig.run("activate", "2.0")
    assert result.returncode == 1
    line = one_line(result.stderr)
    assert "config check fails under 2.0" in line
    assert "uplink.hots: unknown key" in line
    assert rig.link("current") == "1.0"
    assert rig.running() == before, "the old daemon must not even be restarted"
    entry = rig.history()[-1]
    assert (entry["version"], entry["outcome"], entry["reported"]) == ("2.0", "refused", False)


def test_first_install_with_the_template_config_switches_but_does_not_start(rig: Rig) -> None:
    rig.release("1.0", "ready badconfig")
    result = rig.run("activate", "1.0")
    assert result.returncode == 0, result.stderr
    assert "installed but not started" in result.stderr
    assert rig.link("current") == "1.0"
    assert rig.pid() is None
    assert rig.runs() == []


def test_a_release_without_complete_marker_is_never_switched_to(rig: Rig) -> None:
    rig.release("1.0")
    rig.release("2.0", complete=False)
    assert rig.run("activate", "1.0").returncode == 0
    before = rig.running()
    result = rig.run("activate", "2.0")
    assert result.returncode == 1
    assert "release 2.0 is not complete" in one_line(result.stderr)
    assert rig.link("current") == "1.0"
    assert rig.running() == before
    assert rig.history()[-1]["outcome"] == "refused"


@pytest.mark.parametrize(
    "step", ["journal", "previous", "current", "stop", "start", "ready", "rollback"]
)
def test_a_switch_killed_after_any_step_is_undone_by_recover(rig: Rig, step: str) -> None:
    rig.release("1.0")
    rig.release("2.0", "never" if step == "rollback" else "ready")
    rig.release("0.9")
    assert rig.run("activate", "0.9").returncode == 0
    assert rig.run("activate", "1.0").returncode == 0
    assert (rig.link("current"), rig.link("previous")) == ("1.0", "0.9")
    killed = rig.run("activate", "2.0", timeout=1, crash=step)
    assert killed.returncode == 86, killed.stderr
    assert (rig.state / "release-switch.json").exists()
    status = json.loads(rig.run("status", "--json").stdout)
    assert status["switch_in_progress"]["target"] == "2.0"
    journalled = status["switch_in_progress"]["step"]

    result = rig.run("recover")
    assert result.returncode == 0, result.stderr
    assert "undid the switch to 2.0" in result.stdout
    assert (rig.link("current"), rig.link("previous")) == ("1.0", "0.9")
    assert rig.running()[0] == "1.0"
    assert all(not alive(pid) for v, pid in rig.runs() if v != "1.0")
    assert sum(alive(pid) for _, pid in rig.runs()) == 1
    assert not (rig.state / "release-switch.json").exists()
    entry = rig.history()[-1]
    assert (entry["version"], entry["outcome"]) == ("2.0", "rolled_back")
    assert f"interrupted at step {journalled}" in str(entry["reason"])
    assert rig.run("recover").stdout.strip() == "nothing to recover"


def test_activate_recovers_a_pending_switch_first(rig: Rig) -> None:
    rig.release("1.0")
    rig.release("2.0")
    assert rig.run("activate", "1.0").returncode == 0
    assert rig.run("activate", "2.0", crash="stop").returncode == 86
    result = rig.run("activate", "2.0")
    assert result.returncode == 0, result.stderr
    assert (rig.link("current"), rig.link("previous")) == ("2.0", "1.0")
    assert rig.running()[0] == "2.0"
    assert [e["outcome"] for e in rig.history()] == ["running", "rolled_back", "running"]


def test_rollback_by_hand_returns_to_previous(rig: Rig) -> None:
    rig.release("1.0")
    rig.release("2.0")
    assert rig.run("activate", "1.0").returncode == 0
    assert rig.run("activate", "2.0").returncode == 0
    result = rig.run("rollback")
    assert result.returncode == 0, result.stderr
    assert (rig.link("current"), rig.link("previous")) == ("1.0", "2.0")
    assert rig.running()[0] == "1.0"


def test_status_and_remove(rig: Rig) -> None:
    rig.release("1.0")
    assert rig.run("activate", "1.0").returncode == 0
    _, pid = rig.running()
    text = rig.run("status").stdout
    assert "current: 1.0" in text
    assert "None -> 1.0: running" in text
    result = rig.run("remove")
    assert result.returncode == 0, result.stderr
    assert not alive(pid)
    assert not (rig.root / "opt/smartpole").exists()
    assert (rig.state / "releases.json").exists(), "history is state: purge removes it"


def test_an_unreadable_history_is_kept_aside_and_the_switch_goes_on(rig: Rig) -> None:
    rig.release("1.0")
    rig.state.mkdir(parents=True)
    (rig.state / "releases.json").write_text('{"version": 1, "hist')
    result = rig.run("activate", "1.0")
    assert result.returncode == 0, result.stderr
    assert "unreadable history kept as" in result.stderr
    assert rig.running()[0] == "1.0"
    assert [e["outcome"] for e in rig.history()] == ["running"]
    [aside] = rig.state.glob("releases.json.corrupt-*")
    assert aside.read_text() == '{"version": 1, "hist'


# systemd cannot run here: a stand-in `systemctl` on PATH plays a Type=notify unit. Its
# `restart` returns once the release under `current` would say READY (mode ready), fails
# (exit), or blocks (never), as systemctl does while the start job waits for READY.
SYSTEMCTL = """#!{python}
import os, signal, sys
from pathlib import Path
root = Path(__file__).resolve().parent.parent / "root"
with open(root / "systemctl.log", "a") as log:
    log.write(" ".join(sys.argv[1:]) + "\\n")
active = root / "active"
if sys.argv[1] == "restart":
    active.unlink(missing_ok=True)
    mode = (root / "opt/smartpole/current/mode").read_text()
    if "ready" in mode:
        active.write_text(os.path.realpath(root / "opt/smartpole/current"))
        sys.exit(0)
    if "never" in mode:
        signal.pause()
    sys.exit(1)
if sys.argv[1] == "stop":
    active.unlink(missing_ok=True)
    sys.exit(0)
if sys.argv[1] == "is-active":
    sys.exit(0 if active.exists() else 3)
sys.exit(64)
"""


@pytest.mark.parametrize(
    ("mode", "reason"), [("never", "not ready within 1 s"), ("exit", "failed")]
)
def test_with_systemd_a_failed_restart_switches_back_and_restarts(
    rig: Rig, tmp_path: Path, mode: str, reason: str
) -> None:
    (rig.root / "run/systemd/system").mkdir(parents=True)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "systemctl").write_text(SYSTEMCTL.format(python=sys.executable))
    (bin_dir / "systemctl").chmod(0o755)
    rig.release("1.0")
    rig.release("2.0", mode)
    assert rig.run("activate", "1.0", path=str(bin_dir)).returncode == 0
    result = rig.run("activate", "2.0", timeout=1, path=str(bin_dir))
    assert result.returncode == 1
    assert reason in one_line(result.stderr)
    assert rig.link("current") == "1.0"
    assert (rig.root / "active").read_text().endswith("/releases/1.0"), "1.0 runs again"
    calls = (rig.root / "systemctl.log").read_text().splitlines()
    unit = "smartpole.service"
    assert calls[:4] == [  # first install: 1.0 started, READY
        f"is-active --quiet {unit}", f"stop {unit}", f"restart {unit}", f"is-active --quiet {unit}"
    ]  # fmt: skip
    assert calls[4:] == [
        f"is-active --quiet {unit}",  # was it running (journalled)
        f"stop {unit}",
        f"restart {unit}",  # 2.0: no READY
        f"stop {unit}",
        f"restart {unit}",  # 1.0 again, READY
        f"is-active --quiet {unit}",
    ]
    entry = rig.history()[-1]
    assert (entry["version"], entry["outcome"]) == ("2.0", "rolled_back")


def test_options_go_before_or_after_the_command(rig: Rig) -> None:
    rig.release("1.0", "never")
    done = subprocess.run(
        [*TOOL_ARGV, "activate", "1.0", "--timeout", "0.5", "--root", str(rig.root)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 1
    assert "not ready within 0.5 s" in one_line(done.stderr)
    from_env = subprocess.run(
        [*TOOL_ARGV, "--root", str(rig.root), "activate", "1.0"],
        capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, "SMARTPOLE_RELEASE_TIMEOUT": "0.4"},
    )  # fmt: skip
    assert "not ready within 0.4 s" in one_line(from_env.stderr)
