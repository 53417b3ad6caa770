"""Relay regressions found in the embedded server, checked by ear (a silent subscriber must fail)."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
from livekit import api, rtc

from nbagents.server import DevServer

LOUD = 3000  # int16 peak of the test tones; silence and comfort noise stay far below


@pytest.fixture(scope="module")
def server():
    with DevServer() as credentials:
        yield credentials


async def join(server, room: str, identity: str) -> rtc.Room:
    url, key, secret = server
    token = api.AccessToken(key, secret).with_identity(identity).with_grants(
        api.VideoGrants(room_join=True, room=room)).to_jwt()
    lk_room = rtc.Room()
    await lk_room.connect(url, token)
    return lk_room


async def publish_tone(room: rtc.Room, name: str, frequency: float) -> asyncio.Task[None]:
    source = rtc.AudioSource(48000, 1)
    await room.local_participant.publish_track(rtc.LocalAudioTrack.create_audio_track(name, source))

    async def play() -> None:
        frame = rtc.AudioFrame.create(48000, 1, 480)
        t = np.arange(480) / 48000
        count, next_at = 0, time.perf_counter()
        while True:
            samples = 10000 * np.sin(2 * np.pi * frequency * (t + count * 0.01))
            np.copyto(np.frombuffer(frame.data, dtype=np.int16), samples.astype(np.int16))
            await source.capture_frame(frame)
            count += 1
            next_at += 0.01
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))

    return asyncio.ensure_future(play())


async def hears(listener: rtc.Room, publisher: str, track_name: str, timeout: float = 30.0) -> bool:
    """True once 20 loud frames of the named track came out of the listener's AudioStream."""
    deadline = time.monotonic() + timeout
    track = None
    while track is None and time.monotonic() < deadline:
        participant = listener.remote_participants.get(publisher)
        for publication in (participant.track_publications.values() if participant else ()):
            if publication.name == track_name and publication.track is not None:
                track = publication.track
        await asyncio.sleep(0.05)
    if track is None:
        return False
    stream = rtc.AudioStream(track)
    loud = 0

    async def count() -> None:
        nonlocal loud
        async for event in stream:
            if np.abs(np.frombuffer(event.frame.data, dtype=np.int16)).max() > LOUD:
                loud += 1
                if loud >= 20:
                    return

    try:
        await asyncio.wait_for(count(), max(1.0, deadline - time.monotonic()))
    except asyncio.TimeoutError:
        pass
    finally:
        await stream.aclose()
    return loud >= 20


async def test_a_late_joiner_hears_a_track_that_is_already_flowing(server):
    alice = await join(server, "flowing", "alice")
    playing = await publish_tone(alice, "tone", 440)
    bob = await join(server, "flowing", "bob")
    try:
        assert await hears(bob, "alice", "tone")  # the relay exists and carries packets now
        carol = await join(server, "flowing", "carol")  # her first subscriber offer finds a live track
        assert await hears(carol, "alice", "tone")
        await carol.disconnect()
    finally:
        playing.cancel()
        await bob.disconnect()
        await alice.disconnect()


async def test_two_tracks_subscribed_in_one_renegotiation_are_both_heard(server):
    alice = await join(server, "two-tracks", "alice")
    first = await publish_tone(alice, "first", 440)
    bob = await join(server, "two-tracks", "bob")
    second = await publish_tone(alice, "second", 660)  # both reach bob's subscriber connection together
    try:
        assert await hears(bob, "alice", "first")
        assert await hears(bob, "alice", "second")
    finally:
        first.cancel()
        second.cancel()
        await bob.disconnect()
        await alice.disconnect()
