"""Who may do what on the OPC UA server: users, password hashes and the permission rules.

Users file: one ``name:hash`` per line (``#`` starts a comment), where ``hash`` is
``pbkdf2_sha256$<iterations>$<salt, base64>$<digest, base64>`` as ``password_entry`` makes it;
passwords are never stored. Make an entry with::

    python -m smartpole.agent.uplink.opcua_auth NAME  >> users   # reads the password on stdin

The file is re-read when its modification time changes. Roles:

* a user from the file (username token, over an encrypted or signed channel) may browse,
  read, subscribe and call the command methods;
* anonymous, only when ``allow_anonymous_read``: browse, read and subscribe; no write, no call;
* everything else is refused. Every session must also come over a secure channel whose client
  certificate is in the trust list: the user manager checks it again at activation, because
  asyncua's validator only sees the certificate the client puts in CreateSession.

The user of the request being processed is kept in a context variable (asyncua processes one
connection's requests in order, in one task), so a method knows who called it.

Failed logins are throttled per client address and per user name (``opcua_throttle``). asyncua
does not tell the user manager who is connecting, so ``PeerAwareInternalServer`` makes
sessions that put the client's address in a context variable while they are being activated.
A throttled attempt is refused like a wrong password (``BadUserAccessDenied``: the client
learns nothing) and its password is never checked. Passwords are compared in constant time
(``hmac.compare_digest`` on PBKDF2 digests), and an unknown user costs a hash too.

Anonymous sessions may call one method: ``ConditionRefresh`` (and ``ConditionRefresh2``),
which only re-sends the alarm conditions a read-only client may already subscribe to.
"""

from __future__ import annotations

import base64
import contextvars
import hashlib
import hmac
import secrets
import struct
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog
from asyncua import ua
from asyncua.common.utils import Buffer, NotEnoughData
from asyncua.crypto.permission_rules import USER_TYPES, PermissionRuleset, User, UserRole
from asyncua.server.internal_server import InternalServer
from asyncua.server.internal_session import InternalSession
from asyncua.server.user_managers import UserManager
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.ua_binary import struct_from_binary
from asyncua.ua.uaerrors import UaError

from smartpole.agent.config.safefile import MAX_CONFIG_BYTES, read_small_file
from smartpole.agent.uplink.opcua_space import nid
from smartpole.agent.uplink.opcua_throttle import LoginThrottle

log = structlog.get_logger("smartpole.uplink.opcua")

SCHEME = "pbkdf2_sha256"
DEFAULT_ITERATIONS = 200_000
_MIN_ITERATIONS = 1_000

current_user: contextvars.ContextVar[User | None] = contextvars.ContextVar(
    "smartpole_opcua_user", default=None
)
# The address of the client whose session is being activated (set around ActivateSession).
current_peer: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "smartpole_opcua_peer", default=None
)


def _host(peername: object) -> str | None:
    """The address of asyncua's session name, which is the transport's peername tuple."""
    if isinstance(peername, tuple) and peername:
        return str(peername[0])
    return None


class _PeerSession(InternalSession):
    def activate_session(
        self, params: ua.ActivateSessionParameters, peer_certificate: bytes | None
    ) -> ua.ActivateSessionResult:
        token = current_peer.set(_host(self.name))
        try:
            return super().activate_session(params, peer_certificate)
        finally:
            current_peer.reset(token)


class PeerAwareInternalServer(InternalServer):
    """asyncua's internal server, with sessions that tell the user manager the client's
    address (its ``get_user`` has no argument for it)."""

    def create_session(
        self, name: str, user: User | None = None, external: bool = False
    ) -> InternalSession:
        return _PeerSession(
            self,
            self.aspace,
            self.subscription_service,
            name,
            user=user if user is not None else User(role=UserRole.Anonymous),
            external=external,
        )


def hash_password(password: str, *, iterations: int = DEFAULT_ITERATIONS) -> str:
    """A salted PBKDF2-SHA256 hash in the users file's format."""
    if iterations < _MIN_ITERATIONS:
        raise ValueError(f"at least {_MIN_ITERATIONS} iterations")
    salt = secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    b64 = base64.b64encode
    return f"{SCHEME}${iterations}${b64(salt).decode()}${b64(digest).decode()}"


def password_entry(name: str, password: str, *, iterations: int = DEFAULT_ITERATIONS) -> str:
    """One line of the users file (without the newline)."""
    if not name or ":" in name or name != name.strip():
        raise ValueError("a user name is non-empty, without ':' or surrounding blanks")
    return f"{name}:{hash_password(password, iterations=iterations)}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, iterations, salt, digest = stored.split("$")
        rounds = int(iterations)
        salt_b, digest_b = base64.b64decode(salt), base64.b64decode(digest)
    except ValueError:
        return False
    if scheme != SCHEME or rounds < _MIN_ITERATIONS:
        return False
    candidate = hashlib.pbkdf2_hmac("sha256", password.encode(), salt_b, rounds)
    return hmac.compare_digest(candidate, digest_b)


