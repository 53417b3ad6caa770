"""What the request handlers share: the token verifier, the room registry and agent dispatch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web

from nbagents.server.auth import TokenVerifier
from nbagents.server.rooms import RoomRegistry

if TYPE_CHECKING:
    from nbagents.server.dispatch import AgentDispatcher


@dataclass
class ServerState:
    verifier: TokenVerifier
    rooms: RoomRegistry
    agents: AgentDispatcher


STATE = web.AppKey("nbagents_server_state", ServerState)
