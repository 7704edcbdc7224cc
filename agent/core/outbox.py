"""The outbox every part of the agent appends to: the file when it works, memory when not.

Records that must reach the platform (alarm transitions, events, command results,
telemetry) go to the SQLite file store first (``outbox_store.py``: ordering, sequence
numbers, bounds, salvage). This module is the one owner of what happens when that file
cannot be used, so callers keep one interface and never stop for it: a full disk, a
directory where the file should be or an I/O error must not stop lighting control, safety
or the local API (a daemon that exits on it is restarted by systemd every few seconds and
controls nothing).

While the file is unusable, records wait in a bounded memory buffer, in order; when it is
full, the oldest records of the lowest priority go first (never one of a higher priority
than the record that comes in) and each is counted per stream. Opening or writing is
retried with exponential backoff (``RETRY_MIN_S`` to ``RETRY_MAX_S``); once it works, the
held records are written in their order with the times they were made, the dropped ones
are recorded as evictions with reason ``buffer`` (so they are reported upstream like any
eviction), and the damage reports of stores found broken are appended. The failure is
logged once when it starts and once when it clears, counted, shown by ``problem()`` in
``diag status`` and raised as the alarm ``storage_unavailable`` by the composition root
(``watch``). While the file fails, ``pending`` hands the uplink nothing: what is on disk
waits there, and the uplink does not loop on a disk that cannot be written.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Final

import structlog

from smartpole.agent.core.outbox_bounds import REPORT_INTERVAL_S, REPORT_STREAM
from smartpole.agent.core.outbox_buffer import Held, HeldRecords
from smartpole.agent.core.outbox_eviction import BUFFER
from smartpole.agent.core.outbox_store import FILE_NAME, OutboxStore
from smartpole.agent.core.outbox_types import (
    STREAM_PATTERN,
    OutboxError,
    OutboxRecord,
    OutboxRefusedError,
    OutboxStorageError,
    Priority,
    StreamStats,
    check_priority,
    check_stream,
    encode,
)
from smartpole.agent.core.quarantine import Damage
from smartpole.drivers.lifecycle import Closing

__all__ = [
    "FILE_NAME",
    "REPORT_STREAM",
    "STORAGE_ALARM",
    "STREAM_PATTERN",
    "Outbox",
    "OutboxError",
    "OutboxRecord",
    "OutboxRefusedError",
    "OutboxStorageError",
    "Priority",
    "StreamStats",
]

log = structlog.get_logger("smartpole.outbox")

STORAGE_ALARM: Final = "storage_unavailable"  # the alarm kind raised while the file fails
BUFFER_MAX_RECORDS: Final = 10_000
BUFFER_MAX_BYTES: Final = 4 * 1024 * 1024
RETRY_MIN_S: Final = 1.0
RETRY_MAX_S: Final = 30.0
WRITE_BATCH: Final = 256  # held records written per transaction on recovery
TICK_S: Final = 1.0

StorageListener = Callable[[bool, str | None], None]  # (unavailable, why)


class Outbox(Closing):
    """Owned by the event loop's thread; ``run`` is its task (retries, the alarm).

    Arguments as ``OutboxStore``'s; ``buffer_records``/``buffer_bytes`` bound the memory
    buffer. ``append`` returns the record's sequence number, or None when it is held in
    memory (it gets its number when it is written).
    """

    def __init__(
        self,
        state_dir: Path,
        *,
        max_bytes: int | None = None,
        max_age_s: float | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        report_interval_s: float | None = REPORT_INTERVAL_S,
        buffer_records: int = BUFFER_MAX_RECORDS,
        buffer_bytes: int = BUFFER_MAX_BYTES,
    ) -> None:
        if max_bytes is not None and max_bytes < 1:
            raise ValueError("max_bytes must be positive")
        if max_age_s is not None and not max_age_s > 0:
            raise ValueError("max_age_s must be positive")
        self.state_dir = state_dir
        self.path = state_dir / FILE_NAME
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self.report_interval_s = report_interval_s
        self.buffer_records = buffer_records
        self.buffer_bytes = buffer_bytes
        self._clock = clock
        self._monotonic = monotonic
        self._store: OutboxStore | None = None
        self._held = HeldRecords(str(self.path), max_records=buffer_records, max_bytes=buffer_bytes)
        self.storage_failures = 0  # failed opens, writes and syncs since the start
        self.failing_since: float | None = None  # wall clock; None while the file works
        self.last_error: str | None = None
        self._held_appends = 0
        self._attempts = 0
        self._next_try = -float("inf")
        self._damage: list[Damage] = []
        self._listener: StorageListener | None = None
        self._closed = False
        self.retry(force=True)

    # -- state -----------------------------------------------------------------------------

    @property
    def available(self) -> bool:
        """The file is open and its last write worked: records go straight to it."""
        return self._store is not None and self.failing_since is None

    @property
    def dropped(self) -> dict[str, int]:
        """Records dropped from the memory buffer since the start, per stream."""
        return dict(self._held.dropped)

    @property
    def held(self) -> int:
        """Records waiting in memory for the file."""
        return len(self._held)

    def watch(self, listener: StorageListener) -> None:
        """Call ``listener(unavailable, why)`` from ``run`` whenever availability changes
        (and once at its start): the composition root raises and clears the alarm with it."""
        self._listener = listener

    def problem(self) -> str | None:
        """One line for ``diag status`` problems while the file is unusable; else None."""
        if self.failing_since is None:
            return None
        since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.failing_since))
        dropped = sum(self._held.dropped.values())
        return (
            f"outbox {self.path} unusable since {since}: {self.last_error}; "
            f"{self.held} records held in memory, {dropped} dropped, "
            f"{self.storage_failures} failures"
        )

    def status(self) -> dict[str, object]:
        """The storage side of ``diag``: whether the file works, what waits in memory."""
        store = self._store
        return {
            "available": self.available,
            "failing_since": self.failing_since,
            "last_error": self.last_error,
            "storage_failures": self.storage_failures,
            "held": self.held,
            "held_bytes": self._held.bytes,
            "dropped": dict(self._held.dropped),
            "next_retry_in_s": None
            if self.available
            else round(max(0.0, self._next_try - self._monotonic()), 1),
            "disk_bytes": store.disk_bytes() if store is not None else None,
            "max_bytes": self.max_bytes,
        }

    # -- the file's interface, kept for callers ---------------------------------------------

    @property
    def epoch(self) -> str:
        return self._store.epoch if self._store is not None else ""

    @property
    def append_failures(self) -> int:
        """Appends that did not reach the file when made (held, refused, failed, not JSON)."""
        stored = self._store.append_failures if self._store is not None else 0
        return stored + self._held_appends

    @property
    def recoveries(self) -> int:
        return self._store.recoveries if self._store is not None else 0

    @property
    def salvaged(self) -> int:
        return self._store.salvaged if self._store is not None else 0

    @property
    def evicting(self) -> bool:
        return self._store.evicting if self._store is not None else False

    def evictions(self) -> dict[str, dict[str, int]]:
        return self._store.evictions() if self._store is not None else {}

    def append(self, stream: str, payload: Mapping[str, object], *, priority: int) -> int | None:
        """Store one record; its sequence number, or None when it is held in memory.

        ``OutboxError`` only for what retrying cannot fix: a payload that is not JSON, or a
        record refused by the bound (``OutboxRefusedError``). A bad ``stream`` or
        ``priority`` is a programming error (``ValueError``).
        """
        seqs = self.append_many([(stream, payload, priority)])
        return None if seqs is None else seqs[0]

    def append_many(
        self, records: Iterable[tuple[str, Mapping[str, object], int]]
    ) -> list[int] | None:
        """Store records in one transaction; their numbers, or None when held in memory."""
        items = list(records)
        for stream, _, priority in items:
            check_stream(stream)
            check_priority(priority)
        try:
            rows = [(s, encode(s, payload), priority) for s, payload, priority in items]
        except OutboxError:
            self._held_appends += len(items)  # counted with the failures, as the store does
            raise
        if not rows:
            return []
        self._check_open()
        if not self.available:
            self.retry()
        store = self._store
        if store is not None and self.available:
            try:
                return store.append_encoded(rows)
            except OutboxStorageError as exc:
                self._fail(exc, "append")
        now = self._clock()
        self._held_appends += len(rows)
        for stream, text, priority in rows:
            self._held.hold(Held(stream, text, priority, now))
        return None

    def flush(self) -> None:
        """Make what the file holds survive a power cut; records held in memory cannot.
        Nothing to do once closed (``close`` made everything durable)."""
        if self._closed or self._store is None or not self.available:
            return
        try:
            self._store.flush()
        except OutboxStorageError as exc:
            self._fail(exc, "sync")

    def pending(self, stream: str | None = None, limit: int = 100) -> list[OutboxRecord]:
        """As ``OutboxStore.pending``; nothing while the file fails (see the docstring)."""
        if limit < 1:
            raise ValueError("limit must be at least 1")
        if stream is not None:
            check_stream(stream)
        self._check_open()
        if not self.available:
            self.retry()
        if self._store is None or not self.available:
            return []
        try:
            return self._store.pending(stream, limit)
        except OutboxStorageError as exc:
            self._fail(exc, "read")
            return []

    def ack(self, stream: str, up_to_seq: int) -> int:
        """As ``OutboxStore.ack``; ``OutboxError`` when the file cannot take it (the records
        go again, the platform drops the duplicates)."""
        check_stream(stream)
        self._check_open()
        if self._store is None:
            raise OutboxStorageError(f"cannot acknowledge in {stream}: {self.last_error}")
        try:
            return self._store.ack(stream, up_to_seq)
        except OutboxStorageError as exc:
            self._fail(exc, "acknowledge")
            raise

    def stats(self) -> dict[str, StreamStats]:
        """As ``OutboxStore.stats``; empty while the file cannot be read."""
        self._check_open()
        if self._store is None:
            return {}
        try:
            return self._store.stats()
        except OutboxStorageError as exc:
            self._fail(exc, "read")
            return {}

    def evict_expired(self) -> int:
        if self._store is None or not self.available:
            return 0
        try:
            return self._store.evict_expired()
        except OutboxStorageError as exc:
            self._fail(exc, "evict")
            return 0

    def report_damage(self, damage: Damage) -> None:
        """Send a damaged store's report upstream (stream ``outbox``), held if need be."""
        try:
            self.append(REPORT_STREAM, damage.to_json(), priority=Priority.HIGH)
        except OutboxError as exc:
            log.error("outbox_damage_report_failed", store=damage.store, error=str(exc))

    # -- degrading and recovering ------------------------------------------------------------

    def retry(self, *, force: bool = False) -> bool:
        """Open the file and write what memory holds, if the backoff allows; True: it works.

        ``run`` calls it every tick; appends and reads call it too, so a file that comes
        back is used at the next record rather than at the next tick.
        """
        if self.available or self._closed:
            return self.available
        if not force and self._monotonic() < self._next_try:
            return False
        if self._store is None:
            try:
                self._store = OutboxStore(
                    self.state_dir,
                    max_bytes=self.max_bytes,
                    max_age_s=self.max_age_s,
                    clock=self._clock,
                    report_interval_s=self.report_interval_s,
                )
            except OutboxStorageError as exc:
                self._fail(exc, "open")
                return False
            self._damage.extend(self._store.damage)
        store = self._store
        store.relieve()
        try:
            while self._held:
                batch = self._held.oldest(WRITE_BATCH)
                store.append_encoded(
                    [(h.stream, h.text, h.priority) for h in batch], [h.created_at for h in batch]
                )
                self._held.pop_oldest(len(batch))
            store.count_lost(self._held.unrecorded, BUFFER)
            self._held.unrecorded.clear()
            while self._damage:
                store.append_encoded(
                    [
                        (
                            REPORT_STREAM,
                            encode(REPORT_STREAM, self._damage[0].to_json()),
                            Priority.HIGH,
                        )
                    ]
                )
                self._damage.pop(0)
            store.flush()
        except OutboxStorageError as exc:
            self._fail(exc, "write")
            return False
        except OutboxError as exc:  # refused by the bound: counted by the store, go on
            log.warning("outbox_held_record_refused", file=str(self.path), error=str(exc))
            self._held.pop_oldest(1)
            return self.retry(force=True)
        self._recovered()
        return True

    async def run(self) -> None:
        """Retry with backoff while the file fails; tell the listener when that changes."""
        announced: bool | None = None
        while True:
            self.retry()
            up = self.available
            if up != announced and self._listener is not None:
                self._listener(not up, self.problem())
            announced = up
            await asyncio.sleep(TICK_S)

    def _fail(self, exc: Exception, what: str) -> None:
        self.storage_failures += 1
        self.last_error = str(exc)
        delay = min(RETRY_MAX_S, RETRY_MIN_S * 2**self._attempts)
        self._attempts += 1
        self._next_try = self._monotonic() + delay
        if self.failing_since is None:
            self.failing_since = self._clock()
            log.error(
                "outbox_storage_failed",
                file=str(self.path),
                operation=what,
                error=str(exc),
                held=self.held,
            )

    def _recovered(self) -> None:
        if self.failing_since is not None:
            log.info(
                "outbox_storage_recovered",
                file=str(self.path),
                down_s=round(self._clock() - self.failing_since, 1),
                failures=self.storage_failures,
                dropped=dict(self._held.dropped),
            )
        self.failing_since = None
        self.last_error = None
        self._attempts = 0

    def _check_open(self) -> None:
        if self._closed:
            raise OutboxError("the outbox is closed")

    def close(self) -> None:
        """Close the file, after one last try to write what memory holds; what cannot be
        written is lost, and the log says how much."""
        if self._closed:
            return
        if self._held or self._held.unrecorded:
            self.retry(force=True)
        if self._held:
            log.error(
                "outbox_closed_with_records_in_memory",
                file=str(self.path),
                lost=self.held,
                per_stream=self._held.streams(),
            )
        self._closed = True
        if self._store is not None:
            self._store.close()
            self._store = None
