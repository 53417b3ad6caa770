"""Room lifecycle: created by the first join or by CreateRoom, closed by empty_timeout and departure_timeout."""

from __future__ import annotations

from livekit import api

from .helpers import unique_room, wait_until


async def listed_rooms(lk_api: api.LiveKitAPI, *names: str) -> dict[str, api.Room]:
    response = await lk_api.room.list_rooms(api.ListRoomsRequest(names=list(names)))
    return {room.name: room for room in response.rooms}


async def test_first_join_creates_the_room(participants, lk_api):
    room = unique_room()
    assert room not in await listed_rooms(lk_api, room)
    alice = await participants(room, "alice")
    listed = await listed_rooms(lk_api, room)
    assert listed[room].sid == await alice.room.sid
    await wait_until(lambda: _has_participants(lk_api, room, 1), "ListRooms counts the participant")


async def _has_participants(lk_api: api.LiveKitAPI, room: str, count: int) -> bool:
    return (await listed_rooms(lk_api, room))[room].num_participants == count


async def test_create_room_then_join_it(participants, lk_api):
    room = unique_room()
    created = await lk_api.room.create_room(api.CreateRoomRequest(name=room, metadata="prepared"))
    assert created.name == room and created.sid.startswith("RM_") and created.metadata == "prepared"
    assert room in await listed_rooms(lk_api, room)
    alice = await participants(room, "alice")
    assert await alice.room.sid == created.sid
    assert alice.room.metadata == "prepared"


async def test_create_room_again_returns_the_existing_room(lk_api):
    room = unique_room()
    first = await lk_api.room.create_room(api.CreateRoomRequest(name=room))
    again = await lk_api.room.create_room(api.CreateRoomRequest(name=room))
    assert again.sid == first.sid


async def test_list_rooms_filters_by_name(lk_api):
    wanted, other = unique_room(), unique_room()
    for name in (wanted, other):
        await lk_api.room.create_room(api.CreateRoomRequest(name=name))
    assert list(await listed_rooms(lk_api, wanted)) == [wanted]
    everything = await lk_api.room.list_rooms(api.ListRoomsRequest())
    assert {wanted, other} <= {room.name for room in everything.rooms}


async def test_empty_timeout_closes_a_room_nobody_joined(lk_api):
    short, long = unique_room("short"), unique_room("long")
    await lk_api.room.create_room(api.CreateRoomRequest(name=short, empty_timeout=1))
    await lk_api.room.create_room(api.CreateRoomRequest(name=long, empty_timeout=600))

    async def short_room_closed() -> bool:
        return short not in await listed_rooms(lk_api, short)

    await wait_until(short_room_closed, "the room with a 1 s empty_timeout closes", timeout=40)
    assert long in await listed_rooms(lk_api, long)  # closing went by the timeout, not by being empty


async def test_departure_timeout_closes_a_room_after_the_last_participant_left(participants, lk_api):
    short, long = unique_room("short"), unique_room("long")
    await lk_api.room.create_room(api.CreateRoomRequest(name=short, departure_timeout=1, empty_timeout=600))
    await lk_api.room.create_room(api.CreateRoomRequest(name=long, departure_timeout=600, empty_timeout=600))
    for room in (short, long):
        peer = await participants(room, f"visitor-{room}")
        await peer.room.disconnect()
        await wait_until(lambda room=room: _has_participants(lk_api, room, 0), f"{room} is empty again")

    async def short_room_closed() -> bool:
        return short not in await listed_rooms(lk_api, short)

    await wait_until(short_room_closed, "the room with a 1 s departure_timeout closes", timeout=40)
    assert long in await listed_rooms(lk_api, long)


async def test_room_stays_open_while_someone_is_in_it(participants, lk_api):
    room = unique_room()
    await lk_api.room.create_room(api.CreateRoomRequest(name=room, empty_timeout=1, departure_timeout=1))
    alice = await participants(room, "alice")
    other = unique_room("witness")  # a witness room with the same timeouts shows that time has passed
    await lk_api.room.create_room(api.CreateRoomRequest(name=other, empty_timeout=1))

    async def witness_closed() -> bool:
        return other not in await listed_rooms(lk_api, other)

    await wait_until(witness_closed, "the witness room closes", timeout=40)
    assert room in await listed_rooms(lk_api, room)
    assert alice.room.isconnected()
