"""What keeps the local API from taking the event loop away from control.

The API shares one event loop with the MCU heartbeat, the lighting tick and safety, so its
work is rationed three ways: each connection by a token bucket (requests per second), all
connections together by a work budget (a share of the loop's time), and the number of
connections by a cap; a long answer is made in slices. Overload is counted here and
logged once when it starts and once when it ends, never once per connection: a flood must
not also flood the journal.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import structlog

log = structlog.get_logger("smartpole.api")

#: The share of the loop's time that API requests may take, measured, over all clients.
API_SHARE = 0.25
#: Work the API may do at once before it has to wait for its share (seconds of loop time).
API_WORK_BURST_S = 0.05
#: Items of a long answer made and encoded per loop turn (~4 ms for points on a slow box).
CHUNK_ITEMS = 250
#: An overload episode ends after this long without another refusal.
OVERLOAD_QUIET_S = 5.0
#: A refused connection stays half-closed this long, at most this many at once.
LINGER_S = 0.5
MAX_LINGERING = 256


class TokenBucket:
    """Requests per second for one connection: ``burst`` at once, then ``rate`` a second.

    A client over its rate is not refused, it waits: pipelined requests are served at the
    rate, one at a time, and the loop is free in between.
    """

    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._clock = clock
        self._at = clock()

    def delay(self) -> float:
        """Take a token; how long to wait first (0 when one was there)."""
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._at) * self._rate)
        self._at = now
        self._tokens -= 1.0
        return 0.0 if self._tokens >= 0 else -self._tokens / self._rate


class WorkBudget:
    """All API work together may take ``share`` of the loop's time.

    Each request's measured duration is charged as debt that drains at ``share`` seconds
    per second; a request that finds more than ``burst_s`` of debt waits until it is paid.
    So however many clients ask, control keeps at least ``1 - share`` of every second,
    minus at most one request's duration.
    """

    def __init__(
        self,
        share: float = API_SHARE,
        burst_s: float = API_WORK_BURST_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._share = share
        self._burst_s = burst_s
        self._clock = clock
        self._debt = 0.0
        self._at = clock()

    def _settle(self) -> None:
        now = self._clock()
        self._debt = max(0.0, self._debt - (now - self._at) * self._share)
        self._at = now

    def delay(self) -> float:
        """How long a request should wait before it may run."""
        self._settle()
        excess = self._debt - self._burst_s
        return 0.0 if excess <= 0 else excess / self._share

    def charge(self, seconds: float) -> None:
        self._settle()
        self._debt += seconds


class Chunks:
    """A result sent as a JSON array slice by slice (``size`` items at a time), for answers
    whose making and encoding would hold the loop too long at once (``points`` of a big
    pole). ``items`` is consumed lazily, while the answer is written."""

    def __init__(self, items: Iterable[object], size: int = CHUNK_ITEMS) -> None:
        self._items = items
        self.size = size

    def __iter__(self) -> Iterator[object]:
        return iter(self._items)


@dataclass
class ApiStats:
    """Counters for ``diag api``; each only grows while the daemon runs."""

    connections: int = 0  # open now
    accepted: int = 0
    refused_busy: int = 0
    closed_idle: int = 0
    closed_slow_reader: int = 0
    oversized: int = 0
    requests: int = 0
    throttled: int = 0  # requests that waited for their connection's rate
    budget_waits: int = 0  # requests that waited for the API's share of the loop
    accept_errors: int = 0
    max_hold_s: float = 0.0  # the longest the API held the loop at once

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["max_hold_s"] = round(self.max_hold_s, 4)
        return data


class Episode:
    """A trouble that is logged when it starts and when it ends, and counted in between.

    ``hit()`` marks one occurrence; the first opens the episode with a warning. It ends
    with one info line (how many, how long) after ``quiet_s`` without another hit, or when
    ``clear()`` says so. One timer per episode, however many hits.
    """

    def __init__(self, event: str, quiet_s: float | None, **fields: object) -> None:
        self._event = event
        self._quiet_s = quiet_s
        self._fields = fields
        self._count = 0
        self._started = 0.0
        self._last = 0.0
        self._timer: asyncio.TimerHandle | None = None

    @property
    def active(self) -> bool:
        return self._count > 0

    @property
    def count(self) -> int:
        return self._count

    def hit(self, **fields: object) -> None:
        now = time.monotonic()
        self._last = now
        self._count += 1
        if self._count > 1:
            return
        self._started = now
        log.warning(self._event, **self._fields, **fields)
        if self._quiet_s is not None:
            self._arm(now + self._quiet_s)

    def clear(self) -> None:
        """End the episode now, if one is open."""
        if not self._count:
            return
        log.info(
            f"{self._event}_ended",
            count=self._count,
            lasted_s=round(time.monotonic() - self._started, 1),
        )
        self._count = 0
        self.cancel()

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _arm(self, when: float) -> None:
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(max(0.0, when - time.monotonic()), self._check)

    def _check(self) -> None:
        self._timer = None
        due = self._last + (self._quiet_s or 0.0)
        if time.monotonic() >= due:
            self.clear()
        else:
            self._arm(due)


class Lingering:
    """Refused connections, answered and half-closed, kept open a moment before the close.

    A client that writes its request after our ``busy`` answer would otherwise get a
    broken pipe instead of reading it. Bounded in number and time, with one timer: the
    oldest is closed early when more are refused than it holds.
    """

    def __init__(self, linger_s: float = LINGER_S, most: int = MAX_LINGERING) -> None:
        self._linger_s = linger_s
        self._most = most
        self._held: collections.deque[tuple[float, socket.socket]] = collections.deque()
        self._timer: asyncio.TimerHandle | None = None

    def add(self, conn: socket.socket) -> None:
        if len(self._held) >= self._most:
            _close_read(self._held.popleft()[1])
        self._held.append((time.monotonic() + self._linger_s, conn))
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._linger_s, self._sweep)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._held:
            _close_read(self._held.popleft()[1])

    def _sweep(self) -> None:
        self._timer = None
        now = time.monotonic()
        while self._held and self._held[0][0] <= now:
            _close_read(self._held.popleft()[1])
        if self._held:
            delay = self._held[0][0] - now
            self._timer = asyncio.get_running_loop().call_later(delay, self._sweep)


def _close_read(conn: socket.socket) -> None:
    """Close a refused connection; read what it sent first, so the close does not turn
    into a reset that could hide our answer from it."""
    with contextlib.suppress(OSError):
        conn.recv(65536)
    conn.close()
