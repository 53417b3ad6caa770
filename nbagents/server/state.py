"""What the request handlers share: the token verifier and the room registry."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from nbagents.server.auth import TokenVerifier
from nbagents.server.rooms import RoomRegistry


@dataclass
class ServerState:
    verifier: TokenVerifier
    rooms: RoomRegistry


STATE = web.AppKey("nbagents_server_state", ServerState)
