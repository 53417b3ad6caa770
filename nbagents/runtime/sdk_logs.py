"""Log records of the livekit SDK that describe normal operation, kept out of a job's warnings and errors.

- Signaling falls back from ``/rtc/v1`` to ``/rtc`` on servers that answer the first with 404 (the
  embedded server, livekit-server before v1 signaling): the SDK warns twice on every connect, but the
  fallback is the protocol working as designed. Those records become INFO.
- When a room closes (the server ends it, the job disconnects), the SDK may report "publisher data
  channel … closed unexpectedly" as an ERROR, depending on which of the peer connection and the leave
  message it notices first. Such a record is held for :data:`HOLD_SECONDS`: if the room closed in the
  meantime it becomes INFO, otherwise it is logged as the error it is.

Matching is on the SDK's message text, which may change between versions: a record that no longer
matches is simply logged at its own level.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable

__all__ = ["SdkLogFilter", "install"]

HOLD_SECONDS = 2.0
_CLOSE_MARKERS = ("publisher data channel", "closed unexpectedly")


class SdkLogFilter(logging.Filter):
    """A filter for the ``livekit`` logger; ``closing()`` says whether the room is closing or closed."""

    def __init__(self, closing: Callable[[], bool]) -> None:
        super().__init__("livekit")
        self._closing = closing
        self._held: list[tuple[logging.Logger, logging.LogRecord]] = []
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_nbagents_checked", False):
            return True
        message = record.getMessage()
        if record.levelno >= logging.WARNING and "v1 path" in message and ("404" in message or "falling back" in message):
            _demote(record)
            return True
        if record.levelno >= logging.ERROR and all(m in message for m in _CLOSE_MARKERS):
            if self._closing():
                _demote(record)
                return True
            with self._lock:
                self._held.append((logging.getLogger(record.name), record))
            timer = threading.Timer(HOLD_SECONDS, self._release, args=(record,))
            timer.daemon = True
            timer.start()
            return False
        return True

    def _release(self, record: logging.LogRecord) -> None:
        with self._lock:
            held = [(lg, r) for lg, r in self._held if r is record]
            self._held = [(lg, r) for lg, r in self._held if r is not record]
        for logger, held_record in held:
            if self._closing():
                _demote(held_record)
            held_record._nbagents_checked = True  # type: ignore[attr-defined]
            logger.handle(held_record)

    def flush(self) -> None:
        """Log every held record now (the job is ending: they belong to its normal close)."""
        with self._lock:
            held, self._held = self._held, []
        for logger, record in held:
            if self._closing():
                _demote(record)
            record._nbagents_checked = True  # type: ignore[attr-defined]
            logger.handle(record)


def _demote(record: logging.LogRecord) -> None:
    record.levelno, record.levelname = logging.INFO, "INFO"


def install(closing: Callable[[], bool]) -> SdkLogFilter:
    """Attach a filter to the ``livekit`` logger (records of its children are not affected)."""
    logger = logging.getLogger("livekit")
    for existing in [f for f in logger.filters if isinstance(f, SdkLogFilter)]:
        logger.removeFilter(existing)
    sdk_filter = SdkLogFilter(closing)
    logger.addFilter(sdk_filter)
    return sdk_filter
