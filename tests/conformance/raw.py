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
        try:  # any frame type: after a text frame livekit-server may answer in JSON before it closes
            while (await self.ws.receive(timeout=max(0.1, deadline - loop.time()))).type not in CLOSED:
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


class RawDataSender:
    """A raw participant that joins over `raw_signal`, opens the `_reliable` data channel with aiortc and
    can put any DataPacket on it, including one that claims to come from someone else."""

    def __init__(self, raw: RawSignal) -> None:
        from aiortc import RTCPeerConnection

        self.raw = raw
        self.publisher = RTCPeerConnection()
        self.subscriber = RTCPeerConnection()
        self.reliable = self.publisher.createDataChannel("_reliable", ordered=True)
        self._opened = asyncio.Event()
        self.reliable.on("open", self._opened.set)
        self._pump: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        await self.publisher.setLocalDescription(await self.publisher.createOffer())  # gathers candidates
        offer = self.publisher.localDescription
        await self.raw.send(signal.SignalRequest(offer=signal.SessionDescription(type=offer.type, sdp=offer.sdp)))
        self._pump = asyncio.ensure_future(self._answer_the_server())
        await asyncio.wait_for(self._opened.wait(), TIMEOUT)

    async def _answer_the_server(self) -> None:
        from aiortc import RTCSessionDescription
        from aiortc.sdp import candidate_from_sdp
        import json

        while (response := await self.raw.next_response(timeout=3600)) is not None:
            kind = response.WhichOneof("message")
            if kind == "answer":
                await self.publisher.setRemoteDescription(RTCSessionDescription(response.answer.sdp, "answer"))
            elif kind == "offer":  # the subscriber connection: answer it so the participant becomes active
                await self.subscriber.setRemoteDescription(RTCSessionDescription(response.offer.sdp, "offer"))
                await self.subscriber.setLocalDescription(await self.subscriber.createAnswer())
                answer = self.subscriber.localDescription
                await self.raw.send(signal.SignalRequest(answer=signal.SessionDescription(type="answer",
                                                                                         sdp=answer.sdp)))
            elif kind == "trickle":
                init = json.loads(response.trickle.candidateInit)
                if not init.get("candidate"):
                    continue
                candidate = candidate_from_sdp(init["candidate"].split(":", 1)[1])
                candidate.sdpMid = init.get("sdpMid")
                candidate.sdpMLineIndex = init.get("sdpMLineIndex")
                pc = self.publisher if response.trickle.target == signal.SignalTarget.PUBLISHER else self.subscriber
                with contextlib.suppress(Exception):  # a candidate for a connection not negotiated yet
                    await pc.addIceCandidate(candidate)

    def send(self, packet: Any) -> None:
        self.reliable.send(packet.SerializeToString())

    async def close(self) -> None:
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(BaseException):
                await self._pump
        await self.publisher.close()
        await self.subscriber.close()


@contextlib.asynccontextmanager
async def raw_data_sender(server: Any, room: str, identity: str) -> AsyncIterator[RawDataSender]:
    async with raw_signal(server, room, identity) as raw:
        sender = RawDataSender(raw)
        try:
            await sender.connect()
            yield sender
        finally:
            await sender.close()
