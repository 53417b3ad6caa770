"""The kernel's LiveKit server: started on first use, shared by every job, stopped at exit.

Which server: ``nbagents.engines.select_engine()`` decides (``NBAGENTS_ENGINE``; else ``LIVEKIT_URL``
set -> that server; else livekit-server on PATH; else the embedded one), and the choice is printed once. The engine starts in a background thread so that ``launch()`` never waits for it: the job
process receives the credentials when they are ready, and ``ctx.connect()`` waits for them.
"""

from __future__ import annotations

import atexit
import sys
import threading
import traceback
from typing import Any, Callable

from nbagents.engines.base import Credentials

__all__ = ["EngineSession", "shared_engine"]

Listener = Callable[[Credentials | None, str | None], None]


class EngineSession:
    """One engine for the whole kernel; listeners get ``(credentials, None)`` or ``(None, error)``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._engine: Any = None
        self._credentials: Credentials | None = None
        self._error: str | None = None
        self._started = False
        self._listeners: list[Listener] = []
        self.description: str | None = None  # the engine line printed for the user once it started

    @property
    def credentials(self) -> Credentials | None:
        return self._credentials

    def use(self, credentials: Credentials) -> None:
        """Run jobs launched from now on against this already running server (tests, benchmarks)."""
        with self._lock:
            self._started = True
            self._credentials, self._error = Credentials(*credentials), None
            listeners, self._listeners = self._listeners, []
        for listener in listeners:
            listener(self._credentials, None)

    def start(self) -> None:
        """Start the engine in the background (once)."""
        with self._lock:
            if self._started:
                return
            self._started = True
        threading.Thread(target=self._start, name="nbagents-engine", daemon=True).start()

    def when_ready(self, listener: Listener) -> None:
        """Call ``listener`` once the engine is up (at once, on this thread, if it already is)."""
        with self._lock:
            if self._credentials is None and self._error is None:
                self._listeners.append(listener)
                return
        listener(self._credentials, self._error)

    def wait(self, timeout: float | None = None) -> Credentials:
        """Block until the engine is up (for synchronous callers such as tests and the CLI)."""
        self.start()
        done = threading.Event()
        self.when_ready(lambda *_: done.set())
        if not done.wait(timeout):
            raise TimeoutError(f"the LiveKit engine did not start within {timeout} s")
        if self._error is not None:
            raise RuntimeError(self._error)
        assert self._credentials is not None
        return self._credentials

    def _start(self) -> None:
        credentials: Credentials | None = None
        error: str | None = None
        try:
            from nbagents.engines import describe_engine, select_engine

            engine = select_engine()
            credentials = engine.start()
            self._engine = engine
            self.description = describe_engine(engine)
            atexit.register(self.stop)
            print(self.description, file=sys.stderr, flush=True)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            if not str(exc):
                error += "\n" + traceback.format_exc()
        with self._lock:
            self._credentials, self._error = credentials, error
            listeners, self._listeners = self._listeners, []
        for listener in listeners:
            listener(credentials, error)

    def stop(self) -> None:
        engine, self._engine = self._engine, None
        if engine is not None:
            engine.stop()


_shared: EngineSession | None = None
_shared_lock = threading.Lock()


def shared_engine() -> EngineSession:
    """The kernel's engine session."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = EngineSession()
        return _shared
