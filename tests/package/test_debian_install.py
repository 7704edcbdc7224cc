"""The .deb in a Debian root, as a pole vendor's technician and the fleet's updates use it.

One scenario, in the order a pole lives it: a wrong-architecture package is refused; the
package installs, its unit verifies and scores, nothing starts before the config passes its
check; the daemon runs against ``smartpole sim``; an upgrade switches releases; an upgrade
whose daemon never becomes ready rolls itself back; purge removes everything but the user.
The root is a debootstrap'd Debian bookworm (tests/helpers/debian_root.py), the packages are
built by ``package/build_deb.py`` from this checkout and from patched copies of it.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from helpers.debian_root import DebianRoot, debian_root
from helpers.packages import Packages
from helpers.waiting import wait_until

CONFIG = "/etc/smartpole/pole.yaml"
NEVER_READY_WAIT_S = 20
UNIT = "smartpole.service"
SIM_PORT = 1502  # until the simulator says which loopback port it serves the bus on
SERVING = re.compile(r"^serving bus lan at tcp://127\.0\.0\.1:(\d+) ")


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DebianRoot]:
    with debian_root(tmp_path_factory.mktemp("debian")) as made:
        yield made


def _pole_yaml(port: int = SIM_PORT) -> str:
    """A small pole a simulator can stand in for: one lamp controller on Modbus TCP."""
    data = {
        "pole": {"id": "deb-test-pole"},
        "profiles_dir": ["/etc/smartpole/profiles.d", "/usr/share/smartpole/profiles"],
        "buses": {
            "lan": {"type": "modbus-tcp", "host": "127.0.0.1", "port": port, "timeout_s": 0.5}
        },
        "devices": {
            "lamp1": {
                "profile": "lamp-controller",
                "bus": "lan",
                "unit_id": 4,
                "poll_period_s": 0.5,
            }
        },
        "site": {"latitude": 23.13, "longitude": 113.26, "timezone": "Asia/Shanghai"},
        "lighting": {
            "programs": {
                "flat": {
                    "default": "on",
                    "profiles": {"on": [{"at": "12:00", "level": 50}, {"at": "11:59", "level": 0}]},
                }
            },
            "assignments": {"lamp1": "flat"},
        },
    }
    return "# written by tests/package/test_debian_install.py\n" + yaml.safe_dump(
        data, sort_keys=False
    )


def _current(root: DebianRoot) -> str:
    link = root.file("/opt/smartpole/current")
    assert link.is_symlink(), "/opt/smartpole/current is not a link"
    return Path(link.readlink()).name


def _daemons(root: DebianRoot) -> list[str]:
    """Command lines of the smartpole daemons running in the root."""
    found = []
    for pid in root.processes():
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        text = " ".join(part.decode(errors="replace") for part in argv if part)
        if " run --config " in text and "smartpole" in text:
            found.append(text)
    return found


def _daemon_log(root: DebianRoot) -> str:
    """The last lines the daemon wrote (the switcher appends its output here without systemd)."""
    log = root.file("/var/log/smartpole/daemon.log")
    lines = log.read_text(errors="replace").splitlines()[-40:] if log.is_file() else []
    return "\n".join(lines)


def _wait_for(root: DebianRoot, what: str, check: Callable[[], bool], timeout: float = 60) -> None:
    """``wait_until``, with the daemon's log in the failure."""
    try:
        wait_until(check, timeout=timeout, what=what)
    except AssertionError as error:
        pytest.fail(f"{error}\n--- the daemon's log\n{_daemon_log(root)}")


def _history(root: DebianRoot) -> list[dict[str, object]]:
    done = root.run(["smartpole-release", "status", "--json"])
    status = json.loads(done.stdout)
    history: list[dict[str, object]] = status["history"]
    return history


