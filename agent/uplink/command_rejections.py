"""How rejected commands reach the audit trail and the log: claimed, never trusted, bounded.

Anybody who can publish on the command topic can send junk, or replay a captured command,
as fast as the broker lets them. Each rejection used to be one audit record under the actor
the payload *claimed*, and one warning: a flood filled the disk and the journal, and the
trail blamed whoever the attacker named. So a rejected command is audited as
``unauthenticated`` with the name it gave in ``claimed_actor``, and the records and log
lines of rejections pass one token bucket. What the bucket refuses is counted (by reason
and claimed actor); the first refusal logs ``command_rejections_throttled`` once, and when
none has been refused for ``quiet_s`` the episode ends with one summary audit record and
``command_rejections_throttling_ended``. The answer to every command and its counter in
``diag uplink`` are never limited.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog

from smartpole.agent.config.command_limits import MAX_ACTOR_CHARS
from smartpole.agent.core.audit import AuditLog, AuditRecord
from smartpole.agent.core.clock import Clock

log = structlog.get_logger("smartpole.commands")

UNAUTHENTICATED = "unauthenticated"
MAX_QUIET_S = 60.0
TOP_CLAIMED = 10


@dataclass
class Episode:
    """Rejections that were counted but not audited one by one."""

    started_mono: float
    started_wall: float
    last_mono: float
    count: int = 0
    by_reason: Counter[str] = field(default_factory=Counter)
    by_claimed: Counter[str] = field(default_factory=Counter)

    def summary(self) -> dict[str, object]:
        return {
            "not_audited": self.count,
            "since": self.started_wall,
            "by_reason": dict(self.by_reason),
            "claimed_actors": dict(self.by_claimed.most_common(TOP_CLAIMED)),
            "other_claimed_actors": max(0, len(self.by_claimed) - TOP_CLAIMED),
        }


class RejectionLimiter:
    """A token bucket of ``burst`` records refilled at ``rate_per_s``, on the monotonic clock."""

    def __init__(self, rate_per_s: float, burst: int, clock: Clock) -> None:
        self._rate = rate_per_s
        self._burst = float(burst)
        self._clock = clock
        self._tokens = self._burst
        self._stamp = clock.monotonic()
        self.quiet_s = min(MAX_QUIET_S, max(1.0, burst / rate_per_s))
        self.episode: Episode | None = None
        self.not_audited = 0
        self.episodes = 0

    def admit(self, reason: str, claimed: str | None) -> bool:
        """Whether this rejection may be audited and logged on its own; counted if not."""
        now = self._clock.monotonic()
        self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        episode = self.episode
        if episode is None:
            episode = self.episode = Episode(now, self._clock.time(), now)
            self.episodes += 1
            log.warning("command_rejections_throttled", quiet_s=self.quiet_s,
                        hint="rejected commands are counted, not audited one by one")  # fmt: skip
        episode.last_mono = now
        episode.count += 1
        episode.by_reason[reason] += 1
        episode.by_claimed[claimed or "(none)"] += 1
        self.not_audited += 1
        return False

    def ended(self) -> Episode | None:
        """The episode, once nothing was refused for ``quiet_s``; it is then closed."""
        episode = self.episode
        if episode is None or self._clock.monotonic() - episode.last_mono < self.quiet_s:
            return None
        self.episode = None
        log.info("command_rejections_throttling_ended", not_audited=episode.count,
                 by_reason=dict(episode.by_reason),
                 lasted_s=round(episode.last_mono - episode.started_mono, 1))  # fmt: skip
        return episode

    def remaining_s(self) -> float:
        """How long until the open episode could end (for a timer)."""
        if self.episode is None:
            return 0.0
        return max(0.0, self.quiet_s - (self._clock.monotonic() - self.episode.last_mono))


class RejectionAudit:
    """The limiter, and the summary record of each episode, written when it ends: at the
    next rejection after a quiet spell, or by a timer if none comes."""

    def __init__(self, audit: AuditLog, rate_per_s: float, burst: int, clock: Clock) -> None:
        self._audit = audit
        self._limiter = RejectionLimiter(rate_per_s, burst, clock)
        self._timer: asyncio.TimerHandle | None = None

    @property
    def not_audited(self) -> int:
        return self._limiter.not_audited

    @property
    def episodes(self) -> int:
        return self._limiter.episodes

    def admit(self, reason: str, claimed: str | None) -> bool:
        """Whether this rejection (or duplicate) may be logged and audited on its own."""
        self._end_episode()
        if self._limiter.admit(reason, claimed):
            return True
        if self._timer is None:
            self._arm_timer()
        return False

    def _arm_timer(self) -> None:
        self._timer = asyncio.get_running_loop().call_later(
            max(0.05, self._limiter.remaining_s()), self._on_timer
        )

    def _on_timer(self) -> None:
        self._timer = None
        if not self._end_episode() and self._limiter.episode is not None:
            self._arm_timer()

    def _end_episode(self) -> bool:
        episode = self._limiter.ended()
        if episode is None:
            return False
        self._audit.record(
            AuditRecord(
                UNAUTHENTICATED,
                "rejected_commands",
                "uplink.commands",
                episode.summary(),
                error=f"{episode.count} rejected or duplicate commands were counted, not "
                "audited one by one (rate limit)",
            )
        )
        return True


def claimed_actor(source: str, data: Mapping[str, Any] | None) -> str | None:
    """The actor a payload names, for the audit of a rejection (only if it looks like one)."""
    value = data.get("actor") if data is not None else None
    if (
        isinstance(value, str)
        and 0 < len(value) <= MAX_ACTOR_CHARS
        and value.isascii()
        and value.isprintable()
    ):
        return f"{source}:{value}"
    return None
