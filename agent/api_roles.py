"""Who may call which local API method: decided by the daemon from the socket peer's
kernel credentials, not by the socket file's mode alone.

Every method declares a role: ``read`` only looks (status, points, alarms ...), ``act``
changes outputs or state (writes, overrides, power cycles, alarm resets). A peer gets
``act`` when it is root, the daemon's own user, or in the admin group
(``api.admin_group``); ``read`` when it is in the diag group (``api.diag_group``);
otherwise nothing. On a machine with neither group (a developer's checkout, the tests)
that leaves root and the daemon's user, as before the groups existed.

The peer's groups are those it had when it connected (``/proc/<pid>/status``), falling
back to the group database when /proc cannot be read. The lookups are parameters, so the
decision can be tested without creating system groups.
"""

from __future__ import annotations

import enum
import grp
import os
import pwd
import socket
import stat
import struct
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from smartpole.agent.config.api import ApiConfig

log = structlog.get_logger("smartpole.api")

Handler = Callable[[Mapping[str, Any]], object]  # may return an awaitable
GroupLookup = Callable[[str], "int | None"]
PeerGroups = Callable[["Peer"], frozenset[int]]


class Role(enum.Enum):
    """What a method needs; ``act`` includes ``read``."""

    READ = "read"
    ACT = "act"


@dataclass(frozen=True)
class Method:
    """An API method: what it needs, and what answers it."""

    role: Role
    handler: Handler


def read(handler: Handler) -> Method:
    return Method(Role.READ, handler)


def act(handler: Handler) -> Method:
    return Method(Role.ACT, handler)


def method_of(entry: Handler | Method) -> Method:
    """A bare handler (tests, tools) needs ``act``: what does not say it only reads is
    taken to change something."""
    return entry if isinstance(entry, Method) else Method(Role.ACT, entry)


@dataclass(frozen=True)
class Peer:
    """The kernel's credentials of a socket peer, taken when it connected."""

    pid: int
    uid: int
    gid: int

    @property
    def actor(self) -> str:
        return f"local:uid={self.uid},pid={self.pid}"


@dataclass(frozen=True)
class Policy:
    """The decision's inputs: uids trusted with everything, and the two groups' gids
    (None when the group does not exist on this machine)."""

    trusted_uids: frozenset[int]
    admin_gid: int | None
    diag_gid: int | None


def role_of(uid: int, gids: Iterable[int], policy: Policy) -> Role | None:
    """The most a peer may do, or None: the whole decision, with no I/O."""
    if uid in policy.trusted_uids:
        return Role.ACT
    groups = set(gids)
    if policy.admin_gid is not None and policy.admin_gid in groups:
        return Role.ACT
    if policy.diag_gid is not None and policy.diag_gid in groups:
        return Role.READ
    return None


def allows(granted: Role | None, needed: Role) -> bool:
    return granted is Role.ACT or (granted is Role.READ and needed is Role.READ)


def peer_of(sock: socket.socket) -> Peer | None:
    """SO_PEERCRED of a connected unix socket; None where the kernel cannot say."""
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except (OSError, AttributeError):
        return None
    pid, uid, gid = struct.unpack("3i", creds)
    return Peer(pid=pid, uid=uid, gid=gid)


def gid_of(name: str) -> int | None:
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return None


def groups_of(peer: Peer, proc: Path = Path("/proc")) -> frozenset[int]:
    """The peer's primary and supplementary gids: as the process has them now from /proc
    (what the kernel checks), else as the group database lists its user."""
    try:
        for line in (proc / str(peer.pid) / "status").read_text().splitlines():
            if line.startswith("Groups:"):
                return frozenset({peer.gid, *(int(g) for g in line.split()[1:])})
    except (OSError, ValueError):
        pass
    try:
        name = pwd.getpwuid(peer.uid).pw_name
        return frozenset({peer.gid, *os.getgrouplist(name, peer.gid)})
    except (KeyError, OSError):
        return frozenset({peer.gid})


