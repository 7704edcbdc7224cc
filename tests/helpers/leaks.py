"""Catching asyncio tasks that a test left pending.

Every coroutine a test runs goes through an ``asyncio.Runner``: pytest-asyncio keeps one per
loop scope, and ``asyncio.run`` makes one per call. Closing a runner cancels whatever is
still pending without a word and then closes the loop, which hides a server, a reader or a
retry loop that nobody stopped. ``PendingTasks`` wraps ``Runner.close`` to note those tasks
on the loop they ran on, before they are cancelled and before the loop is gone; a fixture
then fails the test that left them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

import pytest


class PendingTasks:
    """The tasks found pending when a runner closed, since the last ``take()``."""

    def __init__(self) -> None:
        self._found: list[str] = []

    @contextmanager
    def watching(self) -> Iterator[None]:
        """Note pending tasks at every ``asyncio.Runner.close`` while in this block."""
        original = asyncio.Runner.close

        def close(runner: asyncio.Runner) -> None:
            try:
                loop = runner.get_loop()
            except RuntimeError:  # closed already, so nothing can be pending on it
                loop = None
            if loop is not None and not loop.is_closed():
                self._found.extend(repr(task) for task in asyncio.all_tasks(loop))
            original(runner)

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(asyncio.Runner, "close", close)
            yield

    def take(self) -> list[str]:
        """What was found since the last call, and forget it."""
        found, self._found = self._found, []
        return found
