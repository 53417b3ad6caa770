"""What every engine (a LiveKit server nbagents can use) looks like to the rest of nbagents."""

from __future__ import annotations

import abc
import signal
from typing import NamedTuple


class Credentials(NamedTuple):
    """Where a LiveKit server is and how to sign tokens for it; unpacks as (url, api_key, api_secret)."""

    url: str
    api_key: str
    api_secret: str


class EngineError(RuntimeError):
    """An engine could not be started or reached; the message says what to do."""


class Engine(abc.ABC):
    """A LiveKit server: started (or merely located) by ``start()``, released by ``stop()``."""

    name: str = "engine"
    _credentials: Credentials | None = None  # set by start(), cleared by stop()

    @abc.abstractmethod
    def start(self) -> Credentials:
        """Start or locate the server and return once it accepts connections."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Release the server (stop it if this engine started it). Safe to call twice."""

    @property
    def credentials(self) -> Credentials | None:
        """The credentials while started, else None."""
        return self._credentials

    def exited(self) -> str | None:
        """For a server this engine runs: how it ended ("killed by SIGKILL", "exit code 1") once it has
        died on its own; None while it runs, before it started, after ``stop()``, and for engines that run
        nothing (``remote``)."""
        return None

    def restart(self) -> Credentials:
        """Start the server again (after it died), with the same API key and secret where possible."""
        self.stop()
        return self.start()

    def probe(self) -> None:
        """Raise :class:`EngineError` if the server cannot be reached right now (cheap; a TCP connect at most).

        Engines that run their server check it with ``exited()`` instead; this default does nothing.
        """

    def __enter__(self) -> Credentials:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def describe_exit(returncode: int | None) -> str:
    """A process's end in words, from a ``Popen.returncode``-style value (negative: killed by that signal)."""
    if returncode is None:
        return "still running"
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit code {returncode}"
