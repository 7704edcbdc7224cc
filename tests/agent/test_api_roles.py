"""Who may call which API method: the diag group reads, the admin group (and root, and the
daemon's user) acts; decided by the daemon from the peer's credentials."""

from __future__ import annotations

import asyncio
import grp
import json
import os
import pwd
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError
from structlog.testing import capture_logs

from smartpole.agent.api import ApiServer, call
from smartpole.agent.api_methods import handlers
from smartpole.agent.api_roles import (
    Access,
    Method,
    Peer,
    Policy,
    Role,
    act,
    allows,
    groups_of,
    method_of,
    read,
    role_of,
)
from smartpole.agent.config.api import ApiConfig
from smartpole.agent.core.errors import ApiError
from smartpole.agent.operations import PoleOperations

# Few distinct ids, so uids meet the trusted ones and gids meet the groups often.
ids = st.integers(min_value=0, max_value=6)
maybe_gid = st.none() | ids

# ----- the decision table -----


@given(
    uid=ids,
    gids=st.frozensets(ids, max_size=6),
    trusted=st.frozensets(ids, max_size=3),
    admin=maybe_gid,
    diag=maybe_gid,
)
def test_role_follows_the_table(
    uid: int, gids: frozenset[int], trusted: frozenset[int], admin: int | None, diag: int | None
) -> None:
    policy = Policy(trusted_uids=trusted, admin_gid=admin, diag_gid=diag)
    role = role_of(uid, gids, policy)
    if uid in trusted or (admin is not None and admin in gids):
        assert role is Role.ACT
    elif diag is not None and diag in gids:
        assert role is Role.READ
    else:
        assert role is None
    # Without either group on the machine, only the trusted uids (root, the daemon's
    # user) get anything: the behaviour of a developer's checkout.
    if admin is None and diag is None:
        assert (role is not None) == (uid in trusted)


@given(
    granted=st.sampled_from([None, Role.READ, Role.ACT]),
    needed=st.sampled_from([Role.READ, Role.ACT]),
)
def test_act_includes_read_and_nothing_allows_nothing(granted: Role | None, needed: Role) -> None:
    expected = granted is Role.ACT or (granted is Role.READ and needed is Role.READ)
    assert allows(granted, needed) is expected


def test_root_and_the_daemons_user_are_trusted_by_default() -> None:
    access = Access(ApiConfig(), gid_lookup=lambda _name: None)
    assert access.role(Peer(pid=1, uid=0, gid=0)) is Role.ACT
    assert access.role(Peer(pid=1, uid=os.geteuid(), gid=12345)) is Role.ACT
    assert access.role(None) is None


# ----- every method declares its role -----


def test_every_registered_method_declares_a_role() -> None:
    methods = handlers(cast(PoleOperations, object()))  # handlers call ops only when asked
    undeclared = [name for name, m in methods.items() if not isinstance(m, Method)]
    assert undeclared == []
    acting = {name for name, m in methods.items() if m.role is Role.ACT}
    # What changes outputs or state; a new one must be added here on purpose.
    assert acting == {"write", "ptz", "override", "reset", "power_cycle"}
    assert {"status", "points", "alarms", "lights", "mcu", "api", "audit"} <= set(methods) - acting


def test_a_bare_handler_needs_act() -> None:
    assert method_of(lambda _r: None).role is Role.ACT


# ----- the peer's groups -----


def test_groups_come_from_proc_else_the_group_database(tmp_path: Path) -> None:
    me = Peer(pid=os.getpid(), uid=os.getuid(), gid=os.getgid())
    assert groups_of(me) == frozenset({os.getgid(), *os.getgroups()})
    fake = tmp_path / str(me.pid)
    fake.mkdir()
    (fake / "status").write_text("Name:\tx\nGroups:\t4 24 27 \n")
    assert groups_of(me, proc=tmp_path) == frozenset({me.gid, 4, 24, 27})
    # No /proc entry: the database's membership of the peer's user.
    name = pwd.getpwuid(me.uid).pw_name
    expected = frozenset({me.gid, *os.getgrouplist(name, me.gid)})
    assert groups_of(me, proc=tmp_path / "none") == expected


def test_group_names_are_validated() -> None:
    for bad in ["", "has space", "-dash", "x" * 33, "a/b"]:
        with pytest.raises(ValidationError):
            ApiConfig(diag_group=bad)
        with pytest.raises(ValidationError):
            ApiConfig(admin_group=bad)
    assert ApiConfig().diag_group == "smartpole-diag"
    assert ApiConfig().admin_group == "smartpole-admin"


# ----- end to end over a real socket, the test process as the peer -----


def _other_group() -> str:
    """A group this process is not in (or one that does not exist)."""
    mine = {os.getgid(), *os.getgroups()}
    for entry in grp.getgrall():
        if entry.gr_gid not in mine:
            return entry.gr_name
    return "smartpole-test-nogroup"


def _methods(writes: list[Mapping[str, Any]]) -> dict[str, Method]:
    def write(request: Mapping[str, Any]) -> str:
        writes.append(request)
        return "written"

    return {"status": read(lambda _r: {"state": "fine"}), "write": act(write)}


def _access(diag: str, admin: str) -> Access:
    # Nobody is trusted by uid, so the test process (root or the daemon's own user here)
    # is judged by its groups alone, as a technician's shell would be.
    return Access(ApiConfig(diag_group=diag, admin_group=admin), trusted_uids=frozenset())


