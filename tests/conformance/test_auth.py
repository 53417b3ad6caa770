"""Access tokens: refused joins fail with a clear error, and the service API checks its grants."""

from __future__ import annotations

import datetime
import time

import aiohttp
import jwt
import pytest
from livekit import api, rtc

from .helpers import engine_difference, make_token, service, unique_room

WRONG_SECRET = "a-secret-this-server-does-not-know-0123456789"  # 32+ bytes: a realistic HMAC key


def signed(server, claims: dict) -> str:
    """A token with exactly these claims (for shapes livekit-api refuses to mint)."""
    now = int(time.time())
    return jwt.encode({"iss": server.api_key, "nbf": now, "exp": now + 600, **claims}, server.api_secret,
                      algorithm="HS256")


async def refused_join(participants, lk_server, room: str, **token_options) -> tuple[int, str]:
    """The SDK's join is refused; what the server says of the same token at /rtc/validate: (status, body).

    The server's own answer is checked, not how the SDK words its error (which changes between versions).
    """
    with pytest.raises(rtc.ConnectError):
        await participants(room, "intruder", **token_options)
    token = make_token(lk_server, "intruder", room, **token_options)
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{lk_server.http_url}/rtc/validate", params={"access_token": token}) as answer:
            return answer.status, await answer.text()


async def test_join_with_a_bad_signature_is_refused(participants, lk_server):
    status, reason = await refused_join(participants, lk_server, unique_room(), secret=WRONG_SECRET)
    assert status == 401 and "signature is invalid" in reason


async def test_join_with_an_expired_token_is_refused(participants, lk_server):
    status, reason = await refused_join(participants, lk_server, unique_room(), ttl=datetime.timedelta(minutes=-5))
    assert status == 401 and "expired" in reason


async def test_join_without_room_join_grant_is_refused(participants, lk_server):
    status, _ = await refused_join(participants, lk_server, unique_room(), room_join=False)
    assert status == 401


@engine_difference("livekit-server", reason="refuses a join without the grant with 'permissions denied'")
async def test_join_refusal_names_the_missing_room_join_grant(participants, lk_server):
    _, reason = await refused_join(participants, lk_server, unique_room(), room_join=False)
    assert "roomJoin" in reason


async def test_join_with_a_token_naming_no_room_is_refused(participants, lk_server):
    token = signed(lk_server, {"sub": "nomad", "video": {"roomJoin": True}})
    with pytest.raises(rtc.ConnectError):
        await participants(unique_room(), "nomad", token=token)


async def test_refused_join_leaves_the_room_untouched(participants, lk_api, lk_server):
    room = unique_room()
    alice = await participants(room, "alice")
    await refused_join(participants, lk_server, room, secret=WRONG_SECRET)
    listed = await lk_api.room.list_participants(api.ListParticipantsRequest(room=room))
    assert [p.identity for p in listed.participants] == ["alice"]
    assert not alice.events.events("participant_connected")


# --- the service API (Twirp RoomService) ----------------------------------------------------------------
#
# Both engines refuse what they must refuse; they word it differently. livekit-server answers a bad token
# with a bare HTTP 401 (livekit-api reports code "unknown") and a missing grant with 401 "unauthenticated:
# permissions denied"; the embedded server answers Twirp errors that name the problem (401
# unauthenticated, 403 permission_denied naming the grant). The common contract is checked for every
# engine, the wording in the tests marked as known differences.


async def twirp_error(call) -> api.TwirpError:
    with pytest.raises(api.TwirpError) as failed:
        await call
    return failed.value


def is_refused_as_unauthorized(error: api.TwirpError) -> bool:
    return error.status in (401, 403) and error.code in ("unauthenticated", "permission_denied")


BAD_TOKENS = {
    "bad-signature": lambda server: make_token(server, "svc", None, room_list=True, secret=WRONG_SECRET),
    "expired": lambda server: make_token(server, "svc", None, room_list=True, ttl=datetime.timedelta(minutes=-5)),
    "not-a-jwt": lambda server: "not-a-jwt",
}


@pytest.mark.parametrize("bad_token", BAD_TOKENS)
async def test_service_api_refuses_a_bad_token_with_401(lk_server, bad_token):
    async with service(lk_server, token=BAD_TOKENS[bad_token](lk_server)) as client:
        error = await twirp_error(client.room.list_rooms(api.ListRoomsRequest()))
    assert error.status == 401


