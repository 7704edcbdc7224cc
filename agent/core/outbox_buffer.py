"""Where the outbox's records wait while its file cannot be used: memory, bounded.

Split from ``outbox.py``, which decides when records go here and when they go to the file.
The bound is by count and by bytes. When it is reached, the oldest record of the lowest
priority held goes first, but never one of a higher priority than the record that comes
in (then that record is dropped instead): telemetry never pushes out an alarm. Each drop is
counted per stream; ``unrecorded`` keeps the counts not yet written to the file's eviction
counters (reason ``buffer``), so they reach the platform like any other eviction.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass

import structlog

log = structlog.get_logger("smartpole.outbox")


@dataclass(frozen=True)
class Held:
    stream: str
    text: str  # the payload, encoded and checked already
    priority: int
    created_at: float  # wall clock when it was appended, kept when it is written later


class HeldRecords:
    """The memory buffer, oldest first; ``file`` names the outbox in the log."""

    def __init__(self, file: str, *, max_records: int, max_bytes: int) -> None:
        self.file = file
        self.max_records = max_records
        self.max_bytes = max_bytes
        self._records: deque[Held] = deque()
        self.bytes = 0
        self.dropped: Counter[str] = Counter()  # since the start
        self.unrecorded: Counter[str] = Counter()  # dropped, not yet counted in the file

    def __len__(self) -> int:
        return len(self._records)

    def oldest(self, count: int) -> list[Held]:
        """Up to ``count`` records from the oldest, left in place."""
        return [self._records[i] for i in range(min(count, len(self._records)))]

    def pop_oldest(self, count: int) -> None:
        for _ in range(min(count, len(self._records))):
            self.bytes -= len(self._records.popleft().text)

    def streams(self) -> dict[str, int]:
        return dict(Counter(h.stream for h in self._records))

    def hold(self, record: Held) -> None:
        """Keep ``record``; when full, drop the oldest of the lowest priority (see above)."""
        size = len(record.text)
        while self._records and (
            len(self._records) >= self.max_records or self.bytes + size > self.max_bytes
        ):
            lowest = min(h.priority for h in self._records)
            if lowest > record.priority:
                self._drop(record)
                return
            victim = next(h for h in self._records if h.priority == lowest)
            self._records.remove(victim)
            self.bytes -= len(victim.text)
            self._drop(victim)
        if size > self.max_bytes:
            self._drop(record)
            return
        self._records.append(record)
        self.bytes += size

    def _drop(self, record: Held) -> None:
        if not self.dropped:
            log.error(
                "outbox_buffer_dropping",
                file=self.file,
                stream=record.stream,
                held=len(self._records),
                max_records=self.max_records,
                max_bytes=self.max_bytes,
            )
        self.dropped[record.stream] += 1
        self.unrecorded[record.stream] += 1
