"""Cancellation that Python 3.11's ``asyncio.wait_for`` can lose, put back.

On Python 3.11 (Debian bookworm's), ``asyncio.wait_for`` returns the awaited result instead
of raising when its task is cancelled in the same loop turn as the result arrives (CPython
gh-86296, fixed in 3.12). A polling loop that lost its cancellation polls on, and the
daemon's shutdown waits for it until systemd kills it: the last point values and queued
telemetry are then not saved. Our own code uses ``asyncio.timeout`` instead (ruff bans
``wait_for``, see pyproject.toml); after awaiting a library that still uses it (pymodbus
does, for every request), :func:`raise_if_cancelled` raises the cancellation it lost.
"""

from __future__ import annotations

import asyncio


def raise_if_cancelled() -> None:
    """Raise CancelledError if the current task was asked to stop and nothing raised it."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
