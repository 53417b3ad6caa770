"""The service API: Twirp ``livekit.RoomService`` at ``POST /twirp/livekit.RoomService/<Method>``
(``serve`` also answers the other services, such as ``livekit.AgentDispatchService``).

Bodies are protobuf (``application/protobuf``, what livekit-api sends) or JSON (``application/json``).
Errors are Twirp JSON errors. A client mistake never gets a 5xx: livekit-api retries 5xx answers,
which would turn a wrong call into a slow one.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web
from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from livekit.protocol import models
from livekit.protocol import room as api
from livekit.protocol import rtc as signal

from nbagents.server import limits
from nbagents.server.auth import AuthError, Claims, token_from_request
from nbagents.server.participant import Participant
from nbagents.server.rooms import Room
from nbagents.server.state import STATE, ServerState

log = logging.getLogger(__name__)

_PROTOBUF = "application/protobuf"
_JSON = "application/json"


class TwirpError(Exception):
    """An error answered as ``{"code": ..., "msg": ...}`` with the HTTP status Twirp assigns to the code."""

    STATUS = {"malformed": 400, "invalid_argument": 400, "unauthenticated": 401, "permission_denied": 403,
              "not_found": 404, "bad_route": 404, "already_exists": 409, "internal": 500}

    def __init__(self, code: str, msg: str) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg

    def response(self) -> web.Response:
        return web.json_response({"code": self.code, "msg": self.msg}, status=self.STATUS[self.code])


Handler = Callable[[ServerState, Claims, Message], Awaitable[Message]]


@dataclass(frozen=True)
class Method:
    request_type: type[Message]
    handler: Handler


def _room(state: ServerState, name: str) -> Room:
    room = state.rooms.get(name)
    if room is None:
        raise TwirpError("not_found", f"room {name!r} does not exist")
    return room


def _participant(state: ServerState, room_name: str, identity: str) -> Participant:
    participant = _room(state, room_name).participants.get(identity)
    if participant is None:
        raise TwirpError("not_found", f"participant {identity!r} is not in room {room_name!r}")
    return participant


def check_limit(error: str | None) -> None:
    """Raise livekit-server's ``invalid_argument`` for a value over one of its limits (see ``limits``)."""
    if error is not None:
        raise TwirpError("invalid_argument", error)


async def create_room(state: ServerState, claims: Claims, req: api.CreateRoomRequest) -> models.Room:
    claims.require("room_create")
    if not req.name:
        raise TwirpError("invalid_argument", "CreateRoom needs a room name")
    check_limit(limits.room_name_error(req.name))
    check_limit(limits.metadata_error(req.metadata))
    for agent in req.agents:
        check_limit(limits.metadata_error(agent.metadata) or limits.attributes_error(agent.attributes))
    created = state.rooms.get(req.name) is None
    room = state.rooms.get_or_create(req.name, empty_timeout=req.empty_timeout,
                                     departure_timeout=req.departure_timeout,
                                     max_participants=req.max_participants, metadata=req.metadata)
    if created:
        state.agents.room_created(room, req.agents)
    return room.info()


async def list_rooms(state: ServerState, claims: Claims, req: api.ListRoomsRequest) -> api.ListRoomsResponse:
    claims.require("room_list")
    names = set(req.names)
    return api.ListRoomsResponse(rooms=[r.info() for r in state.rooms.rooms.values() if not names or r.name in names])


async def delete_room(state: ServerState, claims: Claims, req: api.DeleteRoomRequest) -> api.DeleteRoomResponse:
    claims.require("room_create")
    if not await state.rooms.delete(req.room):
        raise TwirpError("not_found", f"room {req.room!r} does not exist")
    return api.DeleteRoomResponse()


async def list_participants(state: ServerState, claims: Claims,
                            req: api.ListParticipantsRequest) -> api.ListParticipantsResponse:
    claims.require_room_admin(req.room)
    room = state.rooms.get(req.room)  # livekit-server lists an unknown room as empty rather than failing
    return api.ListParticipantsResponse(participants=[p.info for p in room.participants.values()] if room else [])


async def get_participant(state: ServerState, claims: Claims,
                          req: api.RoomParticipantIdentity) -> models.ParticipantInfo:
    claims.require_room_admin(req.room)
    return _participant(state, req.room, req.identity).info


async def remove_participant(state: ServerState, claims: Claims,
                             req: api.RoomParticipantIdentity) -> api.RemoveParticipantResponse:
    claims.require_room_admin(req.room)
    await _participant(state, req.room, req.identity).close(models.DisconnectReason.PARTICIPANT_REMOVED, notify=True)
    return api.RemoveParticipantResponse()


async def update_participant(state: ServerState, claims: Claims,
                             req: api.UpdateParticipantRequest) -> models.ParticipantInfo:
    check_limit(limits.participant_update_error(req.name, req.metadata, req.attributes))  # before the grant, as there
    claims.require_room_admin(req.room)
    participant = _participant(state, req.room, req.identity)
    if req.HasField("permission"):
        participant.set_permission(req.permission)
    participant.update(name=req.name or None, metadata=req.metadata or None, attributes=dict(req.attributes))
    return participant.info


