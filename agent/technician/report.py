"""What a scan shows a technician: the progress bar while it runs, the table after it.

Kept apart from the scan itself so the scan only finds and records; the words and the
layout a technician reads are all here (``--json`` is the result's own ``as_json``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final, TextIO

from smartpole.agent.technician.options import BAUDRATES, DEFAULT_QUIET_S

if TYPE_CHECKING:
    from smartpole.agent.technician.scan import ScanResult


class Progress:
    """A one-line progress bar on a terminal; nothing at all when not on one."""

    WIDTH: Final = 28

    def __init__(self, stream: TextIO, total: int) -> None:
        self._stream = stream
        self._enabled = stream.isatty()
        self._total = max(total, 1)
        self._done = 0
        self._started = time.monotonic()
        self._drawn = 0.0

    def step(self, baud: int, unit: int, found: int) -> None:
        self._done += 1
        now = time.monotonic()
        if not self._enabled or (now - self._drawn < 0.05 and self._done < self._total):
            return
        self._drawn = now
        filled = self.WIDTH * self._done // self._total
        bar = "#" * filled + "." * (self.WIDTH - filled)
        self._stream.write(
            f"\r\x1b[K{baud:>6} baud  unit {unit:>3}  [{bar}] {100 * self._done // self._total:3d}%"
            f"  {found} found  {now - self._started:5.1f} s"
        )
        self._stream.flush()

    def baud_done(self, baud: int, found: int) -> None:
        """Off a terminal (a log, a pipe), one line per baud rate is the progress shown."""
        if self._enabled:
            return
        now = time.monotonic() - self._started
        self._stream.write(f"{baud} baud done: {found} found, {now:.1f} s so far\n")
        self._stream.flush()

    def close(self) -> None:
        if self._enabled and self._drawn:
            self._stream.write("\r\x1b[K")
            self._stream.flush()


def render_estimate(port: str, bauds: Sequence[int], units: Sequence[int], seconds: float) -> str:
    """The line shown before a scan starts, so a technician knows what he is waiting for."""
    rates = ", ".join(map(str, bauds))
    return f"scanning {port}: units {unit_ranges(units)} at {rates} baud, about {_span(seconds)}"


def _span(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min"


def render_scan(result: ScanResult, model: str) -> str:
    lines: list[str] = []
    lines += [probe.describe(model) for probe in result.probes]
    if result.found:
        lines.append(f"{'UNIT':>4}  {'BAUD':>6}  ANSWER")
        lines += [f"{f.unit:>4}  {f.baud:>6}  {f.answer()}" for f in result.found]
    for baud, units in result.noisy.items():
        lines.append(
            f"garbled answers at {baud} baud (units {unit_ranges(units)}): another device "
            "at a different baud rate or parity, two devices on one address, or bad wiring"
        )
    where = (
        f"{result.port}, units {unit_ranges(result.units)} at "
        f"{', '.join(map(str, result.bauds))} baud, timeout {result.timeout_s:g} s, "
        f"quiet {result.quiet_s:g} s"
    )
    count = len(result.found)
    if count:
        lines.append(
            f"{count} device{'s' if count != 1 else ''} found on {where}: "
            f"{result.requests} requests in {result.elapsed_s:.1f} s"
        )
    else:
        lines.append(
            f"no device answered on {where}: {result.requests} requests in "
            f"{result.elapsed_s:.1f} s. {_hints(result)}"
        )
    return "\n".join(lines)


def _hints(result: ScanResult) -> str:
    """What can make a silent bus answer, most likely first; each says what to change."""
    hints = []
    if result.quiet_s < DEFAULT_QUIET_S:
        hints.append(
            f"--quiet {result.quiet_s:g} is shorter than devices that listen to the line "
            f"(libmodbus ones too) need: scan again without it (default {DEFAULT_QUIET_S:g})"
        )
    hints += [
        "Check the A/B wires (swap them if unsure) and the termination",
        "the parity and stop bits (--parity E is common on meters, --stopbits 2)",
        f"the baud rates (--bauds; {', '.join(map(str, BAUDRATES))} are possible)",
        f"a device slower than {max(result.timeout_s, result.quiet_s):g} s needs --timeout 1",
        "one that ignores FC 03 at register 0 needs --thorough or --profile",
    ]
    return "; ".join(hints) + "."


def unit_ranges(units: Sequence[int]) -> str:
    """``1-20,200`` for a sorted list of unit ids."""
    parts: list[str] = []
    ordered = sorted(set(units))
    start = prev = ordered[0] if ordered else 0
    for unit in [*ordered[1:], None]:
        if unit is not None and unit == prev + 1:
            prev = unit
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if unit is not None:
            start = prev = unit
    return ",".join(parts) if ordered else ""
