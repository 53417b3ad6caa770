"""Video: out of scope for the embedded server, which accepts a video publish without harm (and does not
relay it); livekit-server relays it. The first is checked on every engine, the second is a known difference."""

from __future__ import annotations

import asyncio
import contextlib

from livekit import rtc

from .helpers import TIMEOUT, engine_difference, listening, unique_room

WIDTH, HEIGHT = 64, 48


@contextlib.asynccontextmanager
async def camera(participant: rtc.LocalParticipant):
    """Publishes a small grey video track at about 15 frames per second."""
    source = rtc.VideoSource(WIDTH, HEIGHT)
    track = rtc.LocalVideoTrack.create_video_track("camera", source)
    frame = rtc.VideoFrame(WIDTH, HEIGHT, rtc.VideoBufferType.RGBA, bytes([128]) * (WIDTH * HEIGHT * 4))

    async def play() -> None:
        while True:
            source.capture_frame(frame)
            await asyncio.sleep(1 / 15)  # the frame rate of the test video, not a wait for anything

    player = asyncio.ensure_future(play())
    try:
        publication = await asyncio.wait_for(participant.publish_track(
            track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_CAMERA)), TIMEOUT)
        yield publication
    finally:
        player.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await player


async def test_video_publish_is_accepted_without_harm_to_audio(participants):
    room = unique_room()
    alice = await participants(room, "alice")
    bob = await participants(room, "bob")
    async with camera(alice.local) as video:
        assert video.sid.startswith("TR_") and video.kind == rtc.TrackKind.KIND_VIDEO
        await alice.publish_tone(440)
        async with listening(await bob.wait_for_track("alice", "tone")) as heard:
            await heard.hears_tone(440)
        await alice.send_data(b"after video")
        await bob.events.wait("data_received", lambda packet: packet.data == b"after video")


@engine_difference("embedded", reason="video is out of scope: accepted, announced, but not relayed")
async def test_video_is_relayed_to_subscribers(participants):
    room = unique_room()
    alice = await participants(room, "alice")
    bob = await participants(room, "bob")
    async with camera(alice.local):
        (track, _, _) = await bob.events.wait(
            "track_subscribed", lambda t, pub, p: p.identity == "alice" and pub.kind == rtc.TrackKind.KIND_VIDEO,
            timeout=TIMEOUT / 2)  # still generous: livekit-server subscribes within a second here
        stream = rtc.VideoStream(track)
        try:
            event = await asyncio.wait_for(anext(aiter(stream)), TIMEOUT)
        finally:
            await stream.aclose()
        assert (event.frame.width, event.frame.height) == (WIDTH, HEIGHT)
