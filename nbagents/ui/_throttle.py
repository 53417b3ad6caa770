"""Coalesce a burst of job events into at most one view update per interval, on the kernel's loop.

Job events arrive at up to a few hundred a second (audio statistics, logs); sending a widget message
for each would flood the frontend. Views mark what changed; a single timer flushes the marks.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Callable

__all__ = ["Coalescer"]


class Coalescer:
    """Collects dirty section names and calls ``flush(sections)`` at most once every ``interval`` seconds."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None, interval: float, flush: Callable[[set[str]], None]) -> None:
        self._loop = loop
        self._loop_thread: int | None = None
        self.interval = interval
        self._flush = flush
        self._dirty: set[str] = set()
        self._lock = threading.Lock()
        self._scheduled = False
        self._last = 0.0
        self.flushes = 0
        if loop is not None:
            loop.call_soon_threadsafe(self._remember_thread)

    def _remember_thread(self) -> None:
        self._loop_thread = threading.get_ident()

    def mark(self, *sections: str) -> None:
        """Note that ``sections`` changed (any thread); a flush follows within ``interval``."""
        with self._lock:
            self._dirty.update(sections)
            if self._scheduled:
                return
            self._scheduled = True
        delay = max(0.0, self._last + self.interval - time.monotonic())
        if self._loop is None or self._loop.is_closed():
            self._run()
        elif threading.get_ident() == self._loop_thread:
            self._loop.call_later(delay, self._run)
        else:
            self._loop.call_soon_threadsafe(self._loop.call_later, delay, self._run)

    def flush_now(self) -> None:
        """Flush whatever is pending at once (on the calling thread)."""
        self._run()

    def _run(self) -> None:
        with self._lock:
            dirty, self._dirty = self._dirty, set()
            self._scheduled = False
        self._last = time.monotonic()
        if dirty:
            self.flushes += 1
            self._flush(dirty)
