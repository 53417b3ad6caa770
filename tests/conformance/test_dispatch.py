"""Agent dispatch: the worker protocol at /agent, automatic dispatch, AgentDispatchService and token dispatch.

A raw worker (tests/conformance/agent_worker.py) registers over the real websocket and answers the server's
availability requests itself; the job token it is given must let it join the room as an agent.
"""

from __future__ import annotations

import asyncio
import uuid

import aiohttp
import jwt
import pytest
from livekit import api, rtc
from livekit.protocol import agent as proto

from .agent_worker import dispatch_to, registered_worker, worker_token
from .helpers import TIMEOUT, make_token, unique_room, wait_until


def unique_agent(prefix: str = "agent") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def config_token(server, room: str, identity: str, *agents: api.RoomAgentDispatch) -> str:
    return (api.AccessToken(server.api_key, server.api_secret).with_identity(identity)
            .with_grants(api.VideoGrants(room_join=True, room=room))
            .with_room_config(api.RoomConfiguration(agents=list(agents))).to_jwt())


async def test_a_worker_token_must_grant_agent(lk_server):
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(f"{lk_server.url}/agent",
                                     headers={"Authorization": f"Bearer {worker_token(lk_server, agent=False)}"})
    assert refused.value.status == 401


async def test_registration_is_answered_first_with_a_worker_id(lk_server):
    async with registered_worker(lk_server) as worker:
        assert worker.registration.worker_id
        assert worker.registration.server_info.protocol > 0


async def test_first_join_dispatches_one_job_to_an_unnamed_worker_only(lk_server, participants):
    room = unique_room("auto")
    async with registered_worker(lk_server) as unnamed, registered_worker(lk_server, unique_agent()) as named:
        human = await participants(room, "alice")
        job = await unnamed.job_request(room)
        assert job.id and job.room.name == room and job.agent_name == ""
        assert job.type == proto.JobType.JT_ROOM
        assignment = await unnamed.accept(job, identity="helper")
        assert assignment.job.id == job.id and assignment.token

        claims = jwt.decode(assignment.token, options={"verify_signature": False})
        assert claims["sub"] == "helper"
        assert claims["kind"] == "agent"
        assert claims["video"]["roomJoin"] is True and claims["video"]["room"] == room
        assert claims["video"]["agent"] is True

        agent_room = rtc.Room()
        await asyncio.wait_for(agent_room.connect(lk_server.url, assignment.token), TIMEOUT)
        try:
            agent = await human.wait_for_participant("helper")
            assert agent.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT
        finally:
            await agent_room.disconnect()
        assert not [j for j in named.of_kind("availability") if j.job.room.name == room]
        assert len([j for j in unnamed.of_kind("availability") if j.job.room.name == room]) == 1


async def test_create_room_dispatches_the_automatic_agent(lk_api, lk_server):
    room = unique_room("created")
    async with registered_worker(lk_server) as worker:
        await lk_api.room.create_room(api.CreateRoomRequest(name=room))
        job = await worker.job_request(room)
        assert job.agent_name == ""


async def test_create_list_delete_dispatch(lk_api, lk_server, participants):
    room = unique_room("explicit")
    name = unique_agent("explicit")
    async with registered_worker(lk_server, name) as worker:
        await participants(room, "alice")
        dispatch, job = await dispatch_to(lk_api, lk_server, worker,
                                          api.CreateAgentDispatchRequest(agent_name=name, room=room, metadata="from the API"))
        assert dispatch.id and dispatch.agent_name == name and dispatch.room == room
        assert dispatch.metadata == "from the API"
        assert job.agent_name == name and job.metadata == "from the API" and job.dispatch_id == dispatch.id
        await worker.accept(job)

        listed = await lk_api.agent_dispatch.list_dispatch(room_name=room)
        mine = [d for d in listed if d.id == dispatch.id]
        assert len(mine) == 1 and mine[0].agent_name == name
        one = await lk_api.agent_dispatch.get_dispatch(dispatch_id=dispatch.id, room_name=room)
        assert one is not None and one.id == dispatch.id

        mark = len(worker.received)
        deleted = await lk_api.agent_dispatch.delete_dispatch(dispatch.id, room)
        assert deleted.id == dispatch.id
        termination = await worker.next(lambda m: m.WhichOneof("message") == "termination", after=mark)
        assert termination.termination.job_id == job.id

        async def gone() -> bool:
            return dispatch.id not in [d.id for d in await lk_api.agent_dispatch.list_dispatch(room_name=room)]
        await wait_until(gone, "the deleted dispatch is no longer listed")


async def test_named_agents_are_not_dispatched_automatically(lk_api, lk_server, participants):
    room = unique_room("named")
    name = unique_agent("named")
    async with registered_worker(lk_server, name) as named:
        await participants(room, "alice")
        # an explicit dispatch for another room is the marker that the server has handled this room's join
        other = unique_room("marker")
        await dispatch_to(lk_api, lk_server, named, api.CreateAgentDispatchRequest(agent_name=name, room=other))
        assert not [a for a in named.of_kind("availability") if a.job.room.name == room]


