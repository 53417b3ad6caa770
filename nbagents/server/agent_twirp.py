"""Twirp ``livekit.AgentDispatchService``: CreateDispatch, ListDispatch, DeleteDispatch.

Every method needs ``roomAdmin`` for the room, as on livekit-server. CreateDispatch on a room that does
not exist yet creates it — which, as for any new room, also dispatches the automatic (unnamed) agent.
"""

from __future__ import annotations

from aiohttp import web
from livekit.protocol import agent_dispatch as proto

from nbagents.server import limits, twirp
from nbagents.server.auth import Claims
from nbagents.server.state import ServerState
from nbagents.server.twirp import Method, TwirpError


async def create_dispatch(state: ServerState, claims: Claims,
                          req: proto.CreateAgentDispatchRequest) -> proto.AgentDispatch:
    if not req.room:
        raise TwirpError("invalid_argument", "CreateDispatch needs a room name")
    claims.require_room_admin(req.room)
    twirp.check_limit(limits.metadata_error(req.metadata) or limits.attributes_error(req.attributes))
    twirp.check_limit(limits.room_name_error(req.room))
    room = state.rooms.get(req.room)
    if room is None:
        room = state.rooms.get_or_create(req.room)
        state.agents.room_created(room)
    return state.agents.create(room, req.agent_name, req.metadata, dict(req.attributes))


async def list_dispatch(state: ServerState, claims: Claims,
                        req: proto.ListAgentDispatchRequest) -> proto.ListAgentDispatchResponse:
    if not req.room:
        raise TwirpError("invalid_argument", "ListDispatch needs a room name")
    claims.require_room_admin(req.room)
    if state.rooms.get(req.room) is None:  # livekit-server refuses too (it finds no node hosting the room)
        raise TwirpError("not_found", f"room {req.room!r} does not exist, so it has no dispatches")
    dispatches = [d for d in state.agents.dispatches(req.room) if not req.dispatch_id or d.id == req.dispatch_id]
    return proto.ListAgentDispatchResponse(agent_dispatches=dispatches)


async def delete_dispatch(state: ServerState, claims: Claims,
                          req: proto.DeleteAgentDispatchRequest) -> proto.AgentDispatch:
    if not req.room or not req.dispatch_id:
        raise TwirpError("invalid_argument", "DeleteDispatch needs the room name and the dispatch id")
    claims.require_room_admin(req.room)
    deleted = await state.agents.delete(req.room, req.dispatch_id)
    if deleted is None:
        raise TwirpError("not_found", f"room {req.room!r} has no dispatch {req.dispatch_id!r}")
    return deleted


METHODS: dict[str, Method] = {
    "CreateDispatch": Method(proto.CreateAgentDispatchRequest, create_dispatch),
    "ListDispatch": Method(proto.ListAgentDispatchRequest, list_dispatch),
    "DeleteDispatch": Method(proto.DeleteAgentDispatchRequest, delete_dispatch),
}


async def agent_dispatch_service(request: web.Request, method: str) -> web.Response:
    return await twirp.serve(request, "livekit.AgentDispatchService", METHODS, method)
