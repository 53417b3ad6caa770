"""Access tokens: verify the JWT a client or service caller presents and turn its grants into typed checks.

Tokens are HS256 JWTs signed with an API secret; ``iss`` names the API key, ``sub`` the identity and the
``video`` claim holds LiveKit's VideoGrant. Defaults follow livekit-server: ``canPublish``,
``canSubscribe`` and ``canPublishData`` are allowed unless the token says otherwise,
``canUpdateOwnMetadata`` is denied unless granted.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import jwt
from google.protobuf import json_format
from livekit.protocol import models
from livekit.protocol import room as room_proto

#: seconds of clock skew tolerated on ``exp`` and ``nbf``
CLOCK_LEEWAY = 10

_KINDS = {
    "": models.ParticipantInfo.Kind.STANDARD,
    "standard": models.ParticipantInfo.Kind.STANDARD,
    "ingress": models.ParticipantInfo.Kind.INGRESS,
    "egress": models.ParticipantInfo.Kind.EGRESS,
    "sip": models.ParticipantInfo.Kind.SIP,
    "agent": models.ParticipantInfo.Kind.AGENT,
}


class AuthError(Exception):
    """The request carries no valid token (HTTP 401, Twirp ``unauthenticated``)."""

    status = 401
    twirp_code = "unauthenticated"


class PermissionDenied(AuthError):
    """The token is valid but does not grant what the request needs (Twirp ``permission_denied``, HTTP 403).

    A refused join answers 401 nonetheless, as livekit-server does; SDKs treat it as an auth failure.
    """

    status = 401
    twirp_code = "permission_denied"


@dataclass(frozen=True)
class VideoGrant:
    """The ``video`` claim of a token; field names follow livekit-api's ``VideoGrants``."""

    room: str = ""
    room_join: bool = False
    room_create: bool = False
    room_list: bool = False
    room_admin: bool = False
    room_record: bool = False
    can_publish: bool = True
    can_subscribe: bool = True
    can_publish_data: bool = True
    can_update_own_metadata: bool = False
    can_publish_sources: tuple[str, ...] = ()
    hidden: bool = False
    recorder: bool = False
    agent: bool = False

    @classmethod
    def from_claim(cls, claim: Any) -> VideoGrant:
        if claim is None:
            return cls()
        if not isinstance(claim, Mapping):
            raise AuthError("token's 'video' claim must be an object")

        def flag(name: str, default: bool) -> bool:
            value = claim.get(name)
            return default if value is None else bool(value)

        sources = claim.get("canPublishSources") or ()
        return cls(
            room=str(claim.get("room") or ""),
            room_join=flag("roomJoin", False),
            room_create=flag("roomCreate", False),
            room_list=flag("roomList", False),
            room_admin=flag("roomAdmin", False),
            room_record=flag("roomRecord", False),
            can_publish=flag("canPublish", True),
            can_subscribe=flag("canSubscribe", True),
            can_publish_data=flag("canPublishData", True),
            can_update_own_metadata=flag("canUpdateOwnMetadata", False),
            can_publish_sources=tuple(str(s) for s in sources),
            hidden=flag("hidden", False),
            recorder=flag("recorder", False),
            agent=flag("agent", False),
        )

    def permission(self) -> models.ParticipantPermission:
        """The ParticipantPermission a participant joining with this grant starts with."""
        perm = models.ParticipantPermission(
            can_subscribe=self.can_subscribe,
            can_publish=self.can_publish,
            can_publish_data=self.can_publish_data,
            hidden=self.hidden,
            recorder=self.recorder,
            can_update_metadata=self.can_update_own_metadata,
            agent=self.agent,
        )
        for source in self.can_publish_sources:
            value = models.TrackSource.Value(source.upper()) if source.upper() in models.TrackSource.keys() else None
            if value is not None:
                perm.can_publish_sources.append(value)
        return perm


