"""The retransmission timeout of the host-to-MCU direction: RFC 6298 with Karn's rule.

PROTOCOL.md section 2: ``RTO = SRTT + max(G, 4·RTTVAR)`` with ``G = 1 ms``, the first RTO
100 ms, bounded to 25 ms..2 s, doubled after each timeout. Karn's rule (no sample from a
retransmitted frame) is the caller's part: it only calls :meth:`RtoEstimator.sample` for a
frame acknowledged after a single transmission. Pure arithmetic in seconds, no clock.
"""

from __future__ import annotations

from typing import Final

INITIAL_RTO_S: Final = 0.100
MIN_RTO_S: Final = 0.025
MAX_RTO_S: Final = 2.0
CLOCK_GRANULARITY_S: Final = 0.001
ALPHA: Final = 1 / 8
BETA: Final = 1 / 4


class RtoEstimator:
    """SRTT, RTTVAR and the current RTO (all seconds)."""

    def __init__(
        self,
        *,
        initial_s: float = INITIAL_RTO_S,
        min_s: float = MIN_RTO_S,
        max_s: float = MAX_RTO_S,
    ) -> None:
        if not 0 < min_s <= initial_s <= max_s:
            raise ValueError(f"need 0 < min <= initial <= max, got {min_s}, {initial_s}, {max_s}")
        self._min_s = min_s
        self._max_s = max_s
        self.srtt_s: float | None = None
        self.rttvar_s: float | None = None
        self.rto_s = initial_s
        self.samples = 0

    def _bounded(self, value: float) -> float:
        return min(self._max_s, max(self._min_s, value))

    def sample(self, rtt_s: float) -> None:
        """A round-trip time measured on a frame sent exactly once (RFC 6298 2.2/2.3).
        A new sample also ends any backoff, since the RTO is recomputed from scratch."""
        rtt_s = max(0.0, rtt_s)
        if self.srtt_s is None or self.rttvar_s is None:
            self.srtt_s = rtt_s
            self.rttvar_s = rtt_s / 2
        else:
            self.rttvar_s = (1 - BETA) * self.rttvar_s + BETA * abs(self.srtt_s - rtt_s)
            self.srtt_s = (1 - ALPHA) * self.srtt_s + ALPHA * rtt_s
        self.samples += 1
        self.rto_s = self._bounded(self.srtt_s + max(CLOCK_GRANULARITY_S, 4 * self.rttvar_s))

    def back_off(self) -> None:
        """The retransmission timer expired: double the RTO (RFC 6298 5.5), up to the max."""
        self.rto_s = self._bounded(self.rto_s * 2)
