"""The kernel's LiveKit server: started on first use, shared by every job, stopped at exit.

Which server: ``nbagents.engines.select_engine()`` decides (``NBAGENTS_ENGINE``; else ``LIVEKIT_URL``
set -> that server; else livekit-server on PATH; else the embedded one), and the choice is printed once. The
engine starts in a background thread so that ``launch()`` never waits for it: the job process receives the
credentials when they are ready, and ``ctx.connect()`` waits for them.

A dead engine is noticed at the next use (``start()``, which ``launch()``, ``nbagents.sim.join`` and
``%agent serve`` call):

- a server nbagents runs (embedded, livekit-server) that has died is started again, with the same API key
  and secret and, when it is free, the same port; one line on stderr says so;
- a server nbagents does not run (``remote``: ``LIVEKIT_URL``) is checked again with a TCP connect before
  the new job gets its credentials; if it cannot be reached the job fails with an error that says so and
  what to do (``ctx.connect()`` raises it), and the next use checks again;
- an engine that failed to start is tried again.

The engine chosen from the environment stays the kernel's engine: when ``NBAGENTS_ENGINE`` or a
``LIVEKIT_*`` variable changes afterwards, the next use says in one line that jobs keep using it (restart
the kernel to switch).
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
import traceback
from typing import Any, Callable, TextIO

from nbagents.engines.base import Credentials

__all__ = ["EngineSession", "shared_engine"]

Listener = Callable[[Credentials | None, str | None], None]


def print_now(line: str, stream: TextIO) -> None:
    print(line, file=stream, flush=True)


#: how the session's lines (the engine line, notices) are printed from its background thread; in a notebook,
#: ``%load_ext nbagents`` replaces it so that a line that comes between cells shows in the next one
#: (nbagents._cell_output)
print_line: Callable[[str, TextIO], None] = print_now

#: the environment select_engine() reads
SELECTION_VARIABLES = ("NBAGENTS_ENGINE", "LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET")


class EngineSession:
    """One engine for the whole kernel; listeners get ``(credentials, None)`` or ``(None, error)``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._engine: Any = None
        self._credentials: Credentials | None = None
        self._error: str | None = None
        self._started = False
        self._busy = False  # a start, restart or check runs in the background
        self._given: Any = None  # an engine object given with use_engine(), started by the session
        self._listeners: list[Listener] = []
        self._atexit = False
        self._retired: list[Any] = []  # engines this session started and no longer uses
        self.description: str | None = None  # the engine line printed for the user once it started
        self.notices: list[str] = []  # the one-line notices printed when the engine was found dead or unreachable
        self._chosen_with: tuple[str, ...] | None = None  # SELECTION_VARIABLES when select_engine() chose
        self._noted_with: tuple[str, ...] | None = None  # the changed environment already noted

    @property
    def credentials(self) -> Credentials | None:
        """The credentials, while the engine is known to be usable (None while it starts, restarts or is checked)."""
        return self._credentials

    @property
    def engine(self) -> Any:
        """The engine object (``nbagents.engines``) once started; None with :meth:`use` or before the start."""
        return self._engine

    def use(self, credentials: Credentials) -> None:
        """Run jobs launched from now on against this already running server (tests, benchmarks)."""
        with self._lock:
            self._started = True
            if self._engine is not None:
                self._retired.append(self._engine)  # still stopped at exit
            self._engine = None
            self._credentials, self._error = Credentials(*credentials), None
            listeners, self._listeners = self._listeners, []
        for listener in listeners:
            listener(self._credentials, None)

    def use_engine(self, engine: Any) -> None:
        """Start (in the background) and use this engine instead of the one ``select_engine()`` would choose.

        The session owns it from then on: it is stopped at exit and restarted if it dies.
        """
        with self._lock:
            if self._started and (self._engine is not None or self._busy):
                raise RuntimeError("the kernel's engine is already started; use_engine() must come first")
            self._given, self._started = engine, False
        self.start()

    def start(self) -> None:
        """Start the engine in the background (once); later calls make sure it is still usable.

        Returns at once. A dead local engine is restarted, a remote one is checked again, a failed start is
        retried (see the module docstring); listeners registered meanwhile get the outcome.
        """
        self._note_environment_change()
        with self._lock:
            if not self._started or (self._engine is None and self._error is not None and not self._busy):
                self._started, self._busy = True, True
                self._credentials, self._error = None, None
                target: Callable[..., None] = self._start
                args: tuple[Any, ...] = ()
            elif self._busy or self._engine is None:
                return  # starting now, or credentials given with use()
            else:
                engine = self._engine
                why = engine.exited()
                if why is not None:
                    target, args = self._restart, (engine, why)
                elif engine.name == "remote":
                    target, args = self._check, (engine,)
                else:
                    return
                self._busy = True
                self._credentials, self._error = None, None
        threading.Thread(target=target, args=args, name="nbagents-engine", daemon=True).start()

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
        outcome: list[tuple[Credentials | None, str | None]] = []

        def ready(credentials: Credentials | None, error: str | None) -> None:
            outcome.append((credentials, error))
            done.set()

        self.when_ready(ready)
        if not done.wait(timeout):
            raise TimeoutError(f"the LiveKit engine did not start within {timeout} s")
        credentials, error = outcome[0]
        if error is not None:
            raise RuntimeError(error)
        assert credentials is not None
        return credentials

    # ---- background work --------------------------------------------------------------------------

    def _start(self) -> None:
        credentials: Credentials | None = None
        error: str | None = None
        engine: Any = None
        try:
            from nbagents.engines import describe_engine, select_engine

            if self._given is None:
                self._chosen_with = _selection_environment()
            engine = self._given if self._given is not None else select_engine()
            credentials = engine.start()
            self.description = describe_engine(engine)
            if not self._atexit:
                atexit.register(self.stop)
                self._atexit = True
            # information, not an error: in a notebook it goes to stdout (stderr is shown as an error box);
            # on a command line it stays on stderr, beside the program's own output
            print_line(self.description, sys.stdout if _in_kernel() else sys.stderr)
        except Exception as exc:
            engine = None
            error = f"the LiveKit engine could not be started: {type(exc).__name__}: {exc}"
            if not str(exc):
                error += "\n" + traceback.format_exc()
        self._settle(engine, credentials, error)

    def _restart(self, engine: Any, why: str) -> None:
        """The engine's server died (``why``): start it again and say so in one line."""
        old = engine.credentials.url if engine.credentials else None
        what = f"the {engine.name} engine" + (f" at {old}" if old else "")
        try:
            credentials = engine.restart()
        except Exception as exc:
            error = (f"{what} had stopped ({why}) and could not be restarted: {type(exc).__name__}: {exc}. "
                     "Restart the kernel, or choose another engine with NBAGENTS_ENGINE")
            self._notice(f"nbagents engine: {error}")
            self._settle(None, None, error)
            return
        moved = "" if credentials.url == old else f" at {credentials.url}"
        self._notice(f"nbagents engine: {what} had stopped ({why}); restarted it{moved}")
        self._settle(engine, credentials, None)

    def _check(self, engine: Any) -> None:
        """A remote engine: reachable right now?"""
        try:
            engine.probe()
        except Exception as exc:
            error = str(exc)
            self._notice(f"nbagents engine: {error}")
            self._settle(engine, None, error)
            return
        self._settle(engine, engine.credentials, None)

    def _note_environment_change(self) -> None:
        """One line when the variables that chose the engine changed since: jobs keep using the engine."""
        chosen, engine = self._chosen_with, self._engine
        now = _selection_environment()
        if chosen is None or engine is None or now in (chosen, self._noted_with):
            return
        self._noted_with = now
        changed = ", ".join(name for name, before, after in zip(SELECTION_VARIABLES, chosen, now) if before != after)
        where = f" at {engine.credentials.url}" if getattr(engine, "credentials", None) else ""
        self._notice(f"nbagents engine: {changed} changed after the engine was chosen; this kernel's jobs keep using "
                     f"the {engine.name} engine{where}. Restart the kernel to use the new setting")

    def _notice(self, line: str) -> None:
        self.notices.append(line)
        print_line(line, sys.stderr)

    def _settle(self, engine: Any, credentials: Credentials | None, error: str | None) -> None:
        with self._lock:
            self._engine = engine
            self._credentials, self._error = credentials, error
            self._busy = False
            listeners, self._listeners = self._listeners, []
        for listener in listeners:
            listener(credentials, error)

    def stop(self) -> None:
        """Stop every engine this session started (at exit)."""
        engine, self._engine = self._engine, None
        retired, self._retired = self._retired, []
        for each in [*retired, engine]:
            if each is not None:
                each.stop()


def _selection_environment() -> tuple[str, ...]:
    return tuple(os.environ.get(name, "") for name in SELECTION_VARIABLES)


def _in_kernel() -> bool:
    """True inside a Jupyter kernel (IPython with a kernel attached), without importing IPython otherwise."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    shell = ipython.get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


_shared: EngineSession | None = None
_shared_lock = threading.Lock()


def shared_engine() -> EngineSession:
    """The kernel's engine session."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = EngineSession()
        return _shared
