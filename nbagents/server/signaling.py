"""The client-facing signaling endpoints: the ``/rtc`` and ``/rtc/v1`` websockets and their validate calls.

Clients try ``/rtc/v1`` first: one PeerConnection for publishing and subscribing, settings in a ``join_request``
parameter (see ``join`` and ``single_pc``). Older clients, and clients told ``/rtc/v1`` is missing, use ``/rtc``:
settings in query parameters, one publisher and one subscriber PeerConnection. When a websocket is refused,
SDKs call the matching ``validate`` to learn why, and get the same status and message.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import WSMsgType, web
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from livekit.protocol import models
from livekit.protocol import rtc as signal
from livekit.protocol.room import RoomConfiguration

from nbagents.server import join
from nbagents.server.auth import AuthError, Claims, token_from_request
from nbagents.server.join import JoinParams, JoinRefused
from nbagents.server.participant import PING_TIMEOUT, Participant
from nbagents.server.state import STATE, ServerState

log = logging.getLogger(__name__)

MAX_SIGNAL_MESSAGE = 4 * 1024 * 1024
#: seconds a client may send nothing (not even a ping) before the server ends its session
SILENCE_TIMEOUT = 2 * PING_TIMEOUT


def _authorize(request: web.Request, params: JoinParams) -> Claims:
    """The claims the joining participant gets, or AuthError/JoinRefused saying why it may not join."""
    state = request.app[STATE]
    claims = join.authorize(state.verifier.verify(token_from_request(request.headers, request.query)), params)
    if (ended := _ended_agent_session(state, claims, params)) is not None:
        raise AuthError(f"this agent's session ended when room {claims.video.room!r} ended "
                        f"({models.DisconnectReason.Name(ended)}); its job is over, and rejoining with its token "
                        "would only re-create the room: join with a new token")
    return claims


def _ended_agent_session(state: ServerState, claims: Claims, params: JoinParams) -> int | None:
    """Why the session of this agent's token ended with its room, if it did (see RoomRegistry.ended_with_room)."""
    if claims.kind != models.ParticipantInfo.Kind.AGENT or params.reconnect:
        return None
    return state.rooms.agent_token_ended(claims.token_id)


async def _send_leave_and_close(ws: web.WebSocketResponse, reason: int) -> web.WebSocketResponse:
    leave = signal.LeaveRequest(can_reconnect=False, reason=reason, action=signal.LeaveRequest.Action.DISCONNECT)
    await ws.send_bytes(signal.SignalResponse(leave=leave).SerializeToString())
    await ws.close()
    return ws


def _refusal(exc: AuthError | JoinRefused) -> web.Response:
    return web.Response(status=exc.status, text=str(exc))


async def rtc_v1(request: web.Request) -> web.StreamResponse:
    """``/rtc/v1``: a client's signaling websocket, with one PeerConnection for publishing and subscribing; its
    settings come in the ``join_request`` parameter."""
    try:
        params = join.params_from_join_request(request.query)
    except JoinRefused as exc:
        return _refusal(exc)
    return await _session(request, params, "/rtc/v1")


async def validate_v1(request: web.Request) -> web.Response:
    """``GET /rtc/v1/validate``: as /rtc/validate, for a ``join_request`` (400 without one, as livekit-server)."""
    try:
        _authorize(request, join.params_from_join_request(request.query))
    except (AuthError, JoinRefused) as exc:
        return _refusal(exc)
    return web.Response(text="success")


async def validate(request: web.Request) -> web.Response:
    """``GET /rtc/validate``: whether this token may join with these parameters, and if not why (as text)."""
    try:
        _authorize(request, join.params_from_query(request.query, strict=True))
    except (AuthError, JoinRefused) as exc:
        return _refusal(exc)
    return web.Response(text="success")


async def _refuse_resume(request: web.Request, ws: web.WebSocketResponse, params: JoinParams
                         ) -> web.WebSocketResponse:
    """Sessions are not resumable here: ask the client for a full reconnect, as livekit-server does for a
    session it no longer has — unless the session ended because its room closed or was deleted: then say so
    (and create no room), so the client stops instead of joining a new, empty room of the same name."""
    await ws.prepare(request)
    ended = request.app[STATE].rooms.ended_with_room(params.participant_sid)
    if ended is not None:
        return await _send_leave_and_close(ws, ended)
    leave = signal.LeaveRequest(can_reconnect=True, reason=models.DisconnectReason.STATE_MISMATCH,
                                action=signal.LeaveRequest.Action.RECONNECT)
    await ws.send_bytes(signal.SignalResponse(leave=leave).SerializeToString())
    await ws.close()
    return ws


async def rtc(request: web.Request) -> web.StreamResponse:
    """``/rtc``: a client's signaling websocket, with one publisher and one subscriber PeerConnection."""
    try:
        params = join.params_from_query(request.query, strict=False)
    except JoinRefused as exc:
        return _refusal(exc)
    return await _session(request, params, "/rtc")


