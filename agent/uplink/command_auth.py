"""Who may send a command: the per-pole HMAC key and the actor allow-list.

The key lives in a file (secure storage, never in the config or a log line) and is re-read
when the file changes, so a key can be rotated online (GB/T 22239 asks for it) without a
restart. A missing or unreadable key fails closed: every command is refused until the file
is fixed, and the agent keeps running. Signatures are compared in constant time.

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

from smartpole.agent.config.safefile import read_small_file

log = structlog.get_logger("smartpole.commands")

MIN_KEY_BYTES = 16
MAX_KEY_FILE_BYTES = 4096  # a key, not a file put there by mistake (or a FIFO)


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
                key = read_small_file(self.path, MAX_KEY_FILE_BYTES).strip()
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
        expected = hmac.new(self._load(), message, hashlib.sha256).digest()
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