def load_users(path: Path) -> dict[str, str]:
    """The users file's entries; OSError if it is unreadable, no regular file or too big.
    A line that is not UTF-8 is an invalid line like any other."""
    users: dict[str, str] = {}
    text = read_small_file(path, MAX_CONFIG_BYTES).decode("utf-8", errors="replace")
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, stored = line.partition(":")
        if not sep or not stored.startswith(SCHEME + "$"):
            log.warning("opcua_users_line_invalid", path=str(path), line=number)
            continue
        users[name] = stored
    return users


_DUMMY_HASH = hash_password("dummy", iterations=_MIN_ITERATIONS)


class UserFileManager(UserManager):
    """asyncua user manager: username/password against the users file, anonymous when
    allowed, and only ever on a channel whose client certificate is trusted."""

    def __init__(
        self,
        users_file: Path | None,
        *,
        allow_anonymous: bool,
        trusted: Callable[[bytes | None], bool],
        throttle: LoginThrottle | None = None,
    ) -> None:
        self.users_file = users_file
        self.allow_anonymous = allow_anonymous
        self._trusted = trusted
        self._users: dict[str, str] = {}
        self._mtime: float | None = None
        self.denied = 0
        self.throttle = throttle if throttle is not None else LoginThrottle()

    def _reload(self) -> None:
        if self.users_file is None:
            return
        try:
            mtime = self.users_file.stat().st_mtime
            if mtime != self._mtime:
                self._users, self._mtime = load_users(self.users_file), mtime
        except OSError as exc:
            if self._mtime is not None or self._users:
                log.warning(
                    "opcua_users_file_unreadable", path=str(self.users_file), error=str(exc)
                )
            self._users, self._mtime = {}, None

    def get_user(
        self,
        iserver: InternalServer,
        username: str | None = None,
        password: str | None = None,
        certificate: Any = None,
    ) -> User | None:
        if not self._trusted(certificate if isinstance(certificate, bytes) else None):
            return self._deny("channel_certificate_untrusted", username)
        if username is None:
            if self.allow_anonymous:
                return User(role=UserRole.Anonymous, name="anonymous")
            return self._deny("anonymous_not_allowed", None)
        peer = current_peer.get()
        if not self.throttle.check(peer, username):
            self.denied += 1  # counted and logged per episode by the throttle, not per try
            return None
        self._reload()
        stored = self._users.get(username)
        # Unknown users cost a hash too, so timing does not tell which names exist.
        ok = verify_password(password or "", stored or _DUMMY_HASH) and stored is not None
        if not ok:
            self.throttle.failed(peer, username)
            return self._deny("bad_credentials", username, peer)
        self.throttle.succeeded(peer, username)
        log.info("opcua_user_logged_in", user=username, peer=peer)
        return User(role=UserRole.User, name=username)

    def _deny(self, reason: str, username: str | None, peer: str | None = None) -> User | None:
        self.denied += 1
        log.warning("opcua_login_denied", reason=reason, user=username, peer=peer)
        return None


_READ_ONLY = {
    nid(type_id)
    for type_id in USER_TYPES
    if type_id
    not in (
        ObjectIds.WriteRequest_Encoding_DefaultBinary,
        ObjectIds.CallRequest_Encoding_DefaultBinary,
    )
}
_USER = {nid(type_id) for type_id in USER_TYPES}
_CALL = nid(ObjectIds.CallRequest_Encoding_DefaultBinary)
_REFRESH = {
    nid(ObjectIds.ConditionType_ConditionRefresh),
    nid(ObjectIds.ConditionType_ConditionRefresh2),
}


def _only_condition_refresh(body: object) -> bool:
    """Whether a Call request (its undecoded body) calls nothing but ConditionRefresh."""
    if not isinstance(body, Buffer):
        return False
    try:
        params = struct_from_binary(ua.CallParameters, body.copy())
    except (NotEnoughData, UaError, struct.error, ValueError, IndexError):  # malformed
        return False
    methods = params.MethodsToCall or []
    return bool(methods) and all(m.MethodId in _REFRESH for m in methods)


class PoleRuleset(PermissionRuleset):
    """Users: the usual user services (read, write, call...). Anonymous: read-only, and only
    when allowed. Admin services (adding nodes...) are nobody's over the network."""

    def __init__(self, *, allow_anonymous: bool) -> None:
        self.allow_anonymous = allow_anonymous

    def check_validity(self, user: User, action_type: ua.NodeId, body: object) -> bool:
        current_user.set(user)
        if user.role == UserRole.User:
            return action_type in _USER
        if user.role == UserRole.Anonymous and self.allow_anonymous:
            if action_type == _CALL:
                return _only_condition_refresh(body)
            return action_type in _READ_ONLY
        return False


def _main() -> int:
    if len(sys.argv) != 2:
        print("usage: python -m smartpole.agent.uplink.opcua_auth NAME < password", file=sys.stderr)
        return 2
    password = sys.stdin.readline().rstrip("\n")
    if not password:
        print("empty password", file=sys.stderr)
        return 2
    print(password_entry(sys.argv[1], password))
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
