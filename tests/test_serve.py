"""``%agent serve``: a notebook executed by nbclient registers as an agent worker; a participant joining a new
room from outside gets the job dispatched to the notebook, receives what the entrypoint publishes, and the
job's shutdown hook runs once the participant has left and the room has closed.

Runs against every engine the session selects: the kernel reaches the server through LIVEKIT_URL.
"""

from __future__ import annotations

import ast
import asyncio
import os
import uuid
from pathlib import Path

import nbformat
import pytest
from livekit import api, rtc
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).parent / "notebooks" / "serve.ipynb"
TIMEOUT = 60.0


def _text(cell) -> str:
    parts = []
    for output in cell.outputs:
        parts.append(output.get("text", "") or output.get("data", {}).get("text/plain", ""))
    return "".join(parts)


def _result(cell) -> str:
    return "".join(o["data"]["text/plain"] for o in cell.outputs if o.output_type == "execute_result")


@pytest.mark.timeout(300)
async def test_agent_serve_runs_dispatched_jobs_in_the_notebook(lk_server, tmp_path):
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(notebook, timeout=240, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}})
    env = dict(os.environ, LIVEKIT_URL=lk_server.url, LIVEKIT_API_KEY=lk_server.api_key,
               LIVEKIT_API_SECRET=lk_server.api_secret)
    env.pop("NBAGENTS_ENGINE", None)
    cells = notebook.cells
    serve_at = next(i for i, c in enumerate(cells) if c.source.startswith("%agent serve --"))
    room_name = f"serve-{uuid.uuid4().hex[:8]}"
    room = rtc.Room()
    async with client.async_setup_kernel(env=env):
        for index in range(serve_at + 1):
            await client.async_execute_cell(cells[index], index)
        assert "serving" in _text(cells[serve_at]) and "automatic dispatch" in _text(cells[serve_at])

        received: asyncio.Queue[rtc.DataPacket] = asyncio.Queue()
        room.on("data_received", received.put_nowait)
        agent_joined: asyncio.Future[rtc.RemoteParticipant] = asyncio.get_running_loop().create_future()

        def on_participant_connected(participant: rtc.RemoteParticipant) -> None:
            if participant.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT and not agent_joined.done():
                agent_joined.set_result(participant)

        room.on("participant_connected", on_participant_connected)
        token = (api.AccessToken(lk_server.api_key, lk_server.api_secret).with_identity("alice")
                 .with_grants(api.VideoGrants(room_join=True, room=room_name))
                 .with_room_config(api.RoomConfiguration(departure_timeout=1)).to_jwt())
        try:
            await room.connect(lk_server.url, token)
            packet = await asyncio.wait_for(received.get(), TIMEOUT)
            assert packet.data.decode() == "hello alice" and packet.topic == "greeting"
            # the packet's sender may not be known to the SDK yet (livekit-server announces late): ask the room
            agent_identity = (await asyncio.wait_for(agent_joined, TIMEOUT)).identity
        finally:
            await room.disconnect()

        for index in range(serve_at + 1, len(cells)):
            await client.async_execute_cell(cells[index], index)
        client.set_widgets_metadata()  # what execute() does at the end: keep the widgets' state

    # the serving cell shows the worker's widget (dispatched jobs' inspectors join it later, outside any cell
    # execution, where nbclient records no widget messages) with a text fallback for static viewers
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in cells[serve_at].outputs)
    states = notebook.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"].values()
    assert "nbagents-serve" in [c for state in states for c in state["state"].get("_dom_classes", [])]

    wait_cell = next(c for c in cells if c.source.startswith("result = %agent wait"))
    state, persisted = ast.literal_eval(_result(wait_cell))
    assert state == "succeeded"
    farewell = persisted["farewell"]
    assert farewell["room"] == room_name and farewell["identity"] == agent_identity
    assert agent_identity.startswith("agent-AJ_")
    assert "room disconnected" in farewell["reason"]
    stop_cell = next(c for c in cells if c.source.startswith("%agent serve stop"))
    assert _result(stop_cell) == "[]"  # no job was still running
    status_cell = next(c for c in cells if c.source.startswith("%agent serve status"))
    assert "not serving" in _text(status_cell)
    job_id = agent_identity.removeprefix("agent-")
    assert (tmp_path / ".nbagents" / "jobs" / job_id / "result.json").exists()


# --- the worker driven from Python: explicit dispatch, termination, draining


async def greet_and_stay(ctx):
    async def farewell(reason):
        return {"reason": reason, "metadata": ctx.job.metadata, "agent_name": ctx.job.agent_name}

    ctx.add_shutdown_callback(farewell)
    await ctx.connect()
    participant = await ctx.wait_for_participant()
    await ctx.room.local_participant.publish_data(f"hello {participant.identity}: {ctx.job.metadata}")
    await asyncio.Event().wait()  # until the job is stopped


