"""Token verification: real tokens minted by livekit-api, checked by the server's verifier."""

from __future__ import annotations

import datetime

import jwt
import pytest
from livekit import api
from livekit.protocol import models

from nbagents.server import join
from nbagents.server.auth import AuthError, PermissionDenied, TokenVerifier
from nbagents.server.join import JoinParams, JoinRefused

KEY, SECRET = "devkey", "s" * 32


def mint(**grants) -> api.AccessToken:
    return api.AccessToken(KEY, SECRET).with_identity("alice").with_grants(api.VideoGrants(**grants))


def test_identity_name_metadata_attributes_and_kind_come_from_the_token():
    token = (mint(room_join=True, room="r").with_name("Alice").with_metadata("m")
             .with_attributes({"role": "tester"}).with_kind("agent").to_jwt())
    claims = TokenVerifier({KEY: SECRET}).verify(token)
    assert (claims.identity, claims.name, claims.metadata) == ("alice", "Alice", "m")
    assert dict(claims.attributes) == {"role": "tester"}
    assert claims.kind == models.ParticipantInfo.Kind.AGENT
    assert join.authorize(claims, JoinParams()).video.room == "r"


def test_grant_defaults_follow_livekit_server():
    perm = TokenVerifier({KEY: SECRET}).verify(mint(room_join=True, room="r").to_jwt()).video.permission()
    assert perm.can_publish and perm.can_subscribe and perm.can_publish_data
    assert not perm.can_update_metadata


def test_revoked_grants_become_permissions():
    token = mint(room_join=True, room="r", can_publish=False, can_subscribe=False, can_publish_data=False,
                 can_update_own_metadata=True).to_jwt()
    perm = TokenVerifier({KEY: SECRET}).verify(token).video.permission()
    assert not (perm.can_publish or perm.can_subscribe or perm.can_publish_data)
    assert perm.can_update_metadata


@pytest.mark.parametrize("token, message", [
    (None, "no access token"),
    ("not-a-jwt", "not a valid JWT"),
    (api.AccessToken("other", SECRET).with_identity("a").to_jwt(), "unknown API key"),
    (api.AccessToken(KEY, "wrong" * 8).with_identity("a").to_jwt(), "signature is invalid"),
    (mint().with_ttl(datetime.timedelta(seconds=-60)).to_jwt(), "expired"),
])
def test_bad_tokens_are_refused_with_a_specific_reason(token, message):
    with pytest.raises(AuthError, match=message):
        TokenVerifier({KEY: SECRET}).verify(token)


def test_join_needs_room_join_and_a_room():
    """As livekit-server: a missing grant is a 401, a token naming no room (or no identity) a 400."""
    verifier = TokenVerifier({KEY: SECRET})
    with pytest.raises(PermissionDenied, match="roomJoin"):
        join.authorize(verifier.verify(mint(room="r").to_jwt()), JoinParams())
    with pytest.raises(JoinRefused, match="no room name"):
        join.authorize(verifier.verify(jwt.encode({"iss": KEY, "sub": "a", "video": {"roomJoin": True}}, SECRET,
                                                  algorithm="HS256")), JoinParams())
    with pytest.raises(JoinRefused, match="identity cannot be empty"):
        join.authorize(verifier.verify(jwt.encode({"iss": KEY, "video": {"roomJoin": True, "room": "r"}}, SECRET,
                                                  algorithm="HS256")), JoinParams())


def test_join_settings_in_the_query_follow_livekit_server():
    params = join.params_from_query({"auto_subscribe": "0", "adaptive_stream": "1", "protocol": "16",
                                     "client_protocol": "1", "sdk": "python", "version": "1.1.21",
                                     "reconnect": "1", "sid": "PA_x", "reconnect_reason": "1",
                                     "capabilities": "CAP_PACKET_TRAILER,CAP_NONSENSE"}, strict=True)
    assert (params.auto_subscribe, params.adaptive_stream, params.reconnect, params.participant_sid) == \
        (False, True, True, "PA_x")
    assert params.client.sdk == models.ClientInfo.SDK.PYTHON and params.client.client_protocol == 1
    assert list(params.client.capabilities) == [models.ClientInfo.Capability.CAP_PACKET_TRAILER]
    assert join.params_from_query({"auto_subscribe": "yes"}, strict=True).auto_subscribe is False  # "1"/"true"
    with pytest.raises(JoinRefused, match="cannot decode attributes"):
        join.params_from_query({"attributes": "!!"}, strict=True)
    assert join.params_from_query({"attributes": "!!"}, strict=False).attributes == {}


def test_publish_only_connection_gets_its_own_identity_and_no_subscribe():
    claims = TokenVerifier({KEY: SECRET}).verify(mint(room_join=True, room="r").to_jwt())
    joined = join.authorize(claims, JoinParams(publish="screen"))
    assert joined.identity == "alice#screen" and not joined.video.can_subscribe


def test_room_admin_is_scoped_to_the_room_it_names():
    claims = TokenVerifier({KEY: SECRET}).verify(mint(room_admin=True, room="r").to_jwt())
    claims.require_room_admin("r")
    with pytest.raises(PermissionDenied, match="not 'other'"):
        claims.require_room_admin("other")
    nowhere = TokenVerifier({KEY: SECRET}).verify(mint(room_admin=True).to_jwt())
    with pytest.raises(PermissionDenied, match="names no room"):
        nowhere.require_room_admin("r")


def test_a_non_object_video_claim_is_refused():
    token = jwt.encode({"iss": KEY, "sub": "a", "video": "yes"}, SECRET, algorithm="HS256")
    with pytest.raises(AuthError, match="'video' claim"):
        TokenVerifier({KEY: SECRET}).verify(token)
