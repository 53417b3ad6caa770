"""Relay behaviour of the embedded server, checked on what clients decode (a silent or frozen subscriber must fail)."""

from __future__ import annotations

import asyncio
import struct
import time

import aioice
import aioice.ice
import numpy as np
import pytest
from livekit import api, rtc

from nbagents.server import DevServer, _aiortc

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


async def stats_of(track: rtc.Track, kind: str):
    for stats in await track.get_stats():
        if stats.WhichOneof("stats") == kind:
            return getattr(stats, kind)
    raise AssertionError(f"no {kind} statistics for the track")


async def test_lost_video_packets_are_asked_for_again_and_resent_both_ways():
    """With 5 % of media packets dropped on arrival and on sending, the server NACKs what the publisher's
    packets lack (the publisher retransmits) and resends what the subscriber NACKs from its cache: the
    subscriber ends up missing almost nothing, though one packet in ten was lost along the way."""
    with DevServer(simulate_loss=5) as server:
        alice = await join(server, "lossy", "alice")
        bob = await join(server, "lossy", "bob")
        source = rtc.VideoSource(320, 180)
        track = rtc.LocalVideoTrack.create_video_track("camera", source)
        publication = await alice.local_participant.publish_track(
            track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_CAMERA))

        async def play() -> None:
            rng = np.random.default_rng(0)
            pixels = rng.integers(0, 256, (180, 320, 4), dtype=np.uint8)
            for i in range(1 << 30):  # a noisy picture scrolling sideways: every frame takes several packets
                frame = np.roll(pixels, 4 * i, axis=1)
                source.capture_frame(rtc.VideoFrame(320, 180, rtc.VideoBufferType.RGBA, frame.tobytes()))
                await asyncio.sleep(1 / 15)

        player = asyncio.ensure_future(play())
        try:
            remote = None
            deadline = time.monotonic() + 30
            while remote is None and time.monotonic() < deadline:
                participant = bob.remote_participants.get("alice")
                remote = next((p.track for p in participant.track_publications.values() if p.track), None) \
                    if participant else None
                await asyncio.sleep(0.1)
            assert remote is not None, "bob never subscribed to alice's video"
            await asyncio.sleep(8)
            sent = (await stats_of(publication.track, "outbound_rtp")).outbound
            received = await stats_of(remote, "inbound_rtp")
            assert sent.nack_count > 0 and sent.retransmitted_packets_sent > 0  # the server asked alice to resend
            assert received.inbound.nack_count > 0  # bob asked the server to resend
            assert received.inbound.frames_decoded > 30
            lost, got = received.received.packets_lost, received.received.packets_received
            assert got > 100 and lost / got < 0.02, f"bob is missing {lost} of {got + lost} packets"
        finally:
            player.cancel()
            await bob.disconnect()
            await alice.disconnect()


async def test_a_media_packet_that_could_pass_for_stun_reaches_the_ice_connection():
    """RTP with payload type 9 (G.722) whose sequence number equals its length minus 20 is data, not STUN (RFC 7983)."""
    _aiortc.demultiplex_by_first_byte()  # as the server's media module does at import
    gather = aioice.ice.get_host_addresses
    _aiortc.restrict_host_addresses(["127.0.0.1"])
    sender, receiver = aioice.Connection(ice_controlling=True), aioice.Connection(ice_controlling=False)
    try:
        await asyncio.gather(sender.gather_candidates(), receiver.gather_candidates())
        for local, remote in ((sender, receiver), (receiver, sender)):
            for candidate in local.local_candidates:
                await remote.add_remote_candidate(candidate)
            await remote.add_remote_candidate(None)
            remote.remote_username, remote.remote_password = local.local_username, local.local_password
        await asyncio.wait_for(asyncio.gather(sender.connect(), receiver.connect()), 20)
        payload = bytes(160)
        packets = [struct.pack("!BBHII", 0x80, 9, 12 + len(payload) - 20, 0, 0x5EED) + payload,
                   struct.pack("!BBHII", 0x80, 9, 1000, 0, 0x5EED) + payload]
        for packet in packets:
            await sender.sendto(packet, 1)
        received = [await asyncio.wait_for(receiver.recvfrom(), 10) for _ in packets]
        assert received == [(packet, 1) for packet in packets]
    finally:
        aioice.ice.get_host_addresses = gather
        await asyncio.gather(sender.close(), receiver.close())
