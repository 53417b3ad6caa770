"""Many rooms at once on the embedded server: every job ends with its room.

Each room has one agent job (a real job process, livekit-agents' JobContext) and one caller who speaks, then
leaves; the room closes ``departure_timeout`` later and that must end its job. Under load (40 rooms on two
cores), agents whose connection dropped as their room closed used to resume, get a full-reconnect request,
re-create the room and stay alone in it for its 300 s empty timeout; agents whose join was still in progress
when their room closed joined the closed room and stayed there for good. Every job must end well before that.
A caller the loaded server could not let in leaves its room waiting for its humans; that room is deleted,
which must end its job the same way.

``NBAGENTS_OVERLOAD_ROOMS`` changes the number of rooms (default 40).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os

import numpy as np
import pytest
from livekit import api, rtc

from nbagents.runtime.launch import launch
from nbagents.server import DevServer

ROOMS = int(os.environ.get("NBAGENTS_OVERLOAD_ROOMS", "40"))
#: a re-created room holds its agent for 300 s; every job must have ended long before
ALL_JOBS_END_WITHIN = 200.0
SPEAKING_SECONDS = 3.0


async def stay_until_the_room_closes(ctx) -> None:
    from nbagents import AutoSubscribe

    await ctx.connect(auto_subscribe=AutoSubscribe.AUDIO_ONLY)


@pytest.fixture(scope="module")
def embedded():
    from nbagents.runtime.engine_session import shared_engine

    with DevServer() as credentials:
        shared_engine().use((credentials.url, credentials.api_key, credentials.api_secret))
        yield credentials


def caller_token(server, room: str) -> str:
    return api.AccessToken(server.api_key, server.api_secret).with_identity("caller").with_grants(
        api.VideoGrants(room_join=True, room=room)).to_jwt()


#: one 10 ms frame of a 400 Hz tone (exactly four periods), repeated: a continuous tone at no CPU cost
TONE_FRAME = (8000 * np.sin(2 * math.pi * 400 * np.arange(480) / 48000)).astype(np.int16).tobytes()
#: callers joining at once; the rest wait their turn (the test process runs all 40 callers)
JOINING_AT_ONCE = 5


async def speak_then_leave(server, room: str, joining: asyncio.Semaphore) -> None:
    """A caller joins ``room``, speaks a tone for a few seconds in real time, and leaves."""
    caller = rtc.Room()
    source = rtc.AudioSource(48000, 1)
    try:
        async with joining:
            await caller.connect(server.url, caller_token(server, room))
            track = rtc.LocalAudioTrack.create_audio_track("mic", source)
            await caller.local_participant.publish_track(track, rtc.TrackPublishOptions(
                source=rtc.TrackSource.SOURCE_MICROPHONE))
        for _ in range(int(SPEAKING_SECONDS * 100)):
            await source.capture_frame(rtc.AudioFrame(TONE_FRAME, 48000, 1, 480))
    finally:
        with contextlib.suppress(Exception):
            await source.aclose()
        await caller.disconnect()


@pytest.mark.timeout(1200)  # 40 job processes and 40 callers on two shared cores take minutes
async def test_every_job_ends_with_its_room_under_load(embedded) -> None:
    rooms = [f"overload-{index}" for index in range(ROOMS)]
    jobs = [launch(stay_until_the_room_closes, room=room, departure_timeout=1) for room in rooms]
    http = embedded.url.replace("ws://", "http://")
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 180
        while not all(job.connected is not None or job.done for job in jobs):  # every agent is in its room
            assert loop.time() < deadline, f"jobs not connected: {[j.state for j in jobs]}"
            await asyncio.sleep(0.5)
        # On a loaded machine a job may fail to connect at all (its ctx.connect times out); it cannot outlive a
        # room it never joined, so it is left out of what follows.
        never_joined = {job.room for job in jobs if job.done}
        assert len(never_joined) < ROOMS, "no job joined its room: nothing can be tested"
        joining = asyncio.Semaphore(JOINING_AT_ONCE)
        outcomes = await asyncio.gather(*(speak_then_leave(embedded, room, joining) for room in rooms),
                                        return_exceptions=True)
        # A caller that could not get in (the SDK gives up on a join the loaded server answers too late) leaves
        # its room waiting for its humans, as any server would (empty_timeout, 300 s): end those rooms, which
        # must end their jobs just as a closing room does.
        unjoined = [room for room, outcome in zip(rooms, outcomes) if isinstance(outcome, BaseException)]
        async with api.LiveKitAPI(http, embedded.api_key, embedded.api_secret) as client:
            for room in unjoined:
                with contextlib.suppress(api.TwirpError):
                    await client.room.delete_room(api.DeleteRoomRequest(room=room))
        results = await asyncio.wait_for(asyncio.gather(*(job.wait() for job in jobs)), ALL_JOBS_END_WITHIN)
    finally:
        for job in jobs:
            if job.state in ("starting", "running"):
                with contextlib.suppress(Exception):
                    await job.stop(reason="test over")
    assert len(unjoined) < ROOMS, "no caller got in: nothing was tested"
    ended_with_room = [(job.room, result) for job, result in zip(jobs, results) if job.room not in never_joined]
    assert all(r.state == "succeeded" for _, r in ended_with_room), [
        (room, r.state, r.shutdown_reason, r.error, r.log_dir) for room, r in ended_with_room if r.state != "succeeded"]
    async with api.LiveKitAPI(http, embedded.api_key, embedded.api_secret) as client:
        left = (await client.room.list_rooms(api.ListRoomsRequest(names=rooms))).rooms
        with_agents = [room.name for room in left if any(
            p.kind == api.ParticipantInfo.Kind.AGENT
            for p in (await client.room.list_participants(api.ListParticipantsRequest(room=room.name))).participants)]
    assert not with_agents, f"rooms re-created by the agents of ended jobs: {with_agents}"
