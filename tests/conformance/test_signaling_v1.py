"""``/rtc/v1``: the signaling path the SDKs try first, with one PeerConnection for publishing and subscribing.

Its settings come in one ``join_request`` query parameter: a base64url ``WrappedJoinRequest`` holding a
``JoinRequest`` (plain or gzip). ``/rtc`` stays for older clients (and for SDKs told not to use one
PeerConnection), so clients of both kinds meet in one room.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import logging

import aiohttp
import pytest
from livekit import api
from livekit.protocol import models
from livekit.protocol import rtc as signal

from .helpers import TIMEOUT, listening, make_token, unique_room, wait_until

FALLBACK_WORDS = ("falling back", "not found (404)", "Retrying")


def join_request_param(request: signal.JoinRequest, *, compress: bool = False) -> str:
    payload = request.SerializeToString()
    wrapped = signal.WrappedJoinRequest(
        compression=signal.WrappedJoinRequest.Compression.GZIP if compress else signal.WrappedJoinRequest.Compression.NONE,
        join_request=gzip.compress(payload) if compress else payload)
    return base64.urlsafe_b64encode(wrapped.SerializeToString()).decode()


def python_join_request(**fields) -> signal.JoinRequest:
    return signal.JoinRequest(
        client_info=models.ClientInfo(sdk=models.ClientInfo.SDK.PYTHON, protocol=16, client_protocol=1),
        connection_settings=signal.ConnectionSettings(auto_subscribe=True), **fields)


async def v1_status(server, token: str | None, join_request: str | None, path: str = "/rtc/v1/validate"
                    ) -> tuple[int, str]:
    params = {"join_request": join_request} if join_request is not None else {}
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT)) as session:
        async with session.get(f"{server.http_url}{path}", params=params, headers=headers) as response:
            return response.status, await response.text()


async def test_sdk_joins_at_rtc_v1_without_falling_back(participants, lk_server, caplog):
    """The SDK logs a warning when it falls back to /rtc; none may appear in a job's log."""
    from livekit import rtc

    with caplog.at_level(logging.WARNING, logger="livekit"):
        await participants(unique_room(), "v1-client")
        # The SDK forwards its log records in batches, in order; a failed connect elsewhere logs a warning that
        # can only arrive after every record of the join above.
        sentinel = rtc.Room()
        with pytest.raises(rtc.ConnectError):
            await asyncio.wait_for(sentinel.connect("ws://127.0.0.1:9", make_token(lk_server, "x", "y")), TIMEOUT)
        await wait_until(lambda: any("127.0.0.1:9" in r.getMessage() or "signal connection failed" in r.getMessage()
                                     for r in caplog.records), "the SDK's log records reach Python")
    join_records = [r.getMessage() for r in caplog.records]
    assert not [m for m in join_records if any(w in m for w in FALLBACK_WORDS) and "127.0.0.1:9" not in m]


async def test_v1_needs_a_join_request(lk_server):
    token = make_token(lk_server, "alice", unique_room())
    assert await v1_status(lk_server, token, None) == (400, "join_request is required")
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT)) as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            async with session.ws_connect(f"{lk_server.url}/rtc/v1", headers={"Authorization": f"Bearer {token}"}):
                pass
    assert refused.value.status == 400


@pytest.mark.parametrize(("join_request", "message"), [
    ("%%% not base64 %%%", "cannot base64 decode wrapped join request"),
    (base64.urlsafe_b64encode(b"\xff\xff\xff\xff").decode(), "cannot unmarshal wrapped join request"),
    (base64.urlsafe_b64encode(signal.WrappedJoinRequest(join_request=b"\xff\xff\xff").SerializeToString()).decode(),
     "cannot unmarshal join request"),
    (base64.urlsafe_b64encode(signal.WrappedJoinRequest(compression=signal.WrappedJoinRequest.Compression.GZIP,
                                                        join_request=b"not gzip").SerializeToString()).decode(),
     "cannot read decompressed join request"),
    (base64.urlsafe_b64encode(signal.WrappedJoinRequest(
        compression=signal.WrappedJoinRequest.Compression.GZIP,
        join_request=gzip.compress(b"\x1a\x00" + b"\x00" * (2 << 20))).SerializeToString()).decode(),
     "join request too large"),
], ids=["not-base64", "not-a-wrapper", "not-a-join-request", "not-gzip", "gzip-bomb"])
async def test_unreadable_join_requests_are_refused_with_400(lk_server, join_request, message):
    status, text = await v1_status(lk_server, make_token(lk_server, "alice", unique_room()), join_request)
    assert (status, text) == (400, message)


