"""The Twirp RoomService as a backend uses it, each call checked by what the participants experience."""

from __future__ import annotations

import pytest
from livekit import api, rtc

from .helpers import listening, unique_room, wait_until


async def test_delete_room_disconnects_everyone_with_room_deleted(participants, lk_api):
    room = unique_room()
    alice = await participants(room, "alice")
    bob = await participants(room, "bob")
    await lk_api.room.delete_room(api.DeleteRoomRequest(room=room))
    for peer in (alice, bob):
        (reason,) = await peer.events.wait("disconnected")
        assert reason == rtc.DisconnectReason.ROOM_DELETED
    listed = await lk_api.room.list_rooms(api.ListRoomsRequest(names=[room]))
    assert not listed.rooms


async def test_list_and_get_participants(participants, lk_api):
    room = unique_room()
    alice = await participants(room, "alice", name="Alice", metadata="m", attributes={"a": "1"})
    await participants(room, "bob")
    tone = await alice.publish_tone(440)
    listed = await lk_api.room.list_participants(api.ListParticipantsRequest(room=room))
    assert sorted(p.identity for p in listed.participants) == ["alice", "bob"]

    async def track_listed() -> bool:
        info = await lk_api.room.get_participant(api.RoomParticipantIdentity(room=room, identity="alice"))
        return [t.sid for t in info.tracks] == [tone.publication.sid]

    await wait_until(track_listed, "GetParticipant lists alice's published track")
    info = await lk_api.room.get_participant(api.RoomParticipantIdentity(room=room, identity="alice"))
    assert (info.sid, info.name, info.metadata, dict(info.attributes)) == (alice.local.sid, "Alice", "m", {"a": "1"})
    assert info.state in (api.ParticipantInfo.State.JOINED, api.ParticipantInfo.State.ACTIVE)
    assert info.tracks[0].type == api.TrackType.AUDIO


async def test_get_unknown_participant_is_not_found(participants, lk_api):
    room = unique_room()
    await participants(room, "alice")
    with pytest.raises(api.TwirpError) as failed:
        await lk_api.room.get_participant(api.RoomParticipantIdentity(room=room, identity="nobody"))
    assert failed.value.code == "not_found"


async def test_remove_participant_disconnects_only_them(participants, lk_api):
    room = unique_room()
    alice = await participants(room, "alice")
    bob = await participants(room, "bob")
    await alice.wait_for_participant("bob")
    await lk_api.room.remove_participant(api.RoomParticipantIdentity(room=room, identity="bob"))
    (reason,) = await bob.events.wait("disconnected")
    assert reason == rtc.DisconnectReason.PARTICIPANT_REMOVED
    await alice.events.wait("participant_disconnected", lambda p: p.identity == "bob")
    assert alice.room.isconnected()


async def test_update_participant_metadata_attributes_and_name(participants, lk_api):
    room = unique_room()
    alice = await participants(room, "alice", attributes={"keep": "yes"})
    bob = await participants(room, "bob")
    await bob.wait_for_participant("alice")
    updated = await lk_api.room.update_participant(api.UpdateParticipantRequest(
        room=room, identity="alice", metadata="from backend", name="Alice B.", attributes={"role": "host"}))
    assert (updated.metadata, updated.name, dict(updated.attributes)) == (
        "from backend", "Alice B.", {"keep": "yes", "role": "host"})
    for peer, who in ((bob, "alice"), (alice, "alice")):
        await peer.events.wait("participant_metadata_changed", lambda p, old, new: p.identity == who and new == "from backend")
        await peer.events.wait("participant_name_changed", lambda p, old, new: p.identity == who and new == "Alice B.")
        await peer.events.wait("participant_attributes_changed",
                               lambda changed, p: p.identity == who and changed == {"role": "host"})
    assert dict(bob.remote("alice").attributes) == {"keep": "yes", "role": "host"}
    assert alice.local.metadata == "from backend"


