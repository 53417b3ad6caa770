"""Room lifetimes with server-wide timeouts (DevServer options), seen through livekit-api and the real SDK."""

from __future__ import annotations

import asyncio

import pytest
from livekit import api, rtc

from nbagents.server import DevServer


@pytest.fixture(scope="module")
def quick_server():
    with DevServer(empty_timeout=1, departure_timeout=1) as credentials:
        yield credentials


async def room_names(lk: api.LiveKitAPI) -> list[str]:
    return [r.name for r in (await lk.room.list_rooms(api.ListRoomsRequest())).rooms]


async def wait_for_room_gone(lk: api.LiveKitAPI, name: str, timeout: float = 30.0) -> None:
    for _ in range(int(timeout / 0.1)):
        if name not in await room_names(lk):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"room {name!r} was not closed")


async def test_server_wide_timeouts_close_rooms_nobody_joined_and_rooms_everyone_left(quick_server):
    url, key, secret = quick_server
    async with api.LiveKitAPI(url.replace("ws://", "http://"), key, secret) as lk:
        created = await lk.room.create_room(api.CreateRoomRequest(name="never-joined"))
        assert (created.empty_timeout, created.departure_timeout) == (1, 1)
        await wait_for_room_gone(lk, "never-joined")

        room = rtc.Room()
        token = api.AccessToken(key, secret).with_identity("a").with_grants(
            api.VideoGrants(room_join=True, room="left-behind")).to_jwt()
        await room.connect(url, token)
        assert "left-behind" in await room_names(lk)
        await room.disconnect()
        await wait_for_room_gone(lk, "left-behind")


async def test_create_room_overrides_the_server_wide_timeouts(quick_server):
    url, key, secret = quick_server
    async with api.LiveKitAPI(url.replace("ws://", "http://"), key, secret) as lk:
        created = await lk.room.create_room(api.CreateRoomRequest(name="patient", empty_timeout=600))
        assert created.empty_timeout == 600
        await lk.room.create_room(api.CreateRoomRequest(name="impatient"))
        await wait_for_room_gone(lk, "impatient")  # closes after 1 s ...
        assert "patient" in await room_names(lk)  # ... while the 600 s room is still there
        await lk.room.delete_room(api.DeleteRoomRequest(room="patient"))