async def mute_published_track(state: ServerState, claims: Claims,
                               req: api.MuteRoomTrackRequest) -> api.MuteRoomTrackResponse:
    claims.require_room_admin(req.room)
    participant = _participant(state, req.room, req.identity)
    info = participant.set_muted(req.track_sid, req.muted, tell_publisher=True)
    if info is None:
        raise TwirpError("not_found", f"{req.identity!r} publishes no track {req.track_sid!r}")
    return api.MuteRoomTrackResponse(track=info)


async def send_data(state: ServerState, claims: Claims, req: api.SendDataRequest) -> api.SendDataResponse:
    claims.require_room_admin(req.room)
    room = _room(state, req.room)
    identities, sids = set(req.destination_identities), set(req.destination_sids)
    packet = models.DataPacket(kind=req.kind, destination_identities=req.destination_identities,
                               user=models.UserPacket(payload=req.data, topic=req.topic or None,
                                                      destination_identities=req.destination_identities))
    data = packet.SerializeToString()
    label = "_reliable" if req.kind == models.DataPacket.Kind.RELIABLE else "_lossy"
    for p in room.participants.values():
        if (not identities and not sids) or p.identity in identities or p.sid in sids:
            p.subscriber.send_data(label, data)
    return api.SendDataResponse()


async def update_room_metadata(state: ServerState, claims: Claims, req: api.UpdateRoomMetadataRequest) -> models.Room:
    check_limit(limits.metadata_error(req.metadata))
    claims.require_room_admin(req.room)
    room = _room(state, req.room)
    room.update_metadata(req.metadata)
    return room.info()


async def update_subscriptions(state: ServerState, claims: Claims,
                               req: api.UpdateSubscriptionsRequest) -> api.UpdateSubscriptionsResponse:
    claims.require_room_admin(req.room)
    participant = _participant(state, req.room, req.identity)
    await participant.handle(signal.SignalRequest(subscription=signal.UpdateSubscription(
        track_sids=req.track_sids, subscribe=req.subscribe, participant_tracks=req.participant_tracks)))
    return api.UpdateSubscriptionsResponse()


METHODS: dict[str, Method] = {
    "CreateRoom": Method(api.CreateRoomRequest, create_room),
    "ListRooms": Method(api.ListRoomsRequest, list_rooms),
    "DeleteRoom": Method(api.DeleteRoomRequest, delete_room),
    "ListParticipants": Method(api.ListParticipantsRequest, list_participants),
    "GetParticipant": Method(api.RoomParticipantIdentity, get_participant),
    "RemoveParticipant": Method(api.RoomParticipantIdentity, remove_participant),
    "UpdateParticipant": Method(api.UpdateParticipantRequest, update_participant),
    "MutePublishedTrack": Method(api.MuteRoomTrackRequest, mute_published_track),
    "UpdateSubscriptions": Method(api.UpdateSubscriptionsRequest, update_subscriptions),
    "SendData": Method(api.SendDataRequest, send_data),
    "UpdateRoomMetadata": Method(api.UpdateRoomMetadataRequest, update_room_metadata),
}


def _parse(body: bytes, content_type: str, request_type: type[Message]) -> Message:
    message = request_type()
    try:
        if content_type == _JSON:
            json_format.Parse(body or b"{}", message)
        else:
            message.ParseFromString(body)
    except (DecodeError, json_format.ParseError, UnicodeDecodeError, ValueError) as exc:
        raise TwirpError("malformed", f"request body is not a valid {request_type.DESCRIPTOR.name}: {exc}") from None
    return message


def _encode(message: Message, content_type: str) -> web.Response:
    if content_type == _JSON:
        return web.Response(text=json_format.MessageToJson(message), content_type=_JSON)
    return web.Response(body=message.SerializeToString(), content_type=_PROTOBUF)


async def _read_body(request: web.Request) -> bytes:
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge as exc:
        raise TwirpError("invalid_argument", f"request body is larger than this server accepts ({exc.text}); "
                                             "send less data per call") from None


async def serve(request: web.Request, service: str, methods: dict[str, Method], name: str) -> web.Response:
    """Answer one Twirp call of ``service`` to method ``name``: check route, content type and token, run it."""
    state = request.app[STATE]
    try:
        method = methods.get(name)
        if method is None:
            raise TwirpError("bad_route", f"{service} has no method {name!r} on this server")
        if request.method != "POST":
            raise TwirpError("bad_route", f"Twirp methods are called with POST, not {request.method}")
        content_type = request.content_type
        if content_type not in (_PROTOBUF, _JSON):
            raise TwirpError("bad_route", f"unsupported Content-Type {content_type!r}: use {_PROTOBUF} or {_JSON}")
        try:
            claims = state.verifier.verify(token_from_request(request.headers, request.query))
        except AuthError as exc:
            raise TwirpError(exc.twirp_code, str(exc)) from None
        message = _parse(await _read_body(request), content_type, method.request_type)
        try:
            result = await method.handler(state, claims, message)
        except AuthError as exc:
            raise TwirpError(exc.twirp_code, str(exc)) from None
        return _encode(result, content_type)
    except TwirpError as exc:
        log.info("%s.%s: %s %s", service, name, exc.code, exc.msg)
        return exc.response()
    except Exception:
        log.exception("%s.%s failed", service, name)
        return TwirpError("internal", f"{service}.{name} failed inside the server; see its log").response()


async def room_service(request: web.Request, method: str) -> web.Response:
    return await serve(request, "livekit.RoomService", METHODS, method)


def unknown_service(path: str) -> web.Response:
    return TwirpError("bad_route", f"no Twirp service at {path}").response()
