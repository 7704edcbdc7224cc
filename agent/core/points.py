"""The point table: the latest value of every point of every device, with its quality.

Drivers never talk to the uplink or the CLI; they write here, and everything else reads a
snapshot. Quality is explicit so that a dead device's last value is never shown as good, and a point
never read is ``unknown`` rather than ``bad``: nothing failed yet, the device was not asked.

A value is only ever handed on with the time it was acquired. A value brought back from
before a restart is marked ``restored`` until the device is read again, so the uplink can
leave it out (it was published, or not, by the life that read it); and a quality change
without a reading (``mark_bad``) reaches the block listeners as ``None``, never as the old
value with the time of the change.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum

from smartpole.agent.core.point_meta import PointMeta
from smartpole.drivers.schema import Value


class Quality(StrEnum):
    GOOD = "good"  # a fresh reading within the device's valid range
    UNCERTAIN = "uncertain"  # read fine but outside the range the manual says is possible
    STALE = "stale"  # not refreshed for several poll periods
    BAD = "bad"  # the device stopped answering, or its value is no reading (NaN, refused)
    # never read since the start (nor restored): nothing to show, nothing sent upstream. The
    # quality of no reading: never passed to ``update``, never heard by a listener.
    UNKNOWN = "unknown"


Listener = Callable[[str, str, "Value | None", "Quality", float], None]
# One device's readings acquired together: (device, [(point, value, quality)], timestamp).
BlockListener = Callable[[str, "Sequence[tuple[str, Value | None, Quality]]", float], None]


@dataclass(slots=True)
class _Entry:
    device: str
    point: str
    unit: str
    stale_after_s: float
    meta: PointMeta | None = None
    value: Value | None = None
    quality: Quality = Quality.UNKNOWN
    read_at: float | None = None  # wall clock, for people and the uplink
    read_mono: float | None = None  # monotonic, for ages that survive clock steps
    restored: bool = False  # saved before a restart and not read again since
    reason: str | None = None  # why there is no good reading (``mark_bad``): for people
    own_reason: bool = False  # the reason is the point's own (``mark_point_bad``)


@dataclass(frozen=True)
class PointSample:
    device: str
    point: str
    value: Value | None
    unit: str
    quality: Quality
    timestamp: float | None
    age_s: float | None
    restored: bool = False  # from before a restart, not read again since
    # why the point has no good reading, when the bus knows: the device refused it, refuses
    # every read, does not answer, answers garbage. For ``diag points``; the quality
    # (the platform's contract) stays what it is.
    reason: str | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "device": self.device,
            "point": self.point,
            "value": self.value,
            "unit": self.unit,
            "quality": self.quality.value,
            "timestamp": self.timestamp,
            "age_s": None if self.age_s is None else round(self.age_s, 3),
            "restored": self.restored,
            "reason": self.reason,
        }


class PointTable:
    """Owned by the control process' event loop; no locking, one writer per device."""

    def __init__(
        self,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._entries: dict[tuple[str, str], _Entry] = {}
        self._monotonic = monotonic
        self._wall = wall
        self._listeners: list[Listener] = []
        self._block_listeners: list[BlockListener] = []

    def listen(self, listener: Listener) -> None:
        """Call ``listener`` synchronously with every new reading, as the bus task stores it:
        safety logic must see a leakage reading in the same loop iteration, not a poll later."""
        self._listeners.append(listener)

    def listen_blocks(self, listener: BlockListener) -> None:
        """Like ``listen``, but one call per block of readings (a single reading is a block
        of one). For listeners that see every value of every point: a busy gateway stores
        2,500 values a second, and one call per 50 costs far less than one per value.

        The timestamp is the acquisition time of the values in the block. A quality change
        that is no reading (``mark_bad``) comes with the values ``None`` at the time of the
        change: the last value was acquired earlier and must not travel with a later time."""
        self._block_listeners.append(listener)

    def register(
        self,
        device: str,
        point: str,
        unit: str,
        stale_after_s: float,
        meta: PointMeta | None = None,
    ) -> None:
        """``meta`` describes the point upstream (the retained ``meta`` topic); every bus
        gives it, a point registered without it is published with its unit alone."""
        self._entries[(device, point)] = _Entry(device, point, unit, stale_after_s, meta)

    def described(self) -> Iterator[tuple[str, str, str, PointMeta | None]]:
        """Every registered point as ``(device, point, unit, meta)``, in registration order."""
        for entry in self._entries.values():
            yield entry.device, entry.point, entry.unit, entry.meta

    def update(self, device: str, point: str, value: Value, quality: Quality) -> None:
        entry = self._entries[(device, point)]
        entry.value = value
        entry.quality = quality
        entry.read_at = self._wall()
        entry.read_mono = self._monotonic()
        entry.restored = False
        entry.reason = None
        entry.own_reason = False
        for listener in self._listeners:
            listener(device, point, value, quality, entry.read_at)
        for block_listener in self._block_listeners:
            block_listener(device, ((point, value, quality),), entry.read_at)

    def update_many(self, device: str, readings: Sequence[tuple[str, Value, Quality]]) -> None:
        """Store the values of one block read: ``(point, value, quality)`` in order.

        They were acquired together, so they share one timestamp, and the clocks are read
        once per block instead of once per value. Each listener still hears of every value,
        point by point in the given order, exactly as ``update`` would call it.
        """
        wall = self._wall()
        mono = self._monotonic()
        entries = self._entries
        listeners = self._listeners
        for point, value, quality in readings:
            entry = entries[(device, point)]
            entry.value = value
            entry.quality = quality
            entry.read_at = wall
            entry.read_mono = mono
            entry.restored = False
            entry.reason = None
            entry.own_reason = False
            for listener in listeners:
                listener(device, point, value, quality, wall)
        for block_listener in self._block_listeners:
            block_listener(device, readings, wall)

    def mark_bad(self, device: str, reason: str | None = None) -> None:
        """The device stopped answering: keep the last value for reference, but as bad.

        Per-point listeners (safety, lamp monitor, OPC UA status) get the last value with
        quality bad; block listeners (the uplink) get ``None``: no reading happened now.
        A point never read stays ``unknown``: it had no value to lose, and the uplink never
        heard of it. ``reason`` (every point of the device gets it, read or not) tells a
        technician why: no answer, garbage, exceptions to every read."""
        now = self._wall()
        block: list[tuple[str, Value | None, Quality]] = []
        for entry in self._entries.values():
            if entry.device != device:
                continue
            if not entry.own_reason:  # a point's own (refused, undecodable) says more
                entry.reason = reason
            if entry.read_at is not None:
                entry.quality = Quality.BAD
                for listener in self._listeners:
                    listener(device, entry.point, entry.value, Quality.BAD, now)
                block.append((entry.point, None, Quality.BAD))
        if block:
            for block_listener in self._block_listeners:
                block_listener(device, block, now)

    def mark_point_bad(self, device: str, point: str, reason: str | None = None) -> None:
        """One value could not be decoded or the device does not have it (``reason``)."""
        entry = self._entries.get((device, point))
        if entry is not None:
            entry.quality = Quality.BAD
            entry.reason = reason
            entry.own_reason = reason is not None

    def restore(self, device: str, point: str, value: Value, timestamp: float) -> None:
        """Bring back a value saved before a restart; it can only ever be stale, and it stays
        ``restored`` (with its own acquisition time) until the device is read again."""
        entry = self._entries.get((device, point))
        if entry is None or entry.read_at is not None:
            return
        entry.value = value
        entry.quality = Quality.STALE
        entry.restored = True
        entry.read_at = timestamp
        entry.read_mono = self._monotonic() - max(0.0, self._wall() - timestamp)

    def sample(self, device: str, point: str) -> PointSample | None:
        """One point's current sample, without building the whole table's snapshot."""
        entry = self._entries.get((device, point))
        return None if entry is None else self._sample(entry, self._monotonic())

    def snapshot(self) -> list[PointSample]:
        now = self._monotonic()
        return [self._sample(entry, now) for entry in self._entries.values()]

    def iter_snapshot(self) -> Iterator[PointSample]:
        """``snapshot`` made lazily, for a caller that hands the loop back between slices
        of a big table: the points are those registered now, each read when it is reached."""
        for entry in list(self._entries.values()):
            yield self._sample(entry, self._monotonic())

    def _sample(self, entry: _Entry, now: float) -> PointSample:
        age = None if entry.read_mono is None else max(0.0, now - entry.read_mono)
        quality = entry.quality
        fresh = age is not None and age <= entry.stale_after_s
        if quality in (Quality.GOOD, Quality.UNCERTAIN) and not fresh:
            quality = Quality.STALE
        return PointSample(
            entry.device,
            entry.point,
            entry.value,
            entry.unit,
            quality,
            entry.read_at,
            age,
            entry.restored,
            entry.reason,
        )

    def devices(self) -> Iterable[str]:
        return dict.fromkeys(entry.device for entry in self._entries.values())
