"""livekit-server's limits and grant rules: what it refuses, the embedded server refuses the same way.

Limits (livekit-server v1.13.5 defaults, pkg/config/config.go): room and participant metadata 512 KiB, a
participant's attributes 64 KiB (keys and values together), room names, identities and names 256 bytes. The
service API refuses a value over a limit with Twirp ``invalid_argument`` (HTTP 400); a join over a limit is
refused with HTTP 400 and a message saying which; a participant's own update over a limit is not applied.
"""

from __future__ import annotations

import asyncio
import contextlib

import aiohttp
import pytest
from livekit import api, rtc

from .helpers import TIMEOUT, engine_difference, make_token, service, unique_room, wait_until

KIB = 1024
MAX_METADATA = 512 * KIB
MAX_ATTRIBUTES = 64 * KIB
MAX_NAME = 256


async def twirp_error(call) -> api.TwirpError:
    with pytest.raises(api.TwirpError) as failed:
        await call
    return failed.value


def is_invalid_argument(error: api.TwirpError) -> bool:
    return error.status == 400 and error.code == "invalid_argument"


# --- grants ------------------------------------------------------------------------------------------------


async def test_room_admin_naming_no_room_administers_no_room(participants, lk_server, lk_api):
    room = unique_room()
    await participants(room, "alice")
    everywhere = make_token(lk_server, "svc", None, room_admin=True)  # roomAdmin, but for which room?
    async with service(lk_server, token=everywhere) as client:
        for call in (client.room.list_participants(api.ListParticipantsRequest(room=room)),
                     client.room.update_room_metadata(api.UpdateRoomMetadataRequest(room=room, metadata="mine")),
                     client.room.update_participant(api.UpdateParticipantRequest(room=room, identity="alice",
                                                                                 metadata="hijacked")),
                     client.agent_dispatch.create_dispatch(api.CreateAgentDispatchRequest(room=room,
                                                                                           agent_name="x"))):
            error = await twirp_error(call)
            assert error.status in (401, 403), f"{error.status} {error.code}: {error.message}"
    (info,) = (await lk_api.room.list_rooms(api.ListRoomsRequest(names=[room]))).rooms
    assert info.metadata == ""
    assert (await participants.admin_view(room, "alice")).metadata == ""
    assert all(d.agent_name != "x" for d in await lk_api.agent_dispatch.list_dispatch(room))


# --- the service API ---------------------------------------------------------------------------------------


async def test_room_metadata_up_to_512_kib(lk_api):
    room = unique_room()
    await lk_api.room.create_room(api.CreateRoomRequest(name=room))
    updated = await lk_api.room.update_room_metadata(api.UpdateRoomMetadataRequest(room=room, metadata="m" * MAX_METADATA))
    assert len(updated.metadata) == MAX_METADATA
    error = await twirp_error(lk_api.room.update_room_metadata(
        api.UpdateRoomMetadataRequest(room=room, metadata="m" * (MAX_METADATA + 1))))
    assert is_invalid_argument(error) and "metadata" in error.message
    (info,) = (await lk_api.room.list_rooms(api.ListRoomsRequest(names=[room]))).rooms
    assert len(info.metadata) == MAX_METADATA


async def test_create_room_checks_name_length_and_metadata_size(lk_api):
    assert (await lk_api.room.create_room(api.CreateRoomRequest(name="n" * MAX_NAME))).name == "n" * MAX_NAME
    error = await twirp_error(lk_api.room.create_room(api.CreateRoomRequest(name="n" * (MAX_NAME + 1))))
    assert is_invalid_argument(error) and "room name length" in error.message
    room = unique_room()
    error = await twirp_error(lk_api.room.create_room(api.CreateRoomRequest(name=room,
                                                                            metadata="m" * (MAX_METADATA + 1))))
    assert is_invalid_argument(error) and "metadata" in error.message
    assert not (await lk_api.room.list_rooms(api.ListRoomsRequest(names=[room]))).rooms


@pytest.mark.parametrize(("field", "too_big", "word"), [
    ("metadata", {"metadata": "m" * (MAX_METADATA + 1)}, "metadata"),
    ("attributes", {"attributes": {"k": "v" * (MAX_ATTRIBUTES - 1 + 1)}}, "attribute"),  # 1 + 65536 bytes
    ("name", {"name": "n" * (MAX_NAME + 1)}, "name length"),
])
async def test_update_participant_refuses_values_over_the_limits(participants, lk_api, field, too_big, word):
    room = unique_room()
    await participants(room, "alice")
    error = await twirp_error(lk_api.room.update_participant(api.UpdateParticipantRequest(
        room=room, identity="alice", **too_big)))
    assert is_invalid_argument(error) and word in error.message
    seen = await participants.admin_view(room, "alice")
    assert (seen.metadata, dict(seen.attributes), seen.name) == ("", {}, "")


async def test_update_participant_accepts_values_at_the_limits(participants, lk_api):
    room = unique_room()
    await participants(room, "alice")
    attributes = {"k": "v" * (MAX_ATTRIBUTES - 1)}  # 1 + 65535 bytes: exactly the limit
    updated = await lk_api.room.update_participant(api.UpdateParticipantRequest(
        room=room, identity="alice", metadata="m" * MAX_METADATA, attributes=attributes, name="n" * MAX_NAME))
    assert (len(updated.metadata), dict(updated.attributes), updated.name) == (MAX_METADATA, attributes,
                                                                             "n" * MAX_NAME)


