"""Waiting for an observable condition instead of sleeping for a guessed time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "") -> Any:
    """Poll an observable condition until it holds; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")
        time.sleep(0.02)


async def eventually(predicate: Callable[[], Any], limit_s: float = 10.0, what: str = "") -> Any:
    """``wait_until`` for asyncio tests: polls without blocking the loop under test."""
    deadline = time.monotonic() + limit_s
    while not (result := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {limit_s} s waiting for {what or predicate}")
        await asyncio.sleep(0.02)
    return result