@dataclass(frozen=True)
class Claims:
    """What a verified token says about its bearer."""

    api_key: str
    identity: str
    name: str = ""
    metadata: str = ""
    attributes: Mapping[str, str] = field(default_factory=dict)
    kind: int = models.ParticipantInfo.Kind.STANDARD
    video: VideoGrant = field(default_factory=VideoGrant)
    #: ``roomConfig``: settings (and agents to dispatch) for the room, if this participant's join creates it
    room_config: room_proto.RoomConfiguration | None = None
    #: the token's signature: tells one token from another with the same claims minted at another time
    token_id: str = ""

    def require_room_admin(self, room: str) -> None:
        """Raise PermissionDenied unless the token administers ``room`` (roomAdmin granted for that room)."""
        if not self.video.room_admin:
            raise PermissionDenied("token does not grant roomAdmin")
        if not self.video.room:  # livekit-server: roomAdmin is for the room the token names, never for all rooms
            raise PermissionDenied(f"token grants roomAdmin but names no room: set VideoGrants(room={room!r})")
        if self.video.room != room:
            raise PermissionDenied(f"token's roomAdmin grant is for room {self.video.room!r}, not {room!r}")

    def require(self, grant: str) -> None:
        """Raise PermissionDenied unless the boolean grant (``room_create``, ``room_list``, …) is set."""
        if not getattr(self.video, grant):
            camel = grant.split("_")[0] + "".join(w.title() for w in grant.split("_")[1:])
            raise PermissionDenied(f"token does not grant {camel}")


class TokenVerifier:
    """Verifies tokens against the server's API keys."""

    def __init__(self, keys: Mapping[str, str]) -> None:
        self._keys = dict(keys)

    def verify(self, token: str | None) -> Claims:
        if not token:
            raise AuthError("no access token: send 'Authorization: Bearer <token>' or ?access_token=<token>")
        try:
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise AuthError(f"access token is not a valid JWT: {exc}") from None
        api_key = unverified.get("iss")
        secret = self._keys.get(api_key) if isinstance(api_key, str) else None
        if secret is None:
            raise AuthError(f"unknown API key {api_key!r} in token's 'iss' claim: sign with this server's key")
        try:
            payload = jwt.decode(token, secret, algorithms=["HS256"], leeway=CLOCK_LEEWAY,
                                 options={"verify_aud": False})
        except jwt.ExpiredSignatureError:
            raise AuthError("access token has expired: mint a new one") from None
        except jwt.InvalidSignatureError:
            raise AuthError("access token signature is invalid: sign it with this server's API secret") from None
        except jwt.PyJWTError as exc:
            raise AuthError(f"access token rejected: {exc}") from None
        return dataclasses.replace(_claims_from_payload(api_key, payload), token_id=token.rsplit(".", 1)[-1])


def _claims_from_payload(api_key: str, payload: Mapping[str, Any]) -> Claims:
    attributes = payload.get("attributes") or {}
    if not isinstance(attributes, Mapping):
        raise AuthError("token's 'attributes' claim must be an object of strings")
    kind_name = str(payload.get("kind") or "").lower()
    if kind_name not in _KINDS:
        raise AuthError(f"token's 'kind' claim {kind_name!r} is not one of {', '.join(k for k in _KINDS if k)}")
    return Claims(
        api_key=api_key,
        identity=str(payload.get("sub") or ""),
        name=str(payload.get("name") or ""),
        metadata=str(payload.get("metadata") or ""),
        attributes={str(k): str(v) for k, v in attributes.items()},
        kind=_KINDS[kind_name],
        video=VideoGrant.from_claim(payload.get("video")),
        room_config=_room_config(payload.get("roomConfig")),
    )


def _room_config(claim: Any) -> room_proto.RoomConfiguration | None:
    if claim is None:
        return None
    if not isinstance(claim, Mapping):
        raise AuthError("token's 'roomConfig' claim must be an object (a RoomConfiguration)")
    try:
        return json_format.ParseDict(claim, room_proto.RoomConfiguration(), ignore_unknown_fields=True)
    except json_format.ParseError as exc:
        raise AuthError(f"token's 'roomConfig' claim is not a valid RoomConfiguration: {exc}") from None


def token_from_request(headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
    """The token from ``Authorization: Bearer …`` (SDKs) or ``?access_token=…`` (browsers cannot set headers)."""
    auth = headers.get("Authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    return query.get("access_token") or None
