"""Report by exception: point changes beyond a deadband, batched, plus an integrity report.

A listener on the point table remembers, per point, the last value that went up; a new
reading is queued only when it moved more than the point's deadband (first matching
``device.point`` glob in the config, default 0: any change) or its quality changed. Every
``flush_interval_s`` the queued changes become one outbox record on the stream
``telemetry`` (priority low), so a gateway with thousands of changing values writes one
transaction per second instead of one per value. Every change is kept, in order, not only
the latest of each point: the deadband is the knob that trades detail for volume, the flush
interval only sets the latency, so a point polled every 100 ms still reports ten values a
second. A batch that reaches ``MAX_VALUES_PER_RECORD`` goes out at once, which bounds both
the memory and the size of one MQTT message. Every ``integrity_period_s`` all points go up
in one record, whether they changed or not, so the platform can resynchronise.

Each value travels with its acquisition timestamp. The values of one block read share it,
so a record is a list of blocks, ``{"device", "ts", "values": {point: value}, "quality":
{point: quality}}``, with ``quality`` listing only the values that are not ``good``: JSON
encoding is most of the cost of a busy gateway's telemetry, and this shape spends it on the
values rather than on repeating device names, qualities and timestamps. A value that is not
a finite number (NaN, ±inf) goes up as null with quality ``bad``: JSON has no NaN, and a NaN
is no reading. Consecutive blocks of one device with the same (millisecond) timestamp are
merged into one, unless a point would appear in it twice.

A float is rounded to the resolution its point's description declares (``PointMeta``,
``round_to``) before it is compared with the last value sent: a reading that rounds to the
value already sent is no change, and the deadband measures rounded values. Every record
names the hash of the point descriptions it was made under (``data.meta``, see
``meta.py``), so a platform can tell which description its values belong to.

Honest restarts: a value brought back from before a restart (``restored`` in the point table)
is not published until the device is read again, not even in an integrity report: the life
that read it published it, and sending it again after newer values would show a counter
going backwards. A device that stops answering goes up as its points' ``null`` with quality
``bad`` at the time it was declared so (the point table hands the block on that way), never
as the old value with a new time. Counter points (``monotonic`` in the profile) pass the
``CounterWatch`` (``counters.py``) before they are queued.
"""

from __future__ import annotations

import asyncio
import fnmatch
import math
import time
from collections.abc import Callable, Sequence

import structlog

from smartpole.agent.config.uplink import TelemetryConfig
from smartpole.agent.core.outbox import Outbox, OutboxError, Priority
from smartpole.agent.core.point_meta import round_to, rounder
from smartpole.agent.core.points import PointTable, Quality
from smartpole.agent.uplink.counters import CounterWatch
from smartpole.drivers.lifecycle import Lifecycle
from smartpole.drivers.schema import Value

log = structlog.get_logger("smartpole.uplink.telemetry")

STREAM = "telemetry"
MAX_VALUES_PER_RECORD = 5000  # keeps one record (one MQTT message) well under 1 MB


Rounding = dict[tuple[str, str], tuple[float, int, int]]  # (device, point) -> rounder()


def _clean(
    value: Value | None, quality: Quality, rounding: tuple[float, int, int] | None
) -> tuple[Value | None, Quality]:
    if isinstance(value, float):
        if not math.isfinite(value):
            return None, Quality.BAD
        if rounding is not None:
            return round_to(value, *rounding), quality
    return value, quality


def _block(
    device: str, timestamp: float, values: dict[str, Value | None], qualities: dict[str, str]
) -> dict[str, object]:
    """One telemetry block (``schemas/uplink/telemetry.schema.json``)."""
    block: dict[str, object] = {"device": device, "ts": round(timestamp, 3), "values": values}
    if qualities:
        block["quality"] = qualities
    return block


def _same_kind(a: object, b: object) -> bool:
    """Equal values of different types are the same reading (2 and 2.0), except that a
    boolean is never the same reading as a number (True and 1)."""
    return isinstance(a, bool) == isinstance(b, bool)


def _within(value: Value | None, last: Value | None, band: float) -> bool:
    """``value`` moved no more than ``band`` from ``last`` (numbers only; bools never)."""
    if (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and isinstance(last, int | float)
        and not isinstance(last, bool)
    ):
        return abs(value - last) <= band
    return False


