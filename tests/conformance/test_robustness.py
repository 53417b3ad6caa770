"""Bad input and idle time: the offending connection or request is refused, and everyone else carries on.

Every abuse below is followed by proof of health: participants in the abused room and in another room
still exchange data, and a newcomer can still join the abused room.
"""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from livekit.protocol import rtc as signal

from .helpers import TIMEOUT, ParticipantFactory, make_token, unique_room
from .raw import raw_signal


async def assert_still_serving(participants, room: str, bystanders) -> None:
    """Data still flows between connected participants, and a newcomer can join ``room``."""
    for sender, receiver in bystanders:
        payload = f"still there, {receiver.identity}? ({unique_room('probe')})".encode()
        await sender.send_data(payload, destination_identities=[receiver.identity])
        await receiver.events.wait("data_received", lambda packet: packet.data == payload)
    newcomer = await participants(room, unique_room("newcomer"))
    assert newcomer.room.isconnected()


@pytest.fixture(scope="module")
async def bystanders(lk_server):
    """Two pairs of participants, kept through all the abuse of this module: one pair in the room that is
    abused, one in another room."""
    abused, other = unique_room("abused"), unique_room("other")
    connect = ParticipantFactory(lk_server)
    try:
        alice = await connect(abused, "alice")
        bob = await connect(abused, "bob")
        carol = await connect(other, "carol")
        dave = await connect(other, "dave")
        await alice.wait_for_participant("bob")
        await carol.wait_for_participant("dave")
        yield abused, [(alice, bob), (dave, carol)]
    finally:
        await connect.close()


def truncated_offer() -> bytes:
    whole = signal.SignalRequest(offer=signal.SessionDescription(type="offer", sdp="v=0\r\n" * 40))
    encoded = whole.SerializeToString()
    return encoded[: len(encoded) // 2]


WEBSOCKET_ABUSE = {
    "garbage-bytes": lambda ws: ws.send_bytes(b"\xff\xfe\x00 this is not protobuf \x99\x01"),
    "truncated-protobuf": lambda ws: ws.send_bytes(truncated_offer()),
    "text-frame": lambda ws: ws.send_str("hello {"),
}


@pytest.mark.parametrize("abuse", WEBSOCKET_ABUSE)
async def test_bad_signal_frame_closes_only_that_connection(lk_server, participants, bystanders, abuse):
    room, pairs = bystanders
    async with raw_signal(lk_server, room, "vandal") as raw:
        await WEBSOCKET_ABUSE[abuse](raw.ws)
        assert await raw.closed_by_server(), "the server kept a connection that sent an unreadable frame"
    await assert_still_serving(participants, room, pairs)


async def test_signal_ping_is_answered_with_pong(lk_server):
    async with raw_signal(lk_server, unique_room()) as raw:
        assert raw.join.ping_interval > 0 and raw.join.ping_timeout > raw.join.ping_interval
        await raw.send(signal.SignalRequest(ping_req=signal.Ping(timestamp=123456789, rtt=0)))
        pong = await raw.wait_for("pong_resp")
        assert pong.pong_resp.last_ping_timestamp == 123456789


async def test_connection_outlives_the_ping_timeout(lk_server, participants):
    """The SDK pings; a server that did not answer would see it give up after ping_timeout."""
    async with raw_signal(lk_server, unique_room()) as raw:
        ping_timeout, ping_interval = raw.join.ping_timeout, raw.join.ping_interval
    room = unique_room()
    alice = await participants(room, "alice")
    bob = await participants(room, "bob")
    await alice.wait_for_participant("bob")
    # This wait is the behaviour under test (time passing with no traffic but pings), not a guess at latency.
    await asyncio.sleep(ping_timeout + ping_interval)
    assert alice.room.isconnected() and bob.room.isconnected()
    for peer in (alice, bob):
        assert not peer.events.events("disconnected") and not peer.events.events("reconnecting")
    await alice.send_data(b"after the quiet")
    await bob.events.wait("data_received", lambda packet: packet.data == b"after the quiet")


TWIRP_ABUSE = {
    "garbage-protobuf": ("CreateRoom", "application/protobuf", b"\xff\xff\xff garbage", 400, "malformed"),
    "malformed-json": ("CreateRoom", "application/json", b"{not json", 400, "malformed"),
    "unknown-method": ("NoSuchMethod", "application/protobuf", b"", 404, "bad_route"),
    "wrong-content-type": ("CreateRoom", "text/plain", b"name: x", 404, "bad_route"),
}


@pytest.mark.parametrize("abuse", TWIRP_ABUSE)
async def test_bad_twirp_request_gets_a_twirp_error(lk_server, participants, bystanders, abuse):
    room, pairs = bystanders
    method, content_type, body, status, code = TWIRP_ABUSE[abuse]
    token = make_token(lk_server, "svc", None, room_create=True, room_list=True)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT)) as session:
        async with session.post(f"{lk_server.http_url}/twirp/livekit.RoomService/{method}", data=body,
                                headers={"Content-Type": content_type, "Authorization": f"Bearer {token}"}) as response:
            assert response.status == status
            error = await response.json(content_type=None)
    assert error["code"] == code and error["msg"]
    await assert_still_serving(participants, room, pairs)
