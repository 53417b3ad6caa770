"""Data packets between participants: reliable and lossy, topics, destinations, and the sender's identity."""

from __future__ import annotations

import pytest
from livekit import rtc
from livekit.protocol import models

from .helpers import TIMEOUT, unique_room
from .raw import raw_data_sender


def from_sender(identity: str, payload: bytes):
    return lambda packet: packet.data == payload and packet.participant is not None and \
        packet.participant.identity == identity


@pytest.mark.parametrize("reliable", [True, False], ids=["reliable", "lossy"])
async def test_data_reaches_others_with_topic_kind_and_sender(participants, reliable):
    room = unique_room()
    alice = await participants(room, "alice")
    bob = await participants(room, "bob")
    await alice.wait_for_participant("bob")
    payload = b"hello " + (b"reliable" if reliable else b"lossy")
    # Lossy packets may be lost by definition: resend a few times if one does not arrive (loopback rarely
    # drops any). A reliable packet is sent once and must arrive.
    attempts = 1 if reliable else 5
    for attempt in range(attempts):
        await alice.send_data(payload, reliable=reliable, topic="greetings")
        try:
            (packet,) = await bob.events.wait("data_received", from_sender("alice", payload),
                                              timeout=TIMEOUT / attempts)
            break
        except AssertionError:
            if attempt == attempts - 1:
                raise
    assert packet.topic == "greetings"
    assert packet.kind == (rtc.DataPacketKind.KIND_RELIABLE if reliable else rtc.DataPacketKind.KIND_LOSSY)


async def test_reliable_data_arrives_complete_and_in_order(participants):
    room = unique_room()
    alice = await participants(room, "alice")
    bob = await participants(room, "bob")
    await alice.wait_for_participant("bob")
    sent = [f"message {i}".encode() * (1 + i % 7) for i in range(100)]
    for payload in sent:
        await alice.send_data(payload, topic="sequence")
    await bob.events.wait("data_received", lambda packet: packet.data == sent[-1])
    received = [packet.data for (packet,) in bob.events.events("data_received", lambda p: p.topic == "sequence")]
    assert received == sent


async def test_large_reliable_packet_arrives_intact(participants):
    room = unique_room()
    alice = await participants(room, "alice")
    bob = await participants(room, "bob")
    await alice.wait_for_participant("bob")
    payload = bytes(range(256)) * 56  # 14 KiB: several SCTP chunks, under the 15 KiB the SDKs allow
    await alice.send_data(payload, topic="big")
    await bob.events.wait("data_received", lambda packet: packet.data == payload)


async def test_destination_identities_limit_who_receives(participants):
    room = unique_room()
    alice = await participants(room, "alice")
    bob = await participants(room, "bob")
    carol = await participants(room, "carol")
    await alice.wait_for_participant("bob")
    await alice.wait_for_participant("carol")
    await alice.send_data(b"for bob only", destination_identities=["bob"], topic="private")
    await alice.send_data(b"for everyone", topic="public")
    await bob.events.wait("data_received", from_sender("alice", b"for bob only"))
    await bob.events.wait("data_received", from_sender("alice", b"for everyone"))
    # Reliable packets from one sender arrive in order: once carol has the second, the first was not for her.
    await carol.events.wait("data_received", from_sender("alice", b"for everyone"))
    assert not carol.events.events("data_received", lambda packet: packet.data == b"for bob only")
    assert not alice.events.events("data_received")  # nobody gets their own packets back


async def test_publishing_data_needs_can_publish_data(participants):
    room = unique_room()
    alice = await participants(room, "alice", can_publish_data=False)
    bob = await participants(room, "bob")
    carol = await participants(room, "carol")
    await alice.wait_for_participant("bob")
    await carol.wait_for_participant("bob")
    try:
        await alice.send_data(b"not allowed", topic="t")
    except rtc.participant.PublishDataError:
        pass  # refusing early in the client is fine too; what matters is that nobody receives it
    await carol.send_data(b"allowed", topic="t")
    await bob.events.wait("data_received", from_sender("carol", b"allowed"))
    assert not bob.events.events("data_received", lambda packet: packet.data == b"not allowed")


async def test_sender_identity_comes_from_the_server_not_the_packet(lk_server, participants):
    """A client that writes someone else's identity into its packets is not believed."""
    room = unique_room()
    alice = await participants(room, "alice")
    bob = await participants(room, "bob")
    async with raw_data_sender(lk_server, room, "mallory") as mallory:
        await bob.wait_for_participant("mallory")
        for payload, claimed in ((b"forged", "alice"), (b"honest", "mallory")):
            mallory.send(models.DataPacket(
                kind=models.DataPacket.Kind.RELIABLE, participant_identity=claimed,
                user=models.UserPacket(participant_identity=claimed, payload=payload, topic="claims")))
        # Reliable packets of one sender arrive in order: once "honest" is in, "forged" was handled before it.
        (honest,) = await bob.events.wait("data_received", lambda packet: packet.data == b"honest")
        assert honest.participant is not None and honest.participant.identity == "mallory"
        for (packet,) in bob.events.events("data_received", lambda packet: packet.data == b"forged"):
            assert packet.participant is not None and packet.participant.identity == "mallory"
    assert alice.room.isconnected()