class TelemetryReporter(Lifecycle):
    """The daemon calls ``start()`` once and runs ``run()`` as one of its tasks; ``async
    with`` does both, and every close flushes what is still queued, before anything can
    be cancelled, so no change is lost to a stop."""

    def __init__(
        self,
        config: TelemetryConfig,
        table: PointTable,
        outbox: Outbox,
        *,
        meta_hash: str,
        notify: Callable[[], None] = lambda: None,
        wall: Callable[[], float] = time.time,
        counters: CounterWatch | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.table = table
        self.outbox = outbox
        self._notify = notify
        self._wall = wall
        self._sent: dict[tuple[str, str], tuple[Value | None, Quality]] = {}
        self._queued: list[dict[str, object]] = []  # blocks, see the module docstring
        self._queued_values = 0
        self._bands: dict[tuple[str, str], float] = {}
        self._meta_hash = meta_hash
        self._rounding: Rounding = {}
        self.counters = counters
        self._counter_points = counters.points if counters is not None else frozenset()
        self.records = 0
        self.values = 0
        self.suppressed = 0
        self.append_failures = 0
        self.integrity_reports = 0

    async def _start(self) -> None:
        self.start()
        self.spawn(self.run(), name="telemetry")

    def _release(self) -> None:
        self.flush()

    def start(self) -> None:
        """Register the listener (once); ``run`` does the periodic work. The points are
        registered by then, and with them the resolutions telemetry rounds to."""
        self._rounding = {
            (device, point): rounder(meta.resolution)
            for device, point, _, meta in self.table.described()
            if meta is not None and meta.resolution is not None
        }
        self.table.listen_blocks(self.on_block)

    def deadband(self, device: str, point: str) -> float:
        key = (device, point)
        band = self._bands.get(key)
        if band is None:
            name = f"{device}.{point}"
            band = next(
                (
                    b
                    for pattern, b in self.config.deadbands.items()
                    if fnmatch.fnmatchcase(name, pattern)
                ),
                0.0,
            )
            self._bands[key] = band
        return band

    def on_block(
        self,
        device: str,
        readings: Sequence[tuple[str, Value | None, Quality]],
        timestamp: float,
    ) -> None:
        # Every reading of every point passes here (2,500 a second on a busy gateway): the
        # common cases, unchanged or changed without a deadband, take no function call.
        sent = self._sent
        bands = self._bands
        rounding = self._rounding
        values: dict[str, Value | None] = {}
        qualities: dict[str, str] = {}
        good = Quality.GOOD
        counter_points = self._counter_points
        suppressed = 0
        for point, reading, quality in readings:
            key = (device, point)
            value = reading
            if value.__class__ is float:
                if not math.isfinite(value):
                    value, quality = None, Quality.BAD
                elif (step := rounding.get(key)) is not None:
                    value = round_to(value, *step)
            last = sent.get(key)
            if last is not None and last[1] is quality:
                last_value = last[0]
                if value == last_value and (
                    value.__class__ is last_value.__class__ or _same_kind(value, last_value)
                ):
                    suppressed += 1
                    continue
                band = bands.get(key)
                if band is None:
                    band = self.deadband(device, point)
                if band > 0 and _within(value, last_value, band):
                    suppressed += 1
                    continue
            if key in counter_points and self.counters is not None:
                self.counters.check(device, point, value, timestamp)
            sent[key] = (value, quality)
            values[point] = value
            if quality is not good:
                qualities[point] = quality.value
        self.suppressed += suppressed
        if values:
            self._queue_block(device, timestamp, values, qualities)

    def _queue_block(
        self,
        device: str,
        timestamp: float,
        values: dict[str, Value | None],
        qualities: dict[str, str],
    ) -> None:
        queued = self._queued
        last = queued[-1] if queued else None
        if last is not None and last["device"] == device and last["ts"] == round(timestamp, 3):
            merged = last["values"]
            assert isinstance(merged, dict)
            if merged.keys().isdisjoint(values):
                merged.update(values)
                if qualities:
                    known = last.setdefault("quality", {})
                    assert isinstance(known, dict)
                    known.update(qualities)
                self._queued_values += len(values)
                if self._queued_values >= MAX_VALUES_PER_RECORD:
                    self.flush()
                return
        queued.append(_block(device, timestamp, values, qualities))
        self._queued_values += len(values)
        if self._queued_values >= MAX_VALUES_PER_RECORD:
            self.flush()

    async def run(self) -> None:
        period = self.config.integrity_period_s
        next_integrity = time.monotonic() + period
        while True:
            await asyncio.sleep(self.config.flush_interval_s)
            self.flush()
            if time.monotonic() >= next_integrity:
                next_integrity += period
                self.integrity()

    def flush(self) -> None:
        """Append the queued changes as one record."""
        if not self._queued:
            return
        blocks, self._queued = self._queued, []
        count, self._queued_values = self._queued_values, 0
        self._append("change", blocks, count)
        if self.counters is not None:
            self.counters.save_if_due()

    def integrity(self) -> None:
        self.flush()  # the changes before the snapshot go first, in order
        groups: dict[tuple[str, float], tuple[dict[str, Value | None], dict[str, str]]] = {}
        for sample in self.table.snapshot():
            if sample.timestamp is None or sample.restored:
                continue
            key = (sample.device, sample.point)
            clean, quality = _clean(sample.value, sample.quality, self._rounding.get(key))
            if key in self._counter_points and self.counters is not None:
                self.counters.check(sample.device, sample.point, clean, sample.timestamp)
            values, qualities = groups.setdefault((sample.device, sample.timestamp), ({}, {}))
            values[sample.point] = clean
            if quality is not Quality.GOOD:
                qualities[sample.point] = quality.value
            self._sent[key] = (clean, quality)
        blocks: list[dict[str, object]] = []
        count = 0
        for (device, timestamp), (values, qualities) in groups.items():
            blocks.append(_block(device, timestamp, values, qualities))
            count += len(values)
            if count >= MAX_VALUES_PER_RECORD:
                self._append("integrity", blocks, count)
                blocks, count = [], 0
        if blocks or not groups:
            self._append("integrity", blocks, count)
        self.integrity_reports += 1

    def _append(self, kind: str, blocks: list[dict[str, object]], count: int) -> None:
        try:
            record = {"kind": kind, "blocks": blocks, "meta": self._meta_hash}
            self.outbox.append(STREAM, record, priority=Priority.LOW)
        except OutboxError:
            self.append_failures += 1  # the outbox logs the first failure itself
        else:
            self.records += 1
            self.values += count
        self._notify()

    def status(self) -> dict[str, object]:
        return {
            "records": self.records,
            "values": self.values,
            "suppressed_by_deadband": self.suppressed,
            "integrity_reports": self.integrity_reports,
            "append_failures": self.append_failures,
            "queued": self._queued_values,
            "counters": self.counters.status() if self.counters is not None else None,
        }
