"""A raw signaling client: the `/rtc` websocket spoken directly with protobuf, for what the SDK never sends.

The SDK always sends well-formed requests; a server must also survive clients that do not. This client
joins with a real token, then lets a test send arbitrary frames and watch how the server answers.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import aiohttp
from livekit.protocol import rtc as signal

from .helpers import TIMEOUT, make_token

CLOSED = (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR)


@dataclass
class RawSignal:
    ws: aiohttp.ClientWebSocketResponse
    join: signal.JoinResponse

    async def send(self, request: signal.SignalRequest) -> None:
        await self.ws.send_bytes(request.SerializeToString())

    async def next_response(self, timeout: float = TIMEOUT) -> signal.SignalResponse | None:
        """The next SignalResponse, or None once the server has closed the connection."""
        message = await self.ws.receive(timeout=timeout)
        if message.type in CLOSED:
            return None
        assert message.type == aiohttp.WSMsgType.BINARY, f"expected a binary protobuf frame, got {message.type}"
        response = signal.SignalResponse()
        response.ParseFromString(message.data)
        return response

    async def wait_for(self, kind: str, timeout: float = TIMEOUT) -> signal.SignalResponse:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            response = await self.next_response(max(0.1, deadline - loop.time()))
            if response is None:
                raise AssertionError(f"the server closed the connection before sending {kind!r}")
            if response.WhichOneof("message") == kind:
                return response

    async def closed_by_server(self, timeout: float = TIMEOUT) -> bool:
        """Read (and drop) whatever the server still sends until it closes; False if it never does."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            while await self.next_response(max(0.1, deadline - loop.time())) is not None:
                if loop.time() > deadline:
                    return False
        except asyncio.TimeoutError:
            return False
        return True


def rtc_url(server: Any, token: str) -> str:
    query = urlencode({"access_token": token, "protocol": 15, "sdk": "python", "auto_subscribe": 1})
    return f"{server.url}/rtc?{query}"


@contextlib.asynccontextmanager
async def raw_signal(server: Any, room: str, identity: str = "raw") -> AsyncIterator[RawSignal]:
    """A joined raw signaling connection (its first message, the JoinResponse, already read)."""
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(rtc_url(server, make_token(server, identity, room))) as ws:
            first = await ws.receive(timeout=TIMEOUT)
            assert first.type == aiohttp.WSMsgType.BINARY, f"expected the JoinResponse, got {first.type}"
            response = signal.SignalResponse()
            response.ParseFromString(first.data)
            assert response.WhichOneof("message") == "join", f"first message was {response.WhichOneof('message')}"
            yield RawSignal(ws, response.join)
