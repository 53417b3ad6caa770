"""Audio tracks: what is published is really heard (right pitch, real level), and every track change shows.

A subscribed track that carries no sound must fail these tests, so each one listens to the decoded audio
and checks the tone's frequency and level, window by window.
"""

from __future__ import annotations

import asyncio

import pytest
from livekit import rtc
from livekit.rtc.participant import PublishTrackError

from .helpers import listening, unique_room


async def test_published_audio_is_heard_by_the_other_participant(participants):
    room = unique_room()
    alice = await participants(room, "alice")
    bob = await participants(room, "bob")
    await alice.publish_tone(440)
    track = await bob.wait_for_track("alice")
    assert track.kind == rtc.TrackKind.KIND_AUDIO
    async with listening(track) as heard:
        await heard.hears_tone(440)


async def test_publication_carries_source_and_name(participants):
    room = unique_room()
    alice = await participants(room, "alice")
    bob = await participants(room, "bob")
    tone = await alice.publish_tone(440, name="mic-a")
    (publication, owner) = await bob.events.wait("track_published", lambda pub, p: p.identity == "alice")
    assert publication.sid == tone.publication.sid and publication.sid.startswith("TR_")
    assert publication.name == "mic-a"
    assert publication.kind == rtc.TrackKind.KIND_AUDIO
    assert publication.source == rtc.TrackSource.SOURCE_MICROPHONE


async def test_unpublished_track_goes_away_for_the_subscriber(participants):
    room = unique_room()
    alice = await participants(room, "alice")
    bob = await participants(room, "bob")
    tone = await alice.publish_tone(440)
    await bob.wait_for_track("alice")
    await alice.local.unpublish_track(tone.publication.sid)
    await bob.events.wait("track_unsubscribed", lambda track, pub, p: pub.sid == tone.publication.sid)
    await bob.events.wait("track_unpublished", lambda pub, p: pub.sid == tone.publication.sid)
    assert tone.publication.sid not in bob.remote("alice").track_publications


async def test_mute_and_unmute_are_seen_and_heard(participants):
    room = unique_room()
    alice = await participants(room, "alice")
    bob = await participants(room, "bob")
    tone = await alice.publish_tone(440)
    track = await bob.wait_for_track("alice")
    async with listening(track) as heard:
        await heard.hears_tone(440)
        tone.track.mute()
        (_, publication) = await bob.events.wait("track_muted", lambda p, pub: p.identity == "alice")
        assert publication.muted
        await heard.hears_silence()
        mark = bob.events.mark()
        tone.track.unmute()
        (_, publication) = await bob.events.wait("track_unmuted", lambda p, pub: p.identity == "alice", after=mark)
        assert not publication.muted
        await heard.hears_tone(440)


async def test_manual_subscription_when_auto_subscribe_is_off(participants):
    room = unique_room()
    alice = await participants(room, "alice")
    bob = await participants(room, "bob", auto_subscribe=False)
    await alice.publish_tone(523)
    (publication, _) = await bob.events.wait("track_published", lambda pub, p: p.identity == "alice")
    assert not publication.subscribed and not bob.events.events("track_subscribed")

    publication.set_subscribed(True)
    track = await bob.wait_for_track("alice")
    async with listening(track) as heard:
        await heard.hears_tone(523)

    publication.set_subscribed(False)
    await bob.events.wait("track_unsubscribed", lambda track, pub, p: pub.sid == publication.sid)
    mark = bob.events.mark()
    publication.set_subscribed(True)  # and back: a second subscription works as the first did
    (track, _, _) = await bob.events.wait("track_subscribed", lambda t, pub, p: pub.sid == publication.sid,
                                          after=mark)
    async with listening(track) as heard:
        await heard.hears_tone(523)


async def test_late_joiner_receives_existing_tracks(participants):
    room = unique_room()
    alice = await participants(room, "alice")
    await alice.publish_tone(440)
    bob = await participants(room, "bob")
    await alice.publish_tone(660, name="second")  # published while bob is already there, for contrast
    carol = await participants(room, "carol")
    for name, frequency in (("tone", 440), ("second", 660)):
        track = await carol.wait_for_track("alice", name)
        async with listening(track) as heard:
            await heard.hears_tone(frequency)
    assert bob.room.isconnected()