@engine_difference("livekit-server", reason="answers a bad token with a bare HTTP 401 that is not a Twirp error")
@pytest.mark.parametrize("bad_token", BAD_TOKENS)
async def test_service_api_bad_token_is_a_twirp_unauthenticated_error_saying_why(lk_server, bad_token):
    async with service(lk_server, token=BAD_TOKENS[bad_token](lk_server)) as client:
        error = await twirp_error(client.room.list_rooms(api.ListRoomsRequest()))
    assert error.code == "unauthenticated" and error.message


async def test_list_rooms_needs_room_list(lk_server):
    async with service(lk_server, token=make_token(lk_server, "svc", None, room_create=True)) as client:
        error = await twirp_error(client.room.list_rooms(api.ListRoomsRequest()))
    assert is_refused_as_unauthorized(error)


async def test_create_and_delete_room_need_room_create(lk_server):
    async with service(lk_server, token=make_token(lk_server, "svc", None, room_list=True)) as client:
        error = await twirp_error(client.room.create_room(api.CreateRoomRequest(name=unique_room())))
        assert is_refused_as_unauthorized(error)
        error = await twirp_error(client.room.delete_room(api.DeleteRoomRequest(room=unique_room())))
        assert is_refused_as_unauthorized(error)


async def test_create_room_with_room_create_grant(lk_server):
    name = unique_room()
    async with service(lk_server, token=make_token(lk_server, "svc", None, room_create=True)) as client:
        created = await client.room.create_room(api.CreateRoomRequest(name=name))
    assert created.name == name


async def test_participant_management_needs_room_admin(participants, lk_server):
    room = unique_room()
    await participants(room, "alice")
    joiner = make_token(lk_server, "svc", room)  # roomJoin for this room, but not roomAdmin
    async with service(lk_server, token=joiner) as client:
        error = await twirp_error(client.room.list_participants(api.ListParticipantsRequest(room=room)))
        assert is_refused_as_unauthorized(error)
        error = await twirp_error(client.room.remove_participant(api.RoomParticipantIdentity(room=room,
                                                                                            identity="alice")))
        assert is_refused_as_unauthorized(error)


async def test_room_admin_of_another_room_is_refused(participants, lk_server):
    room = unique_room()
    await participants(room, "alice")
    other_admin = make_token(lk_server, "svc", None, room_admin=True, room=unique_room())
    async with service(lk_server, token=other_admin) as client:
        error = await twirp_error(client.room.get_participant(api.RoomParticipantIdentity(room=room,
                                                                                         identity="alice")))
        assert is_refused_as_unauthorized(error)
        error = await twirp_error(client.room.update_participant(api.UpdateParticipantRequest(
            room=room, identity="alice", metadata="hijacked")))
        assert is_refused_as_unauthorized(error)
    assert (await participants.admin_view(room, "alice")).metadata == ""


@engine_difference("livekit-server", reason="answers every missing grant with 401 unauthenticated 'permissions denied'")
async def test_missing_grant_is_permission_denied_naming_the_grant(lk_server):
    async with service(lk_server, token=make_token(lk_server, "svc", None, room_create=True)) as client:
        error = await twirp_error(client.room.list_rooms(api.ListRoomsRequest()))
    assert error.code == "permission_denied" and error.status == 403 and "roomList" in error.message


async def test_room_admin_manages_its_own_room(participants, lk_server):
    room = unique_room()
    await participants(room, "alice")
    admin = make_token(lk_server, "svc", None, room_admin=True, room=room)
    async with service(lk_server, token=admin) as client:
        listed = await client.room.list_participants(api.ListParticipantsRequest(room=room))
    assert [p.identity for p in listed.participants] == ["alice"]


async def test_validate_endpoint_tells_good_tokens_from_bad(lk_server):
    """GET /rtc/validate is what clients call to learn why a join failed."""
    import aiohttp

    room = unique_room()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
        async def status(token: str) -> int:
            async with session.get(f"{lk_server.http_url}/rtc/validate", params={"access_token": token}) as response:
                return response.status

        assert await status(make_token(lk_server, "alice", room)) == 200
        assert await status(make_token(lk_server, "alice", room, secret=WRONG_SECRET)) == 401
        assert await status(make_token(lk_server, "alice", room, ttl=datetime.timedelta(minutes=-5))) == 401
