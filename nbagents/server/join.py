"""What a client asks for when it joins, read and checked the way livekit-server does it.

``/rtc`` takes its settings as query parameters; ``/rtc/v1`` takes one ``join_request`` parameter, a base64url
``WrappedJoinRequest`` (plain or gzip) whose ``JoinRequest`` carries the same settings, optionally the client's
metadata and attributes, and the first offer of its one PeerConnection. The rules and the refusals (status and
wording) follow livekit-server v1.13.5: ``validateInternal`` in pkg/service/rtcservice.go, ``ParseClientInfo``
and ``ValidateConnectRequest`` in pkg/service/utils.go.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field

from google.protobuf.message import DecodeError
from livekit.protocol import models
from livekit.protocol import rtc as signal

from nbagents.server import limits
from nbagents.server.auth import Claims, PermissionDenied

#: a JoinRequest, once decompressed, may be as large as Go's default header limit (``http.DefaultMaxHeaderBytes``)
MAX_JOIN_REQUEST_BYTES = 1 << 20

_SDKS = {
    "js": models.ClientInfo.SDK.JS, "ios": models.ClientInfo.SDK.SWIFT, "swift": models.ClientInfo.SDK.SWIFT,
    "android": models.ClientInfo.SDK.ANDROID, "flutter": models.ClientInfo.SDK.FLUTTER,
    "go": models.ClientInfo.SDK.GO, "unity": models.ClientInfo.SDK.UNITY,
    "reactnative": models.ClientInfo.SDK.REACT_NATIVE, "rust": models.ClientInfo.SDK.RUST,
    "python": models.ClientInfo.SDK.PYTHON, "cpp": models.ClientInfo.SDK.CPP,
    "unityweb": models.ClientInfo.SDK.UNITY_WEB, "node": models.ClientInfo.SDK.NODE,
    "esp32": models.ClientInfo.SDK.ESP32,
}


class JoinRefused(Exception):
    """A join request livekit-server refuses before any authorization question: HTTP 400 with this text."""

    status = 400


@dataclass
class JoinParams:
    """The client's join settings, from either path."""

    client: models.ClientInfo = field(default_factory=models.ClientInfo)
    #: joined at /rtc/v1: one PeerConnection carries publishing and subscribing
    single_peer_connection: bool = False
    auto_subscribe: bool = True
    adaptive_stream: bool = False
    subscriber_allow_pause: bool | None = None
    disable_ice_lite: bool = False
    auto_subscribe_data_track: bool | None = None
    #: a resume of an existing session (``reconnect=1`` with the participant's ``sid``)
    reconnect: bool = False
    reconnect_reason: int = models.ReconnectReason.RR_UNKNOWN
    participant_sid: str = ""
    #: /rtc's ``publish`` parameter: a second, publish-only connection of the same participant
    publish: str = ""
    metadata: str = ""
    attributes: dict[str, str] = field(default_factory=dict)
    add_track_requests: list[signal.AddTrackRequest] = field(default_factory=list)
    publisher_offer: signal.SessionDescription | None = None

    @property
    def client_protocol(self) -> int:
        return self.client.client_protocol


def _flag(value: str | None) -> bool:
    """livekit-server's ``boolValue``: only "1" and "true" are true."""
    return value in ("1", "true")


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def client_info_from_query(query: Mapping[str, str]) -> models.ClientInfo:
    """``ParseClientInfo``: what the client says about itself in /rtc's query parameters."""
    info = models.ClientInfo()
    for name in ("protocol", "client_protocol"):
        value = _int(query.get(name))
        if value is not None and -(1 << 31) <= value < 1 << 31:
            setattr(info, name, value)
    info.sdk = _SDKS.get(query.get("sdk", ""), models.ClientInfo.SDK.UNKNOWN)
    for name in ("version", "os", "os_version", "browser", "browser_version", "device_model", "network"):
        setattr(info, name, query.get(name, ""))
    for capability in query.get("capabilities", "").split(","):
        capability = capability.strip()
        if capability in models.ClientInfo.Capability.keys():
            info.capabilities.append(models.ClientInfo.Capability.Value(capability))
    return info


def _decode_attributes(text: str) -> dict[str, str]:
    attributes = json.loads(base64.urlsafe_b64decode(text.encode()))
    if not isinstance(attributes, dict):
        raise ValueError("attributes are not an object")
    return {str(k): str(v) for k, v in attributes.items()}


def params_from_query(query: Mapping[str, str], *, strict: bool) -> JoinParams:
    """Join settings from /rtc's query parameters. ``strict`` (the validate endpoint) refuses attributes that
    do not decode, where the join itself ignores them, as livekit-server does."""
    params = JoinParams(client=client_info_from_query(query))
    params.publish = query.get("publish", "")
    if query.get("attributes"):
        try:
            params.attributes = _decode_attributes(query["attributes"])
        except (ValueError, binascii.Error, UnicodeDecodeError):
            if strict:
                raise JoinRefused("cannot decode attributes") from None
    params.reconnect = _flag(query.get("reconnect"))
    if query.get("auto_subscribe"):
        params.auto_subscribe = _flag(query["auto_subscribe"])
    if query.get("auto_subscribe_data_track"):
        params.auto_subscribe_data_track = _flag(query["auto_subscribe_data_track"])
    params.adaptive_stream = _flag(query.get("adaptive_stream"))
    params.disable_ice_lite = _flag(query.get("disable_ice_lite"))
    reason = _int(query.get("reconnect_reason")) or 0
    params.reconnect_reason = reason if reason in models.ReconnectReason.values() else 0
    if params.reconnect:
        params.participant_sid = query.get("sid", "")
    if query.get("subscriber_allow_pause"):
        params.subscriber_allow_pause = _flag(query["subscriber_allow_pause"])
    return params


