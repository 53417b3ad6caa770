"""Many rooms at once on the embedded server: every job ends with its room.

Each room has one agent job (a real job process, livekit-agents' JobContext) and one caller who speaks, then
leaves; the room closes ``departure_timeout`` later and that must end its job. Under load (40 rooms on two
cores), agents whose connection dropped as their room closed used to resume, get a full-reconnect request,
re-create the room and stay alone in it for its 300 s empty timeout. Every job must end well before that.

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


async def speak_then_leave(server, room: str) -> None:
    """A caller joins ``room``, speaks a tone for a few seconds in real time, and leaves."""
    caller = rtc.Room()
    source = rtc.AudioSource(48000, 1)
    try:
        await caller.connect(server.url, caller_token(server, room))
        track = rtc.LocalAudioTrack.create_audio_track("mic", source)
        await caller.local_participant.publish_track(track, rtc.TrackPublishOptions(
            source=rtc.TrackSource.SOURCE_MICROPHONE))
        t = np.arange(480) / 48000
        for index in range(int(SPEAKING_SECONDS * 100)):
            pcm = (8000 * np.sin(2 * math.pi * 440 * (t + index * 0.01))).astype(np.int16)
            await source.capture_frame(rtc.AudioFrame(pcm.tobytes(), 48000, 1, 480))
    finally:
        with contextlib.suppress(Exception):
            await source.aclose()
        await caller.disconnect()


async def test_every_job_ends_with_its_room_under_load(embedded) -> None:
    rooms = [f"overload-{index}" for index in range(ROOMS)]
    jobs = [launch(stay_until_the_room_closes, room=room, departure_timeout=1) for room in rooms]
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 180
        while not all(job.connected is not None or job.done for job in jobs):  # every agent is in its room
            assert loop.time() < deadline, f"jobs not connected: {[j.state for j in jobs]}"
            await asyncio.sleep(0.5)
        assert not [job for job in jobs if job.done], "a job ended before its caller came"
        await asyncio.gather(*(speak_then_leave(embedded, room) for room in rooms))
        results = await asyncio.wait_for(asyncio.gather(*(job.wait() for job in jobs)), ALL_JOBS_END_WITHIN)
    finally:
        for job in jobs:
            if job.state in ("starting", "running"):
                with contextlib.suppress(Exception):
                    await job.stop(reason="test over")
    assert [r.state for r in results] == ["succeeded"] * ROOMS, [(r.state, r.shutdown_reason) for r in results]
    async with api.LiveKitAPI(embedded.url.replace("ws://", "http://"), embedded.api_key,
                              embedded.api_secret) as client:
        left = (await client.room.list_rooms(api.ListRoomsRequest(names=rooms))).rooms
    assert not left, f"rooms re-created after they closed: {[r.name for r in left]}"