@pytest.fixture
def engine(lk_server):
    from nbagents.runtime.engine_session import shared_engine

    shared_engine().use((lk_server.url, lk_server.api_key, lk_server.api_secret))
    return lk_server


async def _join(server, room_name: str, **config) -> tuple[rtc.Room, asyncio.Queue[bytes]]:
    room = rtc.Room()
    received: asyncio.Queue[bytes] = asyncio.Queue()
    room.on("data_received", lambda packet: received.put_nowait(bytes(packet.data)))
    token = (api.AccessToken(server.api_key, server.api_secret).with_identity("alice")
             .with_grants(api.VideoGrants(room_join=True, room=room_name))
             .with_room_config(api.RoomConfiguration(**config)).to_jwt())
    await room.connect(server.url, token)
    return room, received


@pytest.mark.timeout(180)
async def test_a_named_worker_serves_explicit_dispatches_and_stops_a_job_whose_dispatch_is_deleted(engine, tmp_path):
    from nbagents.runtime.serve import serve

    name = f"nb-{uuid.uuid4().hex[:6]}"
    room_name = f"serve-{uuid.uuid4().hex[:8]}"
    worker = await serve(greet_and_stay, agent_name=name, shutdown_process_timeout=10)
    room = None
    try:
        room, received = await _join(engine, room_name, departure_timeout=1)
        async with api.LiveKitAPI(engine.http_url, engine.api_key, engine.api_secret) as lkapi:
            dispatch = await lkapi.agent_dispatch.create_dispatch(
                api.CreateAgentDispatchRequest(agent_name=name, room=room_name, metadata="explicit"))
            assert await asyncio.wait_for(received.get(), TIMEOUT) == b"hello alice: explicit"
            assert [job.room for job in worker.jobs] == [room_name]  # the join itself dispatched nothing here
            await lkapi.agent_dispatch.delete_dispatch(dispatch.id, room_name)
        result = await asyncio.wait_for(worker.jobs[0].wait(), TIMEOUT)
        assert result.state == "succeeded"
        assert result.persisted["farewell"] == {
            "reason": "terminated by the server (its dispatch was deleted)", "metadata": "explicit", "agent_name": name}
    finally:
        if room is not None:
            await room.disconnect()
        await worker.drain()


@pytest.mark.timeout(180)
async def test_draining_stops_running_jobs_with_their_hooks(engine, tmp_path):
    from nbagents.runtime.serve import current_server, serve

    worker = await serve(greet_and_stay, shutdown_process_timeout=10)
    room = None
    try:
        room, received = await _join(engine, f"serve-{uuid.uuid4().hex[:8]}", departure_timeout=1)
        assert (await asyncio.wait_for(received.get(), TIMEOUT)).startswith(b"hello alice")
        results = await asyncio.wait_for(worker.drain(), TIMEOUT)
        assert [r.state for r in results] == ["succeeded"]
        assert results[0].persisted["farewell"]["reason"] == "agent worker stopped"
        assert worker.stopped and current_server() is None
    finally:
        if room is not None:
            await room.disconnect()
        await worker.drain()


async def greet_and_return(ctx):
    async def farewell(reason):
        return reason

    ctx.add_shutdown_callback(farewell)
    await ctx.connect()
    await ctx.wait_for_participant()
    await ctx.room.local_participant.publish_data("hello")  # the job then runs until the room closes


@pytest.mark.timeout(180)
async def test_a_draining_worker_takes_no_new_jobs_and_lets_running_ones_finish(engine, tmp_path):
    from nbagents.runtime.serve import serve

    worker = await serve(greet_and_return, shutdown_process_timeout=10)
    rooms = []
    try:
        first, received = await _join(engine, f"serve-{uuid.uuid4().hex[:8]}", departure_timeout=1)
        rooms.append(first)
        assert await asyncio.wait_for(received.get(), TIMEOUT) == b"hello"
        draining = asyncio.ensure_future(worker.drain(wait=True))
        while not worker.draining:
            await asyncio.sleep(0.01)
        # a draining worker tells the server it is full, so a room created now gets no job from it
        second, _ = await _join(engine, f"serve-{uuid.uuid4().hex[:8]}", departure_timeout=1)
        rooms.append(second)
        assert not draining.done()  # the first job is still running: the drain waits for it
        await first.disconnect()  # its room closes a second later, which ends the job
        results = await asyncio.wait_for(draining, TIMEOUT)
        assert [r.state for r in results] == ["succeeded"], results[0].error
        assert "room disconnected" in results[0].persisted["farewell"]
        assert len(worker.jobs) == 1
    finally:
        for room in rooms:
            await room.disconnect()
        await worker.drain()