def decode_join_request(encoded: str) -> signal.JoinRequest:
    """The JoinRequest in /rtc/v1's ``join_request`` parameter; JoinRefused (400) with livekit-server's words."""
    try:
        wrapped_bytes = base64.b64decode(encoded.encode("ascii"), altchars=b"-_", validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise JoinRefused("cannot base64 decode wrapped join request") from None
    wrapped = signal.WrappedJoinRequest()
    try:
        wrapped.ParseFromString(wrapped_bytes)
    except DecodeError:
        raise JoinRefused("cannot unmarshal wrapped join request") from None
    data = wrapped.join_request
    if wrapped.compression == signal.WrappedJoinRequest.Compression.GZIP:
        data = _gunzip(data)
    elif len(data) > MAX_JOIN_REQUEST_BYTES:
        raise JoinRefused("join request too large")
    join_request = signal.JoinRequest()
    try:
        join_request.ParseFromString(data)
    except DecodeError:
        raise JoinRefused("cannot unmarshal join request") from None
    return join_request


def _gunzip(data: bytes) -> bytes:
    decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = decompressor.decompress(data, MAX_JOIN_REQUEST_BYTES + 1)
    except zlib.error:
        raise JoinRefused("cannot read decompressed join request") from None
    if len(out) > MAX_JOIN_REQUEST_BYTES:
        raise JoinRefused("join request too large")
    if not decompressor.eof:
        raise JoinRefused("cannot read decompressed join request")
    return out


def params_from_join_request(query: Mapping[str, str]) -> JoinParams:
    """Join settings from /rtc/v1's ``join_request``; JoinRefused (400) if it is missing or unreadable."""
    encoded = query.get("join_request", "")
    if not encoded:
        raise JoinRefused("join_request is required")
    request = decode_join_request(encoded)
    settings = request.connection_settings
    params = JoinParams(client=request.client_info, single_peer_connection=True)
    params.auto_subscribe = settings.auto_subscribe
    params.adaptive_stream = settings.adaptive_stream
    params.disable_ice_lite = settings.disable_ice_lite
    params.subscriber_allow_pause = settings.subscriber_allow_pause
    params.auto_subscribe_data_track = settings.auto_subscribe_data_track
    params.metadata = request.metadata
    params.attributes = dict(request.participant_attributes)
    params.add_track_requests = list(request.add_track_requests)
    params.publisher_offer = request.publisher_offer if request.HasField("publisher_offer") else None
    params.reconnect = request.reconnect
    params.reconnect_reason = request.reconnect_reason
    params.participant_sid = request.participant_sid
    return params


def authorize(claims: Claims, params: JoinParams) -> Claims:
    """``ValidateConnectRequest``: the claims the participant joins with, or the refusal livekit-server gives
    (PermissionDenied → 401, JoinRefused → 400), checked in its order."""
    if not claims.video.room_join:
        raise PermissionDenied("token does not grant roomJoin: add VideoGrants(room_join=True, room=...)")
    if not claims.identity:
        raise JoinRefused("identity cannot be empty: call AccessToken.with_identity(...)")
    if (error := limits.identity_error(claims.identity)) is not None:
        raise JoinRefused(error)
    if not claims.video.room:
        raise JoinRefused("no room name: the token grants roomJoin but names no room; set VideoGrants(room=...)")
    if (error := limits.room_name_error(claims.video.room)) is not None:
        raise JoinRefused(error)
    identity, video = claims.identity, claims.video
    if params.publish:
        if not video.can_publish:
            raise PermissionDenied("a publish-only connection needs a token that grants canPublish")
        identity = f"{identity}#{params.publish}"
        video = dataclasses.replace(video, can_subscribe=False)
    metadata, attributes = claims.metadata, dict(claims.attributes)
    if params.metadata:
        if not video.can_update_own_metadata:
            raise PermissionDenied("metadata in the join request needs a token that grants canUpdateOwnMetadata")
        metadata = params.metadata
    if params.attributes:
        if not video.can_update_own_metadata:
            raise PermissionDenied("attributes in the join request need a token that grants canUpdateOwnMetadata")
        attributes.update({k: v for k, v in params.attributes.items() if v})  # an empty value deletes nothing
    # livekit-server refuses these only once the session starts, with a 500; a 400 says it is the client's
    if (error := limits.metadata_error(metadata) or limits.attributes_error(attributes)) is not None:
        raise JoinRefused(error)
    return dataclasses.replace(claims, identity=identity, video=video, metadata=metadata, attributes=attributes)