async def test_oversized_twirp_bodies_get_a_4xx(lk_server, lk_api):
    room = unique_room()
    await lk_api.room.create_room(api.CreateRoomRequest(name=room))
    error = await twirp_error(lk_api.room.update_room_metadata(
        api.UpdateRoomMetadataRequest(room=room, metadata="m" * (2 * 1024 * KIB))))  # a 2 MB body
    assert is_invalid_argument(error)
    headers = {"Authorization": f"Bearer {make_token(lk_server, 'svc', None, room_list=True)}",
               "Content-Type": "application/json"}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        async with session.post(f"{lk_server.http_url}/twirp/livekit.RoomService/ListRooms",
                                data=b"x" * (20 * 1024 * KIB), headers=headers) as response:
            assert 400 <= response.status < 500
            assert (await response.json())["code"] in ("malformed", "invalid_argument")


# --- joining -----------------------------------------------------------------------------------------------


async def refusal(lk_server, token: str) -> tuple[int, str]:
    """(status of the websocket upgrade at /rtc, the text /rtc/validate gives for the same token)."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT)) as session:
        headers = {"Authorization": f"Bearer {token}"}
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            async with session.ws_connect(f"{lk_server.url}/rtc", headers=headers):
                pass
        async with session.get(f"{lk_server.http_url}/rtc/validate", headers=headers) as response:
            return refused.value.status, f"{response.status} {await response.text()}"


@pytest.mark.parametrize("length", [MAX_NAME + 1, 6000])
async def test_join_with_an_identity_over_256_bytes_is_refused_saying_so(lk_server, participants, length):
    token = make_token(lk_server, "i" * length, unique_room())
    status, explained = await refusal(lk_server, token)
    assert status == 400
    assert explained.startswith("400 ") and "identity length exceeds limits" in explained
    with pytest.raises(rtc.ConnectError):
        await participants(unique_room(), token=token)


async def test_join_with_an_identity_of_256_bytes_is_accepted(participants):
    peer = await participants(unique_room(), "i" * MAX_NAME)
    assert peer.local.identity == "i" * MAX_NAME


async def test_join_to_a_room_name_over_256_bytes_is_refused_saying_so(lk_server):
    status, explained = await refusal(lk_server, make_token(lk_server, "alice", "r" * (MAX_NAME + 1)))
    assert status == 400 and "room name length exceeds limits" in explained


@engine_difference("livekit-server", reason="accepts the upgrade request, then fails the session with HTTP 500")
@pytest.mark.parametrize("claims", [{"metadata": "m" * (MAX_METADATA + 1)},
                                    {"attributes": {"k": "v" * MAX_ATTRIBUTES}}], ids=["metadata", "attributes"])
async def test_join_with_token_metadata_or_attributes_over_the_limit_is_refused_with_a_4xx(lk_server, claims):
    status, _ = await refusal(lk_server, make_token(lk_server, "alice", unique_room(), **claims))
    assert 400 <= status < 500


async def test_join_with_token_metadata_or_attributes_over_the_limit_is_refused(lk_server):
    for claims in ({"metadata": "m" * (MAX_METADATA + 1)}, {"attributes": {"k": "v" * MAX_ATTRIBUTES}}):
        status, _ = await refusal(lk_server, make_token(lk_server, "alice", unique_room(), **claims))
        assert status >= 400


async def test_attributes_in_the_join_need_can_update_own_metadata(lk_server):
    import base64
    import json

    attributes = base64.urlsafe_b64encode(json.dumps({"k": "v"}).encode()).decode()
    token = make_token(lk_server, "alice", unique_room(), can_update_own_metadata=False)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT)) as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            async with session.ws_connect(f"{lk_server.url}/rtc", params={"attributes": attributes},
                                          headers={"Authorization": f"Bearer {token}"}):
                pass
    assert refused.value.status == 401


# --- a participant's own updates ---------------------------------------------------------------------------


@pytest.mark.parametrize(("update", "value"), [
    ("set_metadata", "m" * (MAX_METADATA + 1)),
    ("set_name", "n" * (MAX_NAME + 1)),
    ("set_attributes", {"k": "v" * MAX_ATTRIBUTES}),
])
async def test_own_update_over_a_limit_is_not_applied(participants, update, value):
    room = unique_room()
    alice = await participants(room, "alice")
    with contextlib.suppress(Exception):  # SDK versions differ: some raise on the refusal, some do not
        await asyncio.wait_for(getattr(alice.local, update)(value), TIMEOUT)
    await alice.local.set_metadata("after")  # a later update within the limits still goes through

    async def applied() -> bool:
        return (await participants.admin_view(room, "alice")).metadata == "after"

    await wait_until(applied, "the update within the limits is applied")
    seen = await participants.admin_view(room, "alice")
    assert len(seen.name) <= MAX_NAME and dict(seen.attributes) == {}
