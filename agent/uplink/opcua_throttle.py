"""Throttling of failed OPC UA logins, per client address and per user name.

A password guesser gets a few free tries; after that every further failure doubles the time
during which that address, and that user name, are refused without the password even being
checked (so a guesser cannot use the server's PBKDF2 time either). Both keys count, so
guessing one user's password from many addresses is slowed as much as guessing many users'
from one address. The price is that a guesser can keep a real user locked out, but never for
longer than ``max_s`` after the guessing stops. A successful login clears both keys.

An episode (a key being throttled) is logged once when it starts and once when it ends: at
the key's next successful login, or when the key has been quiet for ``max_s`` past its
window. Individual refused attempts are only counted, so an attack cannot flood the log.
Entries are bounded (``max_entries``): names made up by a guesser do not grow memory forever.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog

log = structlog.get_logger("smartpole.uplink.opcua")

_Key = tuple[str, str]  # ("peer", address) or ("user", name)


@dataclass
class _Entry:
    failures: int = 0
    last_failure: float = 0.0
    blocked_until: float = 0.0
    throttling: bool = False  # an episode is under way (logged as started)
    refused: int = 0  # attempts refused during the episode


class LoginThrottle:
    def __init__(
        self,
        *,
        free_failures: int = 3,
        base_s: float = 1.0,
        max_s: float = 300.0,
        max_entries: int = 4096,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if free_failures < 1 or base_s <= 0 or max_s < base_s or max_entries < 2:
            raise ValueError("invalid login throttle settings")
        self.free_failures = free_failures
        self.base_s = base_s
        self.max_s = max_s
        self.max_entries = max_entries
        self.clock = clock
        self._entries: dict[_Key, _Entry] = {}
        self.failures = 0  # wrong user name or password, since start
        self.refused = 0  # attempts refused without a password check, since start
        self.episodes = 0  # throttling episodes started, since start

    @staticmethod
    def _keys(peer: str | None, user: str | None) -> list[_Key]:
        keys = []
        if peer:
            keys.append(("peer", peer))
        if user is not None:
            keys.append(("user", user))
        return keys

    def check(self, peer: str | None, user: str | None) -> bool:
        """True: the attempt may go ahead; False: refused (and counted), no password check."""
        self.sweep()
        now = self.clock()
        blocked = [
            entry
            for key in self._keys(peer, user)
            if (entry := self._entries.get(key)) is not None and now < entry.blocked_until
        ]
        for entry in blocked:
            entry.refused += 1
        if blocked:
            self.refused += 1
        return not blocked

    def failed(self, peer: str | None, user: str | None) -> None:
        now = self.clock()
        self.failures += 1
        for key in self._keys(peer, user):
            entry = self._entries.get(key)
            if entry is None:
                self._make_room()
                entry = self._entries[key] = _Entry()
            entry.failures += 1
            entry.last_failure = now
            over = entry.failures - self.free_failures
            if over < 0:
                continue
            window = min(self.base_s * 2.0 ** min(over, 64), self.max_s)
            entry.blocked_until = now + window
            if not entry.throttling:
                entry.throttling = True
                self.episodes += 1
                log.warning(
                    "opcua_login_throttling_started",
                    **{key[0]: key[1]},
                    failures=entry.failures,
                    window_s=window,
                )

    def succeeded(self, peer: str | None, user: str | None) -> None:
        for key in self._keys(peer, user):
            entry = self._entries.pop(key, None)
            if entry is not None and entry.throttling:
                self._ended(key, entry, "login_succeeded")

    def sweep(self) -> None:
        """Forget keys quiet for ``max_s`` past their window (ending their episode)."""
        now = self.clock()
        quiet = [
            key
            for key, entry in self._entries.items()
            if now >= max(entry.blocked_until, entry.last_failure) + self.max_s
        ]
        for key in quiet:
            entry = self._entries.pop(key)
            if entry.throttling:
                self._ended(key, entry, "quiet")

    def _make_room(self) -> None:
        if len(self._entries) < self.max_entries:
            return
        # User names first (a guesser can invent any number, but not addresses), then keys
        # without an episode, then the longest quiet.
        entries = self._entries
        key = min(
            entries,
            key=lambda k: (k[0] == "peer", entries[k].throttling, entries[k].last_failure),
        )
        entry = self._entries.pop(key)
        if entry.throttling:
            self._ended(key, entry, "evicted")

    def _ended(self, key: _Key, entry: _Entry, reason: str) -> None:
        log.info(
            "opcua_login_throttling_ended",
            **{key[0]: key[1]},
            reason=reason,
            failures=entry.failures,
            refused=entry.refused,
        )

    def status(self) -> dict[str, object]:
        now = self.clock()
        throttled = [key for key, entry in self._entries.items() if now < entry.blocked_until]
        return {
            "login_failures": self.failures,
            "login_refused_throttled": self.refused,
            "throttling_episodes": self.episodes,
            "throttled_peers": sorted(value for kind, value in throttled if kind == "peer"),
            "throttled_users": sum(kind == "user" for kind, _ in throttled),
        }
