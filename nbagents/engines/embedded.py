"""The ``embedded`` engine: nbagents' own LiveKit-protocol dev server, started as a subprocess."""

from __future__ import annotations

from typing import Any

from nbagents.engines.base import Credentials, Engine
from nbagents.server.process import DevServer


class EmbeddedEngine(Engine):
    """Wraps ``DevServer``; takes the same keyword options (host, port, api_key, api_secret, verbose, timeouts)."""

    name = "embedded"

    def __init__(self, **options: Any) -> None:
        self._server = DevServer(**options)

    @property
    def server(self) -> DevServer:
        return self._server

    @property
    def pid(self) -> int | None:
        return self._server.pid

    def start(self) -> Credentials:
        return self._server.start()

    def stop(self) -> None:
        self._server.stop()

    def exited(self) -> str | None:
        return self._server.exited()

    def restart(self) -> Credentials:
        return self._server.restart()

    @property
    def credentials(self) -> Credentials | None:
        return self._server.credentials