class Access:
    """The policy of one API server: resolves the configured groups once at start and
    decides per connection. ``trusted_uids`` defaults to root and the daemon's own user."""

    def __init__(
        self,
        config: ApiConfig,
        *,
        trusted_uids: frozenset[int] | None = None,
        gid_lookup: GroupLookup = gid_of,
        peer_groups: PeerGroups = groups_of,
    ) -> None:
        self.admin_group = config.admin_group
        self.diag_group = config.diag_group
        self._trusted = trusted_uids if trusted_uids is not None else frozenset({0, os.geteuid()})
        self._gid_lookup = gid_lookup
        self._peer_groups = peer_groups
        self.policy = self._resolve()

    def _resolve(self) -> Policy:
        return Policy(
            trusted_uids=self._trusted,
            admin_gid=self._gid_lookup(self.admin_group),
            diag_gid=self._gid_lookup(self.diag_group),
        )

    def role(self, peer: Peer | None) -> Role | None:
        if peer is None:
            return None
        if peer.uid in self.policy.trusted_uids:  # no group lookup needed
            return Role.ACT
        return role_of(peer.uid, self._peer_groups(peer), self.policy)

    def granted_by(self, needed: Role) -> list[str]:
        """Who may call a method needing ``needed``, for the refusal's message."""
        who = ["root", "the daemon's user", f"group {self.admin_group}"]
        if needed is Role.READ:
            who.append(f"group {self.diag_group}")
        return who


#: The socket's mode once a technician group exists: anyone may connect, because the
#: daemon decides every call from the peer's credentials. A group-owned 0660 socket would
#: need ``chown``, which the unit's system call filter forbids (``~@privileged``), and
#: would shut out admins who are not also in the diag group.
OPEN_MODE = 0o666


def open_to_technicians(path: Path, access: Access) -> None:
    """Let technicians connect at all where their groups exist (0666; what each may call
    is the daemon's decision); without either group the socket stays owner-only (0600),
    as on a developer's checkout. Says once at start when the folder holding the socket
    keeps them out (e.g. a ``RuntimeDirectoryMode=0700`` drop-in)."""
    if access.policy.diag_gid is None and access.policy.admin_gid is None:
        return
    try:
        path.chmod(OPEN_MODE)
        folder_mode = path.parent.stat().st_mode
    except OSError as exc:
        log.warning("api_socket_mode_unset", socket=str(path), error=str(exc))
        return
    if not folder_mode & stat.S_IXOTH:
        log.warning(
            "api_socket_folder_closed",
            socket=str(path),
            folder_mode=oct(stat.S_IMODE(folder_mode)),
            hint="technicians cannot reach the socket: the folder needs o+x "
            "(the unit sets RuntimeDirectoryMode=0755)",
        )


class Refusals:
    """Calls refused for want of a role: counted per peer uid and role, logged once per
    uid and role (a script retrying in a loop must not flood the journal)."""

    MAX_KEYS = 64  # distinct uid/role pairs kept; more are summed under "other"

    def __init__(self) -> None:
        self.count = 0
        self.by_peer: dict[str, int] = {}

    def refuse(
        self, access: Access, peer: Peer | None, method: str, needed: Role
    ) -> dict[str, object]:
        """Count and maybe log the refusal; the JSON answer the client gets."""
        self.count += 1
        uid = "unknown" if peer is None else str(peer.uid)
        key = f"uid={uid} {needed.value}"
        if key not in self.by_peer and len(self.by_peer) >= self.MAX_KEYS:
            key = "other"
        first = key not in self.by_peer
        self.by_peer[key] = self.by_peer.get(key, 0) + 1
        granted_by = access.granted_by(needed)
        if first:
            log.warning(
                "api_call_refused",
                uid=uid,
                method=method,
                needs=needed.value,
                granted_by=granted_by,
            )
        return {
            "ok": False,
            "refused": {"method": method, "needs": needed.value, "granted_by": granted_by},
            "error": f"permission denied: {method} needs the {needed.value} role, which only "
            f"{', '.join(granted_by[:-1])} or {granted_by[-1]} have (you are uid {uid})",
        }

    def to_json(self) -> dict[str, object]:
        return {"refused_role": self.count, "refused_role_by_peer": dict(self.by_peer)}