async def test_update_participant_permission_revokes_publishing(participants, lk_api):
    room = unique_room()
    alice = await participants(room, "alice")
    bob = await participants(room, "bob")
    tone = await alice.publish_tone(440)
    await bob.wait_for_track("alice")
    await lk_api.room.update_participant(api.UpdateParticipantRequest(
        room=room, identity="alice",
        permission=api.ParticipantPermission(can_publish=False, can_subscribe=True, can_publish_data=True)))
    (_, permissions) = await alice.events.wait("participant_permissions_changed", lambda p, perm: p.identity == "alice")
    assert not permissions.can_publish and permissions.can_subscribe
    # Losing canPublish takes the published track away from everyone.
    await bob.events.wait("track_unpublished", lambda pub, p: pub.sid == tone.publication.sid)


async def test_mute_published_track_is_seen_and_heard(participants, lk_api):
    room = unique_room()
    alice = await participants(room, "alice")
    bob = await participants(room, "bob")
    tone = await alice.publish_tone(440)
    async with listening(await bob.wait_for_track("alice")) as heard:
        await heard.hears_tone(440)
        response = await lk_api.room.mute_published_track(api.MuteRoomTrackRequest(
            room=room, identity="alice", track_sid=tone.publication.sid, muted=True))
        assert response.track.sid == tone.publication.sid and response.track.muted
        await bob.events.wait("track_muted", lambda p, pub: pub.sid == tone.publication.sid)
        await alice.events.wait("track_muted", lambda p, pub: pub.sid == tone.publication.sid)
        await heard.hears_silence()


async def data_flows(sender, receiver, attempts: int = 20) -> None:
    """Resend a probe until ``receiver`` gets one (each attempt waits a second for the previous one)."""
    for attempt in range(attempts):
        probe = f"probe {attempt}".encode()
        await sender.send_data(probe, destination_identities=[receiver.identity])
        try:
            await receiver.events.wait("data_received", lambda p: p.data == probe, timeout=1.0)
            return
        except AssertionError:  # not within the second: the path is not up yet
            continue
    raise AssertionError(f"no data reached {receiver.identity} from {sender.identity} in {attempts} attempts")


async def test_send_data_from_the_backend(participants, lk_api):
    room = unique_room()
    alice = await participants(room, "alice")
    bob = await participants(room, "bob")
    await bob.wait_for_participant("alice")
    # data reaches a participant on the connection the server opens towards it, which may still be connecting
    # when join returns (livekit-server drops what it cannot deliver yet): wait until both receive data
    for sender, receiver in ((alice, bob), (bob, alice)):
        await data_flows(sender, receiver)
    await lk_api.room.send_data(api.SendDataRequest(room=room, data=b"to alice", kind=api.DataPacket.Kind.RELIABLE,
                                                    topic="backend", destination_identities=["alice"]))
    await lk_api.room.send_data(api.SendDataRequest(room=room, data=b"to all", kind=api.DataPacket.Kind.RELIABLE,
                                                    topic="backend"))
    (packet,) = await alice.events.wait("data_received", lambda p: p.data == b"to alice")
    assert packet.topic == "backend" and packet.participant is None  # sent by the server, not by a participant
    await alice.events.wait("data_received", lambda p: p.data == b"to all")
    await bob.events.wait("data_received", lambda p: p.data == b"to all")
    assert not bob.events.events("data_received", lambda p: p.data == b"to alice")


async def test_update_room_metadata_reaches_participants(participants, lk_api):
    room = unique_room()
    alice = await participants(room, "alice")
    updated = await lk_api.room.update_room_metadata(api.UpdateRoomMetadataRequest(room=room, metadata="v2"))
    assert updated.metadata == "v2"
    (old, new) = await alice.events.wait("room_metadata_changed")
    assert new == "v2" and alice.room.metadata == "v2"
    listed = await lk_api.room.list_rooms(api.ListRoomsRequest(names=[room]))
    assert listed.rooms[0].metadata == "v2"
