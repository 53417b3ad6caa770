"""Token verification: real tokens minted by livekit-api, checked by the server's verifier."""

from __future__ import annotations

import datetime

import jwt
import pytest
from livekit import api
from livekit.protocol import models

from nbagents.server.auth import AuthError, PermissionDenied, TokenVerifier

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
    assert claims.require_join() == "r"


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
    verifier = TokenVerifier({KEY: SECRET})
    with pytest.raises(PermissionDenied, match="roomJoin"):
        verifier.verify(mint(room="r").to_jwt()).require_join()
    with pytest.raises(PermissionDenied, match="names no room"):
        verifier.verify(jwt.encode({"iss": KEY, "sub": "a", "video": {"roomJoin": True}}, SECRET,
                                   algorithm="HS256")).require_join()


def test_room_admin_is_scoped_to_its_room():
    claims = TokenVerifier({KEY: SECRET}).verify(mint(room_admin=True, room="r").to_jwt())
    claims.require_room_admin("r")
    with pytest.raises(PermissionDenied, match="not 'other'"):
        claims.require_room_admin("other")


def test_a_non_object_video_claim_is_refused():
    token = jwt.encode({"iss": KEY, "sub": "a", "video": "yes"}, SECRET, algorithm="HS256")
    with pytest.raises(AuthError, match="'video' claim"):
        TokenVerifier({KEY: SECRET}).verify(token)