async def test_create_dispatch_creates_a_missing_room(lk_api, lk_server):
    room = unique_room("missing")
    name = unique_agent("creator")
    async with registered_worker(lk_server, name) as worker:
        await dispatch_to(lk_api, lk_server, worker, api.CreateAgentDispatchRequest(agent_name=name, room=room))
        rooms = await lk_api.room.list_rooms(api.ListRoomsRequest(names=[room]))
        assert [r.name for r in rooms.rooms] == [room]


async def test_token_room_config_dispatches_its_agents_instead_of_the_automatic_one(lk_server, participants):
    room = unique_room("token")
    name = unique_agent("token")
    async with registered_worker(lk_server, name) as named, registered_worker(lk_server) as unnamed:
        token = config_token(lk_server, room, "alice", api.RoomAgentDispatch(agent_name=name, metadata="from the token"))
        human = await participants(room, "alice", token=token)
        job = await named.job_request(room)
        assert job.agent_name == name and job.metadata == "from the token"
        assignment = await named.accept(job, identity="token-agent")
        agent_room = rtc.Room()
        await asyncio.wait_for(agent_room.connect(lk_server.url, assignment.token), TIMEOUT)
        try:
            agent = await human.wait_for_participant("token-agent")
            assert agent.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT
            assert agent.attributes.get("lk.agent_name") == name
        finally:
            await agent_room.disconnect()
        assert not [a for a in unnamed.of_kind("availability") if a.job.room.name == room]


async def test_a_declined_job_goes_to_another_worker(lk_server, participants):
    room = unique_room("declined")
    name = unique_agent("pair")
    async with registered_worker(lk_server, name) as first, registered_worker(lk_server, name) as second:
        token = config_token(lk_server, room, "alice", api.RoomAgentDispatch(agent_name=name))
        await participants(room, "alice", token=token)

        def asked(worker) -> list[proto.Job]:
            return [a.job for a in worker.of_kind("availability") if a.job.room.name == room]
        await wait_until(lambda: asked(first) or asked(second), "a worker is asked to take the job")
        declining, other = (first, second) if asked(first) else (second, first)
        job = asked(declining)[0]
        await declining.send(proto.WorkerMessage(availability=proto.AvailabilityResponse(job_id=job.id, available=False)))
        retried = await other.job_request(room)
        assert retried.dispatch_id == job.dispatch_id
        assignment = await other.accept(retried)
        assert assignment.token


async def test_the_agent_leaves_when_the_room_holds_only_agents(lk_server, participants):
    room = unique_room("departed")
    async with registered_worker(lk_server) as worker:
        token = (api.AccessToken(lk_server.api_key, lk_server.api_secret).with_identity("alice")
                 .with_grants(api.VideoGrants(room_join=True, room=room))
                 .with_room_config(api.RoomConfiguration(departure_timeout=1)).to_jwt())
        human = await participants(room, "alice", token=token)
        assignment = await worker.accept(await worker.job_request(room), identity="stayer")
        agent_room = rtc.Room()
        disconnected = asyncio.Event()
        agent_room.on("disconnected", lambda *_: disconnected.set())
        await asyncio.wait_for(agent_room.connect(lk_server.url, assignment.token), TIMEOUT)
        try:
            await human.wait_for_participant("stayer")
            await human.room.disconnect()
            await asyncio.wait_for(disconnected.wait(), TIMEOUT)
        finally:
            await agent_room.disconnect()


async def test_dispatches_of_a_missing_room_or_id_are_an_error(lk_api, participants):
    # livekit-server answers 503 "no response from servers" (no node hosts the room); the embedded server
    # a Twirp not_found that says which room or dispatch is missing. Both refuse.
    with pytest.raises(api.TwirpError):
        await lk_api.agent_dispatch.list_dispatch(room_name=unique_room("nowhere"))
    room = unique_room("errors")
    await participants(room, "alice")
    with pytest.raises(api.TwirpError):
        await lk_api.agent_dispatch.delete_dispatch("AD_doesnotexist", room)


async def test_a_dispatch_lists_its_jobs(lk_api, lk_server, participants):
    room = unique_room("jobs")
    name = unique_agent("jobs")
    async with registered_worker(lk_server, name) as worker:
        await participants(room, "alice")
        dispatch, job = await dispatch_to(lk_api, lk_server, worker, api.CreateAgentDispatchRequest(agent_name=name, room=room))
        await worker.accept(job, identity="lister")

        async def listed_job() -> bool:
            found = await lk_api.agent_dispatch.get_dispatch(dispatch_id=dispatch.id, room_name=room)
            return found is not None and [j.id for j in found.state.jobs] == [job.id]
        await wait_until(listed_job, "the dispatch lists its job")
        found = await lk_api.agent_dispatch.get_dispatch(dispatch_id=dispatch.id, room_name=room)
        assert found.state.jobs[0].state.participant_identity == "lister"