async def test_v1_validate_tells_good_join_requests_from_bad_tokens(lk_server):
    room = unique_room()
    good = join_request_param(python_join_request())
    assert await v1_status(lk_server, make_token(lk_server, "alice", room), good) == (200, "success")
    gzipped = join_request_param(python_join_request(), compress=True)
    assert await v1_status(lk_server, make_token(lk_server, "alice", room), gzipped) == (200, "success")
    status, _ = await v1_status(lk_server, make_token(lk_server, "alice", room, room_join=False), good)
    assert status == 401


async def raw_v1_join(server, token: str, request: signal.JoinRequest) -> signal.JoinResponse:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT)) as session:
        async with session.ws_connect(f"{server.url}/rtc/v1", params={"join_request": join_request_param(request)},
                                      headers={"Authorization": f"Bearer {token}"}) as ws:
            first = await ws.receive(timeout=TIMEOUT)
            assert first.type == aiohttp.WSMsgType.BINARY
            response = signal.SignalResponse.FromString(first.data)
            assert response.WhichOneof("message") == "join"
            await ws.send_bytes(signal.SignalRequest(leave=signal.LeaveRequest()).SerializeToString())
            return response.join


async def test_v1_join_is_answered_for_one_peer_connection(lk_server):
    room = unique_room()
    join = await raw_v1_join(lk_server, make_token(lk_server, "alice", room), python_join_request())
    assert join.room.name == room and join.participant.identity == "alice"
    assert not join.subscriber_primary  # the client offers on its one PeerConnection; the server never does
    assert join.participant.client_protocol == 1


async def test_join_tells_a_publisher_to_publish_fast(lk_server):
    # fast_publish makes the SDKs negotiate at once and queue later negotiations; without it the Rust SDK debounces
    # them and can lose one made while an offer is under way (a track published then is never offered)
    room = unique_room()
    publisher = await raw_v1_join(lk_server, make_token(lk_server, "alice", room), python_join_request())
    listener = await raw_v1_join(lk_server, make_token(lk_server, "bob", room, can_publish=False),
                                 python_join_request())
    assert publisher.fast_publish
    assert not listener.fast_publish


async def test_metadata_and_attributes_in_the_join_request_apply(lk_server, lk_api):
    room = unique_room()
    token = make_token(lk_server, "alice", room, metadata="from the token", attributes={"a": "token", "b": "token"})
    request = python_join_request(metadata="from the join", participant_attributes={"b": "join", "c": "join"})
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT)) as session:
        async with session.ws_connect(f"{lk_server.url}/rtc/v1", params={"join_request": join_request_param(request)},
                                      headers={"Authorization": f"Bearer {token}"}) as ws:
            join = signal.SignalResponse.FromString((await ws.receive(timeout=TIMEOUT)).data).join
            seen = await lk_api.room.get_participant(api.RoomParticipantIdentity(room=room, identity="alice"))
            await ws.send_bytes(signal.SignalRequest(leave=signal.LeaveRequest()).SerializeToString())
    for info in (join.participant, seen):
        assert info.metadata == "from the join"
        assert dict(info.attributes) == {"a": "token", "b": "join", "c": "join"}


async def test_metadata_in_the_join_request_needs_can_update_own_metadata(lk_server):
    token = make_token(lk_server, "alice", unique_room(), can_update_own_metadata=False)
    status, _ = await v1_status(lk_server, token, join_request_param(python_join_request(metadata="mine")))
    assert status == 401


async def test_clients_of_both_paths_hear_each_other_and_exchange_data(participants):
    room = unique_room()
    two_pcs = await participants(room, "two-pcs", single_peer_connection=False)  # /rtc
    one_pc = await participants(room, "one-pc")  # /rtc/v1
    await two_pcs.publish_tone(440)
    await one_pc.publish_tone(660)
    async with listening(await one_pc.wait_for_track("two-pcs")) as heard:
        await heard.hears_tone(440)
    async with listening(await two_pcs.wait_for_track("one-pc")) as heard:
        await heard.hears_tone(660)
    for sender, receiver in ((two_pcs, one_pc), (one_pc, two_pcs)):
        payload = f"{sender.identity} to {receiver.identity}".encode()
        await sender.send_data(payload, topic="both-paths")
        (packet,) = await receiver.events.wait("data_received", lambda p: p.data == payload)
        assert packet.participant.identity == sender.identity and packet.topic == "both-paths"


async def test_a_subscriber_hears_more_tracks_than_its_first_offer_had_room_for(participants):
    """The SDK's first offer brings three receive-only audio sections; the server asks for more as needed."""
    room = unique_room()
    listener = await participants(room, "listener")
    frequencies = (330, 440, 550, 660, 770)
    for index, frequency in enumerate(frequencies):
        speaker = await participants(room, f"speaker-{index}")
        await speaker.publish_tone(frequency)
    for index, frequency in enumerate(frequencies):
        async with listening(await listener.wait_for_track(f"speaker-{index}")) as heard:
            await heard.hears_tone(frequency)
