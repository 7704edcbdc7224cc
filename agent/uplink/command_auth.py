"""Who may send a command: the per-pole HMAC key (or two, while one is rotated) and the
actor allow-list.

The key lives in a file (secure storage, never in the config or a log line) and is re-read
when the file changes, so a key can be rotated online (GB/T 22239 asks for it) without a
restart. A missing or unreadable key fails closed: every command is refused until the file
is fixed, and the agent keeps running. Signatures are compared in constant time.

What the file holds is the key: its bytes with surrounding whitespace (spaces, tabs, CR, LF)
stripped, at least ``MIN_KEY_BYTES`` of them, nothing decoded (``smartpole keys new`` writes
64 hex characters and a newline: the key is those 64 ASCII bytes). Rotation needs the old
and the new key valid at once while the platform switches: ``previous_hmac_key_file`` names
a second file, accepted while it exists (``smartpole keys rotate`` writes it, removing it
ends the overlap). It is a file of its own, so the one-key format keeps its meaning.

The actor in a payload is only a claim: without a signature (or broker ACLs that bind the
command topic to one platform client) anybody who can publish can name any actor. The
processor logs a warning at start when an allow-list is used without a key.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence
from fnmatch import fnmatchcase
from pathlib import Path

import structlog

from smartpole.agent.config.command_limits import MIN_KEY_BYTES
from smartpole.agent.config.safefile import read_small_file

log = structlog.get_logger("smartpole.commands")

MAX_KEY_FILE_BYTES = 4096  # a key, not a file put there by mistake (or a FIFO)
CURRENT, PREVIOUS = "current", "previous"


def key_from_file_bytes(data: bytes) -> bytes:
    """The HMAC key a key file holds (docs/uplink.md, "The command key")."""
    return data.strip()


class KeyUnavailableError(Exception):
    """The key file cannot be used; the message says why (never what the key is)."""


class HmacKey:
    """The key from ``path``: the file's bytes without surrounding whitespace."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._key: bytes | None = None
        self._stamp: tuple[int, int, int] | None = None
        self._problem: str | None = None
        self.reloads = 0

    def _load(self) -> bytes:
        try:
            info = self.path.stat()
            stamp = (info.st_ino, info.st_mtime_ns, info.st_size)
            if stamp != self._stamp:
                key = key_from_file_bytes(read_small_file(self.path, MAX_KEY_FILE_BYTES))
                if len(key) < MIN_KEY_BYTES:
                    raise KeyUnavailableError(
                        f"the key in {self.path} is shorter than {MIN_KEY_BYTES} bytes"
                    )
                if info.st_mode & 0o077:
                    log.warning("command_key_readable_by_others", file=str(self.path))
                self._key, self._stamp = key, stamp
                self.reloads += 1
                log.info("command_key_loaded", file=str(self.path))
        except OSError as exc:
            self._fail(f"cannot read the command key file {self.path}: {exc.strerror}")
        except KeyUnavailableError as exc:
            self._fail(str(exc))
        if self._problem is not None:
            log.info("command_key_recovered", file=str(self.path))
            self._problem = None
        assert self._key is not None
        return self._key

    def _fail(self, problem: str) -> None:
        self._key, self._stamp = None, None
        if problem != self._problem:
            log.error("command_key_unavailable", problem=problem)
            self._problem = problem
        raise KeyUnavailableError(problem)

    def check(self, message: bytes, signature_hex: str) -> bool:
        """Whether ``signature_hex`` is HMAC-SHA256(key, message); raises KeyUnavailableError."""
        return _matches(self._load(), message, signature_hex)


class PreviousKey:
    """The key being rotated out: valid while its file exists. A missing file is the normal
    state (no rotation under way) and no problem; one that exists but cannot be used is
    logged once, like the current key's."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._key = HmacKey(path)
        self._present = False
        self.accepted = 0  # commands whose signature only this key matched

    def check(self, message: bytes, signature_hex: str) -> bool:
        if not self.path.exists():
            if self._present:
                log.info("command_previous_key_retired", file=str(self.path))
                self._present = False
            return False
        try:
            good = self._key.check(message, signature_hex)
        except KeyUnavailableError:
            return False
        if not self._present:
            log.info("command_previous_key_accepted", file=str(self.path),
                     hint="remove the file to end the rotation's overlap")  # fmt: skip
            self._present = True
        if good:
            self.accepted += 1
        return good


class KeyRing:
    """The current key and, during a rotation, the previous one."""

    def __init__(self, current: Path, previous: Path | None = None) -> None:
        self.current = HmacKey(current)
        self.previous = PreviousKey(previous) if previous is not None else None

    def check(self, message: bytes, signature_hex: str) -> str | None:
        """Which key signed ``message`` (``CURRENT``, ``PREVIOUS``) or None. Raises
        KeyUnavailableError when the current key cannot be used: then nothing is accepted,
        not even with the previous key, since that one is on its way out."""
        if self.current.check(message, signature_hex):
            return CURRENT
        if self.previous is not None and self.previous.check(message, signature_hex):
            return PREVIOUS
        return None

    def stats(self) -> dict[str, object]:
        previous = self.previous
        return {
            "reloads": self.current.reloads,
            "previous_key_file": None if previous is None else str(previous.path),
            "accepted_with_previous_key": 0 if previous is None else previous.accepted,
        }


def _matches(key: bytes, message: bytes, signature_hex: str) -> bool:
    expected = hmac.new(key, message, hashlib.sha256).digest()
    try:
        given = bytes.fromhex(signature_hex)
    except ValueError:
        return False
    return hmac.compare_digest(expected, given)


def sign(key: bytes, message: bytes) -> str:
    """The signature a platform sends (used by tests and tools)."""
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def allowed(allow: Mapping[str, Sequence[str]], actor: str, command: str) -> bool:
    """Whether any actor glob that matches ``actor`` lists ``command`` (or ``*``)."""
    return any(
        fnmatchcase(actor, pattern) and (command in commands or "*" in commands)
        for pattern, commands in allow.items()
    )