@pytest.mark.timeout(1800)  # builds four packages when it runs first, and three releases
def test_a_pole_installs_upgrades_rolls_back_and_purges(
    root: DebianRoot, packages: Packages, tmp_path: Path
) -> None:
    first = packages.amd64
    for deb in (first, packages.amd64_newer, packages.amd64_never_ready, packages.arm64):
        shutil.copy(deb.path, root.file("/tmp") / deb.path.name)

    # A package for another architecture is refused before anything is unpacked.
    wrong = root.run(["dpkg", "-i", f"/tmp/{packages.arm64.path.name}"], check=False)
    assert wrong.returncode != 0
    assert "architecture" in (wrong.stdout + wrong.stderr)
    assert not root.file("/opt/smartpole").exists()

    # Without the Python it runs on, the package refuses to install and says why.
    python = root.file("/usr/bin/python3.11")
    python.rename(python.with_name("python3.11.aside"))
    try:
        refused = root.run(["dpkg", "-i", f"/tmp/{first.path.name}"], check=False)
    finally:
        python.with_name("python3.11.aside").rename(python)
    assert refused.returncode != 0
    assert "python3.11 is missing" in refused.stdout + refused.stderr
    assert not root.file("/opt/smartpole/current").is_symlink()

    # Install: unit enabled, nothing started while the config is the template.
    install = root.run(["dpkg", "-i", f"/tmp/{first.path.name}"])
    assert _current(root) == first.version
    wants = root.file(f"/etc/systemd/system/multi-user.target.wants/{UNIT}")
    assert wants.is_symlink(), "the unit is not enabled"
    assert not _daemons(root), "the daemon started with the template config"
    assert "config check" in install.stdout + install.stderr, "no word on what to do next"
    for folder, mode in (("/etc/smartpole/secrets", 0o700), ("/var/lib/smartpole", 0o700)):
        assert root.file(folder).stat().st_mode & 0o777 == mode, folder
    assert root.file("/usr/share/smartpole/models/yolox-nano-coco-416.onnx").is_file()

    # The installed unit, read by systemd itself.
    verify = subprocess.run(
        ["systemd-analyze", "verify", f"--root={root.path}", UNIT],
        capture_output=True,
        text=True,
        check=False,
    )
    assert verify.returncode == 0, verify.stderr
    security = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", f"--root={root.path}", UNIT],
        capture_output=True,
        text=True,
        check=False,
    )
    score = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", security.stdout)
    assert score is not None, security.stdout + security.stderr
    assert float(score.group(1)) <= 1.5, security.stdout

    # As the service user: the version, and the config a technician wrote.
    version = root.run(["smartpole", "--version"], user="smartpole")
    assert first.version in version.stdout
    root.file(CONFIG).write_text(_pole_yaml())
    check = root.run(["smartpole", "config", "check", CONFIG], user="smartpole", check=False)
    assert check.returncode == 0, check.stdout + check.stderr

    # A simulated lamp controller inside the root (the rig's device), the pole file pointed at
    # the port it serves, and the daemon started against it.
    with subprocess.Popen(
        [
            "unshare", "--mount", "--propagation", "private", "sh", "-c",
            'mount -t proc proc "$R/proc" && exec chroot "$R" /usr/bin/smartpole sim'
            f" --config {CONFIG} --log-format json",
        ],
        env={"R": str(root.path), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    ) as sim:  # fmt: skip
        try:
            assert sim.stdout is not None
            line = sim.stdout.readline()
            served = SERVING.match(line)
            assert served is not None, line
            root.file(CONFIG).write_text(_pole_yaml(int(served.group(1))))
            _run_the_pole(root, packages)
        finally:
            sim.terminate()

    # Remove: the daemon stops and the code goes; the config and the state stay.
    root.run(["dpkg", "--remove", "smartpole"])
    assert not _daemons(root)
    assert not root.file("/opt/smartpole/current").is_symlink()
    assert not root.file("/usr/bin/smartpole").is_symlink()
    assert "deb-test-pole" in root.file(CONFIG).read_text()
    assert root.file("/var/lib/smartpole/releases.json").is_file()

    # Purge: code, config and state go; the system user stays (Debian policy).
    root.run(["dpkg", "--purge", "smartpole"])
    for gone in ("/opt/smartpole", "/etc/smartpole", "/var/lib/smartpole", "/usr/bin/smartpole"):
        assert not root.file(gone).is_symlink(), gone
        assert not root.file(gone).exists(), gone
    assert not _daemons(root)
    assert root.run(["getent", "passwd", "smartpole"]).stdout.startswith("smartpole:")

    # Reinstalled after the purge: a fresh template again, the user reused, nothing started.
    root.run(["dpkg", "-i", f"/tmp/{first.path.name}"])
    assert "deb-test-pole" not in root.file(CONFIG).read_text()
    assert _current(root) == first.version
    assert not _daemons(root)


def _run_the_pole(root: DebianRoot, packages: Packages) -> None:
    """Start, upgrade, and survive a broken upgrade, against the running simulator."""
    first, second, broken = packages.amd64, packages.amd64_newer, packages.amd64_never_ready
    root.run(["smartpole-release", "activate", first.version, "--timeout", "120"])
    assert len(_daemons(root)) == 1
    _wait_for(root, "lamp1 online", lambda: _online(root))
    _technicians_use_their_groups(root)

    # An upgrade switches to the new release and keeps the old one beside it.
    root.run(["dpkg", "-i", f"/tmp/{second.path.name}"])
    assert _current(root) == second.version
    assert Path(root.file("/opt/smartpole/previous").readlink()).name == first.version
    assert root.file(f"/opt/smartpole/releases/{first.version}/.complete").is_file()
    assert second.version in root.run(["smartpole", "--version"]).stdout
    _wait_for(root, "lamp1 online after the upgrade", lambda: _online(root))
    assert len(_daemons(root)) == 1

    # A release whose daemon never says READY: rolled back by itself, and said so. The wait
    # for READY is shortened from its 120 s default (maintainer scripts take no options).
    bad = root.run(
        ["dpkg", "-i", f"/tmp/{broken.path.name}"],
        env={"SMARTPOLE_RELEASE_TIMEOUT": str(NEVER_READY_WAIT_S)},
        check=False,
    )
    assert bad.returncode != 0, "the failed upgrade was reported as a success"
    said = bad.stdout + bad.stderr
    assert "not ready within" in said, said
    assert _current(root) == second.version
    daemons = _daemons(root)
    assert len(daemons) == 1, daemons
    assert f"releases/{second.version}/" in daemons[0], daemons
    _wait_for(root, "lamp1 online after the rollback", lambda: _online(root))
    last = _history(root)[-1]
    assert last["version"] == broken.version, last
    assert last["outcome"] == "rolled_back", last


def _technicians_use_their_groups(root: DebianRoot) -> None:
    """A smartpole-diag member reads but may not act; a smartpole-admin member acts; the
    daemon decides from the caller's credentials on the socket the package set up."""
    assert root.file("/run/smartpole").stat().st_mode & 0o777 == 0o755
    for user, group in (("tech", "smartpole-diag"), ("lead", "smartpole-admin")):
        root.run(["useradd", "--create-home", "--groups", group, user])
    override = ["smartpole", "diag", "override", "lamp1", "40", "60"]
    assert root.run(["smartpole", "diag", "status"], user="tech").returncode == 0
    refused = root.run(override, user="tech", check=False)
    assert refused.returncode != 0
    assert "permission denied" in refused.stdout + refused.stderr
    root.run(override, user="lead")
    root.run(["smartpole", "diag", "override", "lamp1", "clear"], user="lead")


def _online(root: DebianRoot) -> bool:
    """lamp1 is online in ``diag status``; False while the daemon does not answer yet."""
    done = root.run(["smartpole", "diag", "status", "--json"], check=False)
    if done.returncode != 0:
        return False
    devices = json.loads(done.stdout).get("devices")
    assert isinstance(devices, list), done.stdout
    states = {d["name"]: d["state"] for d in devices if isinstance(d, dict)}
    return states.get("lamp1") == "online"
