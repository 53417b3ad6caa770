"""Joining a room: what the JoinResponse and the token give a participant, and what others see."""

from __future__ import annotations

from livekit import api, rtc

from .helpers import unique_room, wait_until


async def test_connect_reports_sids_identity_and_room_name(participants):
    room = unique_room()
    alice = await participants(room, "alice")
    assert alice.room.isconnected()
    assert alice.room.name == room
    assert (await alice.room.sid).startswith("RM_")
    assert alice.local.identity == "alice"
    assert alice.local.sid.startswith("PA_")


async def test_token_sets_identity_name_metadata_attributes_and_kind(participants):
    room = unique_room()
    observer = await participants(room, "observer")
    await participants(room, "agent-7", name="Agent Seven", metadata='{"role": "helper"}',
                       attributes={"lang": "fr", "tier": "gold"}, kind="agent")
    seen = await observer.wait_for_participant("agent-7")
    assert seen.name == "Agent Seven"
    assert seen.metadata == '{"role": "helper"}'
    assert dict(seen.attributes) == {"lang": "fr", "tier": "gold"}
    assert seen.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT


async def test_participant_sees_its_own_token_claims(participants):
    alice = await participants(unique_room(), "alice", name="Alice A.", metadata="m1", attributes={"k": "v"})
    assert alice.local.name == "Alice A."
    assert alice.local.metadata == "m1"
    assert dict(alice.local.attributes) == {"k": "v"}


async def test_participants_already_in_the_room_are_listed_on_join(participants):
    room = unique_room()
    await participants(room, "alice")
    await participants(room, "bob")
    carol = await participants(room, "carol")
    assert sorted(carol.room.remote_participants) == ["alice", "bob"]


async def test_join_and_leave_are_seen_by_others(participants):
    room = unique_room()
    alice = await participants(room, "alice")
    bob = await participants(room, "bob")
    await alice.events.wait("participant_connected", lambda p: p.identity == "bob")
    await bob.room.disconnect()
    await alice.events.wait("participant_disconnected", lambda p: p.identity == "bob")
    assert "bob" not in alice.room.remote_participants


async def test_clean_leave_is_seen_as_client_initiated_and_empties_the_room(participants, lk_api):
    room = unique_room()
    alice = await participants(room, "alice")
    bob = await participants(room, "bob")
    await alice.wait_for_participant("bob")
    await bob.room.disconnect()
    assert not bob.room.isconnected()
    (gone,) = await alice.events.wait("participant_disconnected", lambda p: p.identity == "bob")
    assert gone.disconnect_reason == rtc.DisconnectReason.CLIENT_INITIATED

    async def only_alice_left() -> bool:
        listed = await lk_api.room.list_participants(api.ListParticipantsRequest(room=room))
        return [p.identity for p in listed.participants] == ["alice"]

    await wait_until(only_alice_left, "the server no longer lists the participant who left")


async def test_joining_again_with_the_same_identity_replaces_the_first_connection(participants, lk_api):
    """What re-running a notebook cell does: the newer connection wins, the older one is told why it ended."""
    room = unique_room()
    observer = await participants(room, "observer")
    first = await participants(room, "alice")
    await observer.wait_for_participant("alice")
    second = await participants(room, "alice")
    (reason,) = await first.events.wait("disconnected")
    assert reason == rtc.DisconnectReason.DUPLICATE_IDENTITY
    assert second.room.isconnected()
    listed = await lk_api.room.list_participants(api.ListParticipantsRequest(room=room))
    assert sorted(p.identity for p in listed.participants) == ["alice", "observer"]
    assert next(p.sid for p in listed.participants if p.identity == "alice") == second.local.sid
    await second.send_data(b"from the new alice")
    (packet,) = await observer.events.wait("data_received", lambda packet: packet.data == b"from the new alice")
    assert packet.participant is not None and packet.participant.identity == "alice"
