"""Waiting for things in tests: poll for a condition with a generous deadline, never sleep a fixed time."""

from __future__ import annotations

import asyncio
from typing import Callable

WAIT = 60.0  # generous: the machine is small and shared


async def wait_until(predicate: Callable[[], object], timeout: float = WAIT, what: str = "condition") -> None:
    """Poll ``predicate`` until it is truthy; fail naming ``what`` after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.02)
