"""A room closed by its timeout stays closed for the agents it disconnected.

When the last human leaves, the room closes ``departure_timeout`` later and every agent still in it is told
why (``ROOM_CLOSED``, no reconnect): that is how a dispatched job learns its room is over. An agent whose
connection dropped around that moment tries to resume its session. livekit-server then re-creates the room
and asks for a full reconnect, which puts the agent alone in a new room until that room's empty timeout
(300 s by default): its job runs on past its room. The embedded server answers such a resume with the reason
the session ended and creates nothing.
"""

from __future__ import annotations

import contextlib

import aiohttp
import pytest
from livekit import api
from livekit.protocol import models
from livekit.protocol import rtc as signal

from .helpers import TIMEOUT, engine_difference, make_token, unique_room, wait_until


def agent_token(server, room: str) -> str:
    return make_token(server, "agent-of-the-job", room, kind="agent", agent=True)


async def signal_messages(ws: aiohttp.ClientWebSocketResponse):
    """The SignalResponses the server sends until it closes the websocket."""
    while (message := await ws.receive(timeout=TIMEOUT)).type == aiohttp.WSMsgType.BINARY:
        yield signal.SignalResponse.FromString(message.data)


async def leave_of(ws: aiohttp.ClientWebSocketResponse) -> signal.LeaveRequest | None:
    async for response in signal_messages(ws):
        if response.WhichOneof("message") == "leave":
            return response.leave
    return None


@contextlib.asynccontextmanager
async def closed_room_with_an_agent(lk_server, lk_api, participants):
    """A room whose human left and which then closed, with the agent it disconnected: yields (room, agent sid)."""
    room = unique_room("closing")
    await lk_api.room.create_room(api.CreateRoomRequest(name=room, departure_timeout=1, empty_timeout=60))
    human = await participants(room, "human")
    token = agent_token(lk_server, room)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=4 * TIMEOUT)) as session:
        async with session.ws_connect(f"{lk_server.url}/rtc", params={"protocol": "16", "sdk": "python"},
                                      headers={"Authorization": f"Bearer {token}"}) as ws:
            first = signal.SignalResponse.FromString((await ws.receive(timeout=TIMEOUT)).data)
            agent_sid = first.join.participant.sid
            await human.room.disconnect()
            leave = await leave_of(ws)
        assert leave is not None, "the agent was not told why its session ended"
        assert leave.reason == models.DisconnectReason.ROOM_CLOSED
        assert leave.action == signal.LeaveRequest.Action.DISCONNECT and not leave.can_reconnect

        async def room_is_gone() -> bool:
            return not (await lk_api.room.list_rooms(api.ListRoomsRequest(names=[room]))).rooms

        await wait_until(room_is_gone, "the closed room is no longer listed")
        yield room, agent_sid, session, token


async def test_agents_left_in_a_room_are_told_it_closed(lk_server, lk_api, participants):
    async with closed_room_with_an_agent(lk_server, lk_api, participants) as (room, _, _, _):
        assert room


@engine_difference("livekit-server", reason="re-creates the closed room for the resume and asks for a full reconnect")
async def test_a_resume_after_the_room_closed_is_told_so_and_creates_no_room(lk_server, lk_api, participants):
    async with closed_room_with_an_agent(lk_server, lk_api, participants) as (room, agent_sid, session, token):
        async with session.ws_connect(f"{lk_server.url}/rtc",
                                      params={"protocol": "16", "sdk": "python", "reconnect": "1", "sid": agent_sid},
                                      headers={"Authorization": f"Bearer {token}"}) as ws:
            leave = await leave_of(ws)
        assert leave is not None
        assert leave.action == signal.LeaveRequest.Action.DISCONNECT and not leave.can_reconnect
        assert leave.reason == models.DisconnectReason.ROOM_CLOSED
        assert not (await lk_api.room.list_rooms(api.ListRoomsRequest(names=[room]))).rooms


async def test_a_resume_of_an_unknown_session_is_asked_to_reconnect(lk_server):
    room = unique_room()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT)) as session:
        async with session.ws_connect(f"{lk_server.url}/rtc", params={"reconnect": "1", "sid": "PA_neverexisted",
                                                                      "protocol": "16", "sdk": "python"},
                                      headers={"Authorization": f"Bearer {make_token(lk_server, 'ghost', room)}"}
                                      ) as ws:
            leave = await leave_of(ws)
    assert leave is not None and leave.action == signal.LeaveRequest.Action.RECONNECT


@engine_difference("livekit-server", reason="lets the agent rejoin with its token, re-creating the closed room")
async def test_an_agent_rejoining_its_closed_room_with_its_token_is_refused(lk_server, lk_api, participants):
    """An SDK that cannot resume rejoins with the token it has; for the agent of a job whose room closed that
    would re-create the room and keep the job alive in it."""
    async with closed_room_with_an_agent(lk_server, lk_api, participants) as (room, _, session, token):
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            async with session.ws_connect(f"{lk_server.url}/rtc", params={"protocol": "16", "sdk": "python"},
                                          headers={"Authorization": f"Bearer {token}"}):
                pass
        assert refused.value.status == 401
        async with session.get(f"{lk_server.http_url}/rtc/validate", headers={"Authorization": f"Bearer {token}"}
                               ) as response:
            assert response.status == 401 and "ROOM_CLOSED" in await response.text()
        assert not (await lk_api.room.list_rooms(api.ListRoomsRequest(names=[room]))).rooms


async def test_the_agent_of_a_closed_room_joins_it_again_with_a_new_token(lk_server, lk_api, participants):
    async with closed_room_with_an_agent(lk_server, lk_api, participants) as (room, _, _, _):
        agent = await participants(room, "agent-of-the-job", kind="agent", agent=True)
        assert agent.room.isconnected()