async def _session(request: web.Request, params: JoinParams, path: str) -> web.StreamResponse:
    """Authorize a join, then serve the participant's signaling until it leaves."""
    state = request.app[STATE]
    try:
        claims = _authorize(request, params)
    except (AuthError, JoinRefused) as exc:
        log.info("refused a join: %s", exc)
        return _refusal(exc)
    # Clients ping every PING_INTERVAL seconds and give up on a server silent for PING_TIMEOUT; the server gives
    # a silent client twice that (livekit-server waits longer still), so a client whose event loop is starved
    # for a while on a loaded machine is not cut off while it would still consider itself connected.
    ws = web.WebSocketResponse(heartbeat=None, max_msg_size=MAX_SIGNAL_MESSAGE, receive_timeout=SILENCE_TIMEOUT)
    if not ws.can_prepare(request).ok:
        # livekit-server answers a plain GET with 404 too
        return web.Response(status=404, text=f"{path} expects a websocket upgrade from a LiveKit client")
    if params.reconnect:
        log.info("%s asked to resume session %s (reason %s); sessions are not resumable here",
                 claims.identity, params.participant_sid or "?", models.ReconnectReason.Name(params.reconnect_reason))
        return await _refuse_resume(request, ws, params)
    config = claims.room_config
    existing = state.rooms.get(claims.video.room)
    if existing is not None and existing.max_participants \
            and len(existing.participants) >= existing.max_participants and claims.identity not in existing.participants:
        return web.Response(status=403, text=f"room {existing.name!r} is full ({existing.max_participants} participants)")
    await ws.prepare(request)
    if existing is not None and (previous := existing.participants.get(claims.identity)) is not None:
        await previous.close(models.DisconnectReason.DUPLICATE_IDENTITY, notify=True)
    # From here to room.add nothing awaits: the room found (or created) now is the one joined. Before, while the
    # upgrade and the replaced session's close were awaited, the room may have closed; joining the closed one
    # would leave the participant in a room nobody serves any more.
    if (ended := _ended_agent_session(state, claims, params)) is not None:
        return await _send_leave_and_close(ws, ended)
    created = state.rooms.get(claims.video.room) is None
    room = state.rooms.get_or_create(claims.video.room, **_room_settings(config))
    if (rival := room.participants.get(claims.identity)) is not None:  # joined meanwhile with the same identity
        asyncio.ensure_future(rival.close(models.DisconnectReason.DUPLICATE_IDENTITY, notify=True))
    participant = Participant(room, claims, ws, params, on_closed=lambda p: _participant_left(state, p))
    room.add(participant)
    state.rooms.schedule_close_check(room)
    if created:
        state.agents.room_created(room, config.agents if config is not None else ())
    log.info("%s joined %s (%s) at %s, client %s %s protocol %d client_protocol %d", participant.identity,
             room.name, participant.sid, path, models.ClientInfo.SDK.Name(params.client.sdk),
             params.client.version, params.client.protocol, params.client.client_protocol)
    participant.send(participant.join_response())
    room.announce_joined(participant)
    participant.start()
    if not await _handle_join_request_messages(participant, params):
        reason = models.DisconnectReason.SIGNAL_CLOSE
    else:
        reason = await _serve(participant, ws)
    await participant.close(reason, notify=reason != models.DisconnectReason.CLIENT_INITIATED)
    return ws


def _room_settings(config: RoomConfiguration | None) -> dict[str, Any]:
    """CreateRoom-like settings from a token's ``roomConfig``, applied when its bearer's join creates the room."""
    if config is None:
        return {}
    return {"empty_timeout": config.empty_timeout, "departure_timeout": config.departure_timeout,
            "max_participants": config.max_participants, "metadata": config.metadata}


def _participant_left(state: ServerState, participant: Participant) -> None:
    state.rooms.schedule_close_check(participant.room)


async def _handle_join_request_messages(participant: Participant, params: JoinParams) -> bool:
    """/rtc/v1 clients may put their AddTrackRequests and first offer in the join request: handle them as if
    they came first on the websocket (livekit-server's order). False if one is unusable."""
    requests = [signal.SignalRequest(add_track=request) for request in params.add_track_requests]
    if params.publisher_offer is not None:
        requests.append(signal.SignalRequest(offer=params.publisher_offer))
    for request in requests:
        try:
            await participant.handle(request)
        except Exception:
            log.exception("%s: could not handle the %s in its join request", participant.identity,
                          request.WhichOneof("message"))
            return False
    return True


async def _serve(participant: Participant, ws: web.WebSocketResponse) -> int:
    """Handle the client's signal messages until it leaves or its connection ends; returns the reason."""
    while not participant.closed:
        try:
            message = await ws.receive()
        except asyncio.TimeoutError:
            log.warning("%s sent nothing for %d s (not even a ping); disconnecting it", participant.identity,
                        SILENCE_TIMEOUT)
            return models.DisconnectReason.CONNECTION_TIMEOUT
        if message.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
            return models.DisconnectReason.CLIENT_INITIATED
        try:
            if message.type == WSMsgType.BINARY:
                await participant.handle_bytes(message.data)
            elif message.type == WSMsgType.TEXT:
                await participant.handle(json_format.Parse(message.data, signal.SignalRequest()))
        except (DecodeError, json_format.ParseError) as exc:
            log.warning("%s sent a malformed signal message (%s); closing its connection", participant.identity, exc)
            return models.DisconnectReason.SIGNAL_CLOSE
        except Exception:
            log.exception("%s: failed to handle a signal message", participant.identity)
    return models.DisconnectReason.CLIENT_INITIATED
