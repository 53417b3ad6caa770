"""A participant's own name, metadata and attributes: updates reach everyone, and need canUpdateOwnMetadata."""

from __future__ import annotations

from .helpers import unique_room


async def test_set_metadata_is_seen_by_others(participants):
    room = unique_room()
    alice = await participants(room, "alice")
    bob = await participants(room, "bob")
    await bob.wait_for_participant("alice")
    await alice.local.set_metadata('{"mood": "curious"}')
    (who, old, new) = await bob.events.wait("participant_metadata_changed", lambda p, old, new: p.identity == "alice")
    assert (old, new) == ("", '{"mood": "curious"}')
    assert (await participants.admin_view(room, "alice")).metadata == '{"mood": "curious"}'


async def test_set_name_is_seen_by_others(participants):
    room = unique_room()
    alice = await participants(room, "alice", name="Alice")
    bob = await participants(room, "bob")
    await bob.wait_for_participant("alice")
    await alice.local.set_name("Alice Liddell")
    (who, old, new) = await bob.events.wait("participant_name_changed", lambda p, old, new: p.identity == "alice")
    assert (old, new) == ("Alice", "Alice Liddell")
    assert bob.remote("alice").name == "Alice Liddell"


async def test_set_attributes_is_seen_by_others_and_merges(participants):
    room = unique_room()
    alice = await participants(room, "alice", attributes={"lang": "en"})
    bob = await participants(room, "bob")
    await bob.wait_for_participant("alice")
    await alice.local.set_attributes({"mood": "happy"})
    (changed, who) = await bob.events.wait("participant_attributes_changed", lambda changed, p: p.identity == "alice")
    assert changed == {"mood": "happy"}
    assert dict(bob.remote("alice").attributes) == {"lang": "en", "mood": "happy"}
    mark = bob.events.mark()
    await alice.local.set_attributes({"mood": "sleepy"})
    (changed, who) = await bob.events.wait("participant_attributes_changed", lambda changed, p: p.identity == "alice",
                                           after=mark)
    assert changed == {"mood": "sleepy"}
    assert dict(bob.remote("alice").attributes) == {"lang": "en", "mood": "sleepy"}
    assert dict((await participants.admin_view(room, "alice")).attributes) == {"lang": "en", "mood": "sleepy"}


async def test_updates_bump_the_participant_version(participants):
    room = unique_room()
    alice = await participants(room, "alice")
    bob = await participants(room, "bob")
    await bob.wait_for_participant("alice")
    before = (await participants.admin_view(room, "alice")).version
    await alice.local.set_attributes({"step": "1"})
    await bob.events.wait("participant_attributes_changed", lambda changed, p: p.identity == "alice")
    assert (await participants.admin_view(room, "alice")).version > before


async def test_own_updates_need_can_update_own_metadata(participants):
    room = unique_room()
    alice = await participants(room, "alice", can_update_own_metadata=False, auto_subscribe=False,
                               name="Alice", metadata="original", attributes={"k": "v"})
    bob = await participants(room, "bob")
    await bob.wait_for_participant("alice")
    await bob.publish_tone(440)
    (publication, _) = await alice.events.wait("track_published", lambda pub, p: p.identity == "bob")

    await alice.local.set_metadata("forged")
    await alice.local.set_name("Mallory")
    await alice.local.set_attributes({"k": "forged"})
    # A later request on the same signal connection: once it has taken effect, the server has handled the
    # refused ones before it.
    publication.set_subscribed(True)
    await alice.wait_for_track("bob")

    seen = await participants.admin_view(room, "alice")
    assert (seen.metadata, seen.name, dict(seen.attributes)) == ("original", "Alice", {"k": "v"})
    for refused in ("participant_metadata_changed", "participant_name_changed", "participant_attributes_changed"):
        assert not bob.events.events(refused)
    assert bob.remote("alice").metadata == "original"
