"""One direction of the emulated MCU's UART: wire timing and injected faults.

A pseudo-terminal moves bytes instantly; a 115200-baud UART does not. A :class:`WireLine`
holds each frame for the time its bytes occupy the line (``smartpole.drivers.line``), one
frame after the other, and only then hands it on, so a round trip over the emulator costs
what it would on copper. On the way it applies the :class:`Faults` in force: a frame
dropped (noise ate it: it still took its wire time), a byte flipped, random bytes in front
of it. All randomness comes from the emulator's seeded generator.
"""

from __future__ import annotations

import asyncio
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from smartpole.drivers.line import wire_time_s

Direction = Literal["both", "to_mcu", "to_host"]


@dataclass(frozen=True)
class Faults:
    """Misbehaviour of the emulated MCU and its line, changeable at any time.

    ``drop``, ``corrupt`` and ``garbage`` are probabilities per frame, in both directions:
    the frame vanishes, one of its bytes is XORed with a random non-zero value, or 1..8
    random bytes precede it. ``delay_s`` is extra time before the MCU transmits anything.
    ``silent``: the MCU neither hears nor answers the host (its own logic keeps running,
    so its heartbeat watch still trips the fallback), like a broken UART. ``direction``
    limits the per-frame faults to one direction (``"to_mcu"`` or ``"to_host"``).
    """

    drop: float = 0.0
    corrupt: float = 0.0
    garbage: float = 0.0
    delay_s: float = 0.0
    silent: bool = False
    direction: Direction = "both"

    def __post_init__(self) -> None:
        if self.direction not in ("both", "to_mcu", "to_host"):
            raise ValueError(f"direction must be both, to_mcu or to_host, not {self.direction!r}")
        for name in ("drop", "corrupt", "garbage"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} is a probability 0..1, got {value}")
        if self.delay_s < 0:
            raise ValueError(f"delay_s must be >= 0, got {self.delay_s}")


@dataclass
class LineStats:
    """What one direction of the line carried and spoiled."""

    frames: int = 0
    dropped: int = 0
    corrupted: int = 0
    garbage_bytes: int = 0
    cut_frames: int = 0


@dataclass
class _OnWire:
    start: float
    end: float
    data: bytes
    handle: asyncio.TimerHandle


class WireLine:
    """Delivers frames to ``deliver`` after their wire time, in order, with faults."""

    def __init__(
        self,
        direction: Direction,
        baudrate: int,
        rng: random.Random,
        deliver: Callable[[bytes], None],
        faults: Callable[[], Faults],
    ) -> None:
        self.direction = direction
        self.baudrate = baudrate
        self.stats = LineStats()
        self._rng = rng
        self._deliver = deliver
        self._faults = faults
        self._free_at = 0.0
        self._on_wire: deque[_OnWire] = deque()

    def send_frame(self, frame: bytes, *, not_before: float = 0.0) -> None:
        """Put a whole frame on the line (after whatever is on it, and not before
        ``not_before``); faults apply here."""
        faults = self._faults()
        rng = self._rng
        self.stats.frames += 1
        data = bytearray(frame)
        if faults.direction not in ("both", self.direction):
            self._schedule(bytes(data), not_before, deliver=True)
            return
        if faults.drop and rng.random() < faults.drop:
            self.stats.dropped += 1
            self._schedule(bytes(data), not_before, deliver=False)  # it took its wire time
            return
        if faults.corrupt and rng.random() < faults.corrupt:
            data[rng.randrange(len(data))] ^= rng.randrange(1, 256)
            self.stats.corrupted += 1
        if faults.garbage and rng.random() < faults.garbage:
            junk = rng.randbytes(rng.randint(1, 8))
            self.stats.garbage_bytes += len(junk)
            data[:0] = junk
        self._schedule(bytes(data), not_before, deliver=True)

    def send_raw(self, data: bytes, *, not_before: float = 0.0) -> None:
        """Bytes that are not a whole frame (a partial frame, line noise): no faults."""
        if data:
            self._schedule(data, not_before, deliver=True)

    def _schedule(self, data: bytes, not_before: float, *, deliver: bool) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        start = max(now, not_before, self._free_at)
        end = start + wire_time_s(len(data), self.baudrate)
        self._free_at = end
        entry: _OnWire | None = None

        def arrive() -> None:
            if entry is not None and self._on_wire and self._on_wire[0] is entry:
                self._on_wire.popleft()
            if deliver:
                self._deliver(data)

        handle = loop.call_at(end, arrive)
        entry = _OnWire(start, end, data, handle)
        self._on_wire.append(entry)

    def cut(self) -> bytes | None:
        """The sender stops mid-transmission (it reset): every frame not yet complete is
        cancelled; the part of the one being transmitted that already left is returned
        (at least one byte, never all of it), or None if the line was idle."""
        now = asyncio.get_running_loop().time()
        partial: bytes | None = None
        while self._on_wire:
            entry = self._on_wire.popleft()
            entry.handle.cancel()
            if entry.start <= now < entry.end and partial is None:
                sent = int(len(entry.data) * (now - entry.start) / (entry.end - entry.start))
                partial = entry.data[: min(max(sent, 1), len(entry.data) - 1)]
        self._free_at = now
        if partial is not None:
            self.stats.cut_frames += 1
        return partial

    def close(self) -> None:
        while self._on_wire:
            self._on_wire.popleft().handle.cancel()