async def _raw(path: Path, request: dict[str, object]) -> dict[str, Any]:
    reader, writer = await asyncio.open_unix_connection(str(path))
    writer.write(json.dumps(request).encode() + b"\n")
    line = await reader.readline()
    writer.close()
    await writer.wait_closed()
    return json.loads(line)  # type: ignore[no-any-return]


@pytest.mark.asyncio
async def test_the_diag_group_reads_but_may_not_write(tmp_path: Path) -> None:
    path = tmp_path / "api.sock"
    own_group = grp.getgrgid(os.getgid()).gr_name
    admin = _other_group()
    writes: list[Mapping[str, Any]] = []
    access = _access(diag=own_group, admin=admin)
    with capture_logs() as logs:
        async with ApiServer(path, _methods(writes), access=access) as server:
            # Open to every local user once a technician group exists: the daemon decides.
            assert stat.S_IMODE(path.stat().st_mode) == 0o666

            assert await asyncio.to_thread(call, path, "status") == {"state": "fine"}
            with pytest.raises(
                ApiError, match=rf"permission denied: write needs the act role.*{admin}"
            ):
                await asyncio.to_thread(call, path, "write", device="d", point="p", value=1)
            reply = await _raw(path, {"method": "write", "device": "d", "point": "p", "value": 1})
            assert reply["ok"] is False
            assert reply["refused"] == {
                "method": "write",
                "needs": "act",
                "granted_by": ["root", "the daemon's user", f"group {admin}"],
            }
            status = server.status()
            assert status["refused_role"] == 2
            assert status["refused_role_by_peer"] == {f"uid={os.getuid()} act": 2}
    assert writes == []
    refused = [e for e in logs if e["event"] == "api_call_refused"]
    assert len(refused) == 1  # once per peer uid and role, not per call
    assert refused[0]["needs"] == "act"


@pytest.mark.asyncio
async def test_the_admin_group_may_write(tmp_path: Path) -> None:
    path = tmp_path / "api.sock"
    own_group = grp.getgrgid(os.getgid()).gr_name
    writes: list[Mapping[str, Any]] = []
    access = _access(diag=_other_group(), admin=own_group)
    async with ApiServer(path, _methods(writes), access=access) as server:
        assert await asyncio.to_thread(call, path, "write", value=1) == "written"
        assert await asyncio.to_thread(call, path, "status") == {"state": "fine"}
        assert server.status()["refused_role"] == 0
    assert [w["value"] for w in writes] == [1]


@pytest.mark.asyncio
async def test_outside_both_groups_even_reads_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "api.sock"
    other = _other_group()
    async with ApiServer(path, _methods([]), access=_access(diag=other, admin=other)) as server:
        reply = await _raw(path, {"method": "status"})
        assert reply["refused"]["needs"] == "read"
        assert f"group {other}" in reply["error"]
        assert server.status()["refused_role"] == 1


@pytest.mark.asyncio
async def test_an_outsider_is_answered_and_closed_at_once_and_holds_no_connection(
    tmp_path: Path,
) -> None:
    """The socket is 0666: a local user with no role must not be able to take the
    connections technicians need by opening many and keeping them open."""
    path = tmp_path / "api.sock"
    other = _other_group()
    limits = ApiConfig(diag_group=other, admin_group=other, max_connections=2)
    access = Access(limits, trusted_uids=frozenset())
    async with ApiServer(path, _methods([]), access=access, limits=limits) as server:
        held = []
        for _ in range(limits.max_connections + 3):
            reader, writer = await asyncio.open_unix_connection(str(path))
            held.append(writer)
            # Answered without asking anything, then the server's end closes: EOF follows.
            reply = json.loads(await reader.readline())
            assert reply["refused"]["needs"] == "read"
            assert await reader.read() == b""
        status = server.status()
        assert status["connections"] == 0
        assert status["refused_busy"] == 0
        assert status["refused_role"] == limits.max_connections + 3
        for writer in held:
            writer.close()


@pytest.mark.asyncio
async def test_a_socket_folder_that_keeps_technicians_out_is_said_at_start(
    tmp_path: Path,
) -> None:
    own_group = grp.getgrgid(os.getgid()).gr_name
    access = _access(diag=own_group, admin=_other_group())
    closed = tmp_path / "closed"
    closed.mkdir(mode=0o700)
    opened = tmp_path / "open"
    opened.mkdir()
    opened.chmod(0o755)
    with capture_logs() as logs:
        async with ApiServer(closed / "api.sock", _methods([]), access=access):
            pass
        async with ApiServer(opened / "api.sock", _methods([]), access=access):
            pass
    warned = [e for e in logs if e["event"] == "api_socket_folder_closed"]
    assert [e["socket"] for e in warned] == [str(closed / "api.sock")]
    assert warned[0]["folder_mode"] == "0o700"


@pytest.mark.asyncio
async def test_without_either_group_the_socket_stays_owner_only(tmp_path: Path) -> None:
    nobody = "smartpole-test-nogroup"
    assert _access(diag=nobody, admin=nobody).policy.diag_gid is None
    path = tmp_path / "api.sock"
    async with ApiServer(path, _methods([]), access=_access(diag=nobody, admin=nobody)):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
