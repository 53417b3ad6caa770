"""What every engine (a LiveKit server nbagents can use) looks like to the rest of nbagents."""

from __future__ import annotations

import abc
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

    def __enter__(self) -> Credentials:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