async def test_join_lists_the_tracks_already_published(participants):
    room = unique_room()
    alice = await participants(room, "alice")
    bob = await participants(room, "bob")
    tone = await alice.publish_tone(440)
    # Both engines publish a track to the room when its media starts (not when publish_track returns):
    # once bob has seen it, anyone who joins finds it in the room's state at once.
    await bob.events.wait("track_published", lambda pub, p: pub.sid == tone.publication.sid)
    carol = await participants(room, "carol")
    assert list(carol.remote("alice").track_publications) == [tone.publication.sid]


async def test_second_publisher_renegotiates_and_both_are_heard(participants):
    room = unique_room()
    alice = await participants(room, "alice")
    bob = await participants(room, "bob")
    carol = await participants(room, "carol")
    await alice.publish_tone(440)
    carol_hears_alice = await carol.wait_for_track("alice")
    async with listening(carol_hears_alice) as heard_alice:
        await heard_alice.hears_tone(440)
        await bob.publish_tone(880)  # a second track arrives on subscriber connections already in use
        carol_hears_bob = await carol.wait_for_track("bob")
        async with listening(carol_hears_bob) as heard_bob:
            await heard_bob.hears_tone(880)
            await heard_alice.hears_tone(440)  # the first track is unharmed by the renegotiation
    async with listening(await alice.wait_for_track("bob")) as heard:
        await heard.hears_tone(880)
    async with listening(await bob.wait_for_track("alice")) as heard:
        await heard.hears_tone(440)


async def test_publishing_needs_can_publish(participants):
    room = unique_room()
    alice = await participants(room, "alice", can_publish=False)
    bob = await participants(room, "bob")
    with pytest.raises(PublishTrackError):  # the server never confirms the publication
        await alice.publish_tone(440)
    assert not bob.events.events("track_published")
    assert not bob.remote("alice").track_publications


async def test_subscribing_needs_can_subscribe(participants):
    room = unique_room()
    alice = await participants(room, "alice")
    bob = await participants(room, "bob", can_subscribe=False)
    carol = await participants(room, "carol", auto_subscribe=False)
    await alice.publish_tone(440)
    (bobs_view, _) = await bob.events.wait("track_published", lambda pub, p: p.identity == "alice")
    (carols_view, _) = await carol.events.wait("track_published", lambda pub, p: p.identity == "alice")
    bobs_view.set_subscribed(True)
    carols_view.set_subscribed(True)
    # carol may subscribe and does; by the time she hears the tone, bob's identical request has been refused
    async with listening(await carol.wait_for_track("alice")) as heard:
        await heard.hears_tone(440)
    assert not bob.events.events("track_subscribed")
    assert bobs_view.track is None


async def test_every_one_of_several_concurrent_joiners_hears_the_publisher(participants):
    """Subscriptions set up at the same moment, where a renegotiation race would leave one silent."""
    room = unique_room()
    alice = await participants(room, "alice")
    await alice.publish_tone(440)
    listeners = await asyncio.gather(*(participants(room, f"listener-{i}") for i in range(5)))

    async def hears(peer) -> None:
        async with listening(await peer.wait_for_track("alice")) as heard:
            await heard.hears_tone(440)

    await asyncio.gather(*(hears(peer) for peer in listeners))


async def test_track_published_while_listeners_are_still_connecting_reaches_them_all(participants):
    """Publishing renegotiates subscriber connections that may still be setting up their transport."""
    room = unique_room()
    alice = await participants(room, "alice")
    joining = asyncio.gather(*(participants(room, f"listener-{i}") for i in range(4)))
    await alice.publish_tone(660)
    listeners = await joining

    async def hears(peer) -> None:
        async with listening(await peer.wait_for_track("alice")) as heard:
            await heard.hears_tone(660)

    await asyncio.gather(*(hears(peer) for peer in listeners))
