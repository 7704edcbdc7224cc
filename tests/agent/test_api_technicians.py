"""Technicians as real users on a real socket, under the unit's conditions: the API server
runs as its own unprivileged user, in a socket folder of the unit's RuntimeDirectoryMode,
with /proc mounted ``hidepid=invisible`` as ``ProtectProc=invisible`` does, so the peers'
/proc entries are hidden from it and their groups come from the group database. Clients
connect as throwaway users in throwaway groups (created here, removed afterwards): the
independent check that the unit, the socket's mode and the role decision fit together.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import secrets
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from helpers.paths import REPO

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("useradd") is None or shutil.which("setpriv") is None,
    reason="needs root, useradd and setpriv to make throwaway users",
)

# The server: the test's two methods, the configured groups, and the real ApiServer.
SERVER = r"""
import asyncio, json, os, sys
from pathlib import Path
import structlog
structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
from smartpole.agent.api import ApiServer
from smartpole.agent.api_roles import Access, act, read
from smartpole.agent.config.api import ApiConfig

async def main() -> None:
    path, diag, admin = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    methods = {"status": read(lambda _r: {"state": "fine"}), "write": act(lambda _r: "written")}
    access = Access(ApiConfig(diag_group=diag, admin_group=admin))
    async with ApiServer(path, methods, access=access) as server:
        ready = {"ready": True, "uid": os.getuid(), "proc_1_visible": Path("/proc/1").exists()}
        print(json.dumps(ready), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        print(json.dumps(server.status()), flush=True)

asyncio.run(main())
"""

CLIENT = r"""
import json, sys
from pathlib import Path
from smartpole.agent.api import call
from smartpole.agent.core.errors import ApiError
try:
    print(json.dumps({"ok": call(Path(sys.argv[1]), sys.argv[2])}))
except ApiError as exc:
    print(json.dumps({"error": str(exc)}))
"""


@dataclass(frozen=True)
class Site:
    folder: Path
    socket: Path
    diag_group: str
    admin_group: str
    daemon: str
    users: dict[str, str]  # role in the test -> user name


def _runtime_directory_mode() -> int:
    """The unit's RuntimeDirectoryMode= (tests/project/test_systemd_unit.py checks the rest)."""
    unit = REPO / "configs" / "systemd" / "smartpole.service"
    found = [
        line.partition("=")[2].strip()
        for line in unit.read_text().splitlines()
        if line.startswith("RuntimeDirectoryMode=")
    ]
    assert len(found) == 1, found
    return int(found[0], 8)


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=30)


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    tag = secrets.token_hex(3)
    groups = {"diag": f"sptest-diag-{tag}", "admin": f"sptest-admin-{tag}"}
    users = {
        "daemon": f"sptest-daemon-{tag}",
        "diag": f"sptest-tech-{tag}",
        "admin": f"sptest-boss-{tag}",
        "other": f"sptest-other-{tag}",
    }
    folder = Path(tempfile.mkdtemp(prefix="smartpole-technicians-"))
    made_groups: list[str] = []
    made_users: list[str] = []
    try:
        for name in groups.values():
            _run("groupadd", "--system", name)
            made_groups.append(name)
        member_of = {"diag": groups["diag"], "admin": groups["admin"]}
        for role, name in users.items():
            extra = ["--groups", member_of[role]] if role in member_of else []
            _run("useradd", "--system", "--user-group", "--no-create-home", *extra, name)
            made_users.append(name)
        folder.chmod(0o755)
        run_dir = folder / "run"  # the RuntimeDirectory, as systemd makes it
        run_dir.mkdir()
        run_dir.chmod(_runtime_directory_mode())
        daemon = pwd.getpwnam(users["daemon"])
        os.chown(run_dir, daemon.pw_uid, daemon.pw_gid)
        (folder / "server.py").write_text(SERVER)
        (folder / "client.py").write_text(CLIENT)
        for script in ("server.py", "client.py"):
            (folder / script).chmod(0o644)
        yield Site(
            folder, run_dir / "api.sock", groups["diag"], groups["admin"], users["daemon"], users
        )
    finally:
        for name in made_users:
            subprocess.run(["userdel", name], capture_output=True, timeout=30, check=False)
        for name in made_groups:
            subprocess.run(["groupdel", name], capture_output=True, timeout=30, check=False)
        shutil.rmtree(folder, ignore_errors=True)


def _as(user: str, *argv: str) -> list[str]:
    """``argv`` as ``user`` with the groups the database gives it, as a login would."""
    entry = pwd.getpwnam(user)
    return ["setpriv", f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}", "--init-groups", *argv]


@contextlib.contextmanager
def _server(site: Site) -> Iterator[subprocess.Popen[str]]:
    # A mount namespace of its own with /proc as ProtectProc=invisible mounts it.
    hide = 'mount -t proc -o hidepid=invisible proc /proc && exec "$@"'
    argv = [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        hide,
        "sh",
        *_as(site.daemon, sys.executable, str(site.folder / "server.py")),
        str(site.socket),
        site.diag_group,
        site.admin_group,
    ]
    log = site.folder / "server.log"
    with log.open("w") as stderr:
        process = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, text=True
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)
        for pipe in (process.stdin, process.stdout):
            if pipe is not None:
                pipe.close()


def _call(site: Site, user: str, method: str) -> dict[str, Any]:
    result = subprocess.run(
        _as(user, sys.executable, str(site.folder / "client.py"), str(site.socket), method),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=site.folder,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def test_technicians_in_their_groups_are_recognised_through_the_group_database(
    site: Site,
) -> None:
    with _server(site) as server:
        assert server.stdout is not None
        assert server.stdin is not None
        ready = json.loads(server.stdout.readline() or "{}")
        assert ready.get("ready"), (site.folder / "server.log").read_text()
        assert ready["uid"] == pwd.getpwnam(site.daemon).pw_uid
        # The peers' /proc entries are hidden, as under the unit: the fallback decides.
        assert ready["proc_1_visible"] is False

        sock = site.socket.stat()
        assert stat.S_IMODE(sock.st_mode) == 0o666
        assert sock.st_uid == pwd.getpwnam(site.daemon).pw_uid

        users = site.users
        assert _call(site, users["diag"], "status") == {"ok": {"state": "fine"}}
        refused = _call(site, users["diag"], "write")["error"]
        assert "permission denied: write needs the act role" in refused
        assert f"uid {pwd.getpwnam(users['diag']).pw_uid}" in refused

        assert _call(site, users["admin"], "write") == {"ok": "written"}
        assert _call(site, users["admin"], "status") == {"ok": {"state": "fine"}}

        stranger = _call(site, users["other"], "status")["error"]
        assert "permission denied: any call needs the read role" in stranger

        server.stdin.close()
        status = json.loads(server.stdout.readline() or "{}")
        other_uid = pwd.getpwnam(users["other"]).pw_uid
        diag_uid = pwd.getpwnam(users["diag"]).pw_uid
        assert status["refused_role_by_peer"] == {
            f"uid={diag_uid} act": 1,
            f"uid={other_uid} read": 1,
        }
