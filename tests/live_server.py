"""The running LiveKit server a test talks to, whichever engine (or external server) it is."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LiveServer:
    """A running LiveKit server under test."""

    engine: str
    url: str
    api_key: str
    api_secret: str

    @property
    def http_url(self) -> str:
        return self.url.replace("ws://", "http://", 1).replace("wss://", "https://", 1)
