"""RPC and data streams, large payloads included.

An SDK sends an RPC payload over ~15 KiB as a data stream only when the remote participant's
``client_protocol`` (which its SDK sent at join, and the server passes on in ParticipantInfo) says it can
read one; otherwise it refuses with "Request payload too large". So a 20,000-character payload works both ways
exactly when the server carries ``client_protocol``.
"""

from __future__ import annotations

import asyncio

from livekit import rtc

from .helpers import TIMEOUT, unique_room

LARGE = 20_000


def text_of(length: int, seed: str) -> str:
    return (seed * (length // len(seed) + 1))[:length]


async def connected_pair(participants):
    room = unique_room()
    alice = await participants(room, "alice")
    bob = await participants(room, "bob")
    await alice.wait_for_participant("bob")
    await bob.wait_for_participant("alice")
    return alice, bob


async def test_remote_participants_carry_their_client_protocol(participants):
    alice, bob = await connected_pair(participants)
    # the SDK reads it from ParticipantInfo; a server that drops it makes every remote look like protocol 0
    assert alice.remote("bob")._info.client_protocol >= 1
    assert bob.remote("alice")._info.client_protocol >= 1


async def test_rpc_with_a_20000_character_payload_both_ways(participants):
    alice, bob = await connected_pair(participants)
    for caller, callee in ((alice, bob), (bob, alice)):
        received: list[str] = []

        async def echo(data: rtc.RpcInvocationData, received=received) -> str:
            received.append(data.payload)
            return data.payload[::-1]

        callee.local.register_rpc_method("echo-large", echo)
        payload = text_of(LARGE, f"from {caller.identity} to {callee.identity}; ")
        answer = await asyncio.wait_for(caller.local.perform_rpc(
            destination_identity=callee.identity, method="echo-large", payload=payload,
            response_timeout=TIMEOUT), TIMEOUT)
        assert received == [payload]
        assert answer == payload[::-1]
        callee.local.unregister_rpc_method("echo-large")


async def test_small_rpc_round_trip(participants):
    alice, bob = await connected_pair(participants)
    bob.local.register_rpc_method("add", lambda data: str(sum(int(x) for x in data.payload.split(","))))
    assert await alice.local.perform_rpc(destination_identity="bob", method="add", payload="2,3,4") == "9"


async def test_rpc_to_an_unregistered_method_fails_with_the_sdk_error(participants):
    alice, _ = await connected_pair(participants)
    try:
        await alice.local.perform_rpc(destination_identity="bob", method="nothing-here", payload="x",
                                      response_timeout=TIMEOUT)
    except rtc.RpcError as error:
        assert error.code == rtc.RpcError.ErrorCode.UNSUPPORTED_METHOD
    else:
        raise AssertionError("an RPC to a method bob never registered succeeded")


async def test_a_large_text_stream_arrives_whole(participants):
    alice, bob = await connected_pair(participants)
    arrived: asyncio.Future[tuple[str, str]] = asyncio.get_running_loop().create_future()

    async def read(reader: rtc.TextStreamReader, sender: str) -> None:
        arrived.set_result((sender, await reader.read_all()))

    bob.room.register_text_stream_handler("notes", lambda reader, sender: asyncio.ensure_future(read(reader, sender)))
    text = text_of(100_000, "a long note, in many chunks. ")
    await alice.local.send_text(text, topic="notes", destination_identities=["bob"])
    sender, received = await asyncio.wait_for(arrived, TIMEOUT)
    assert sender == "alice" and received == text


async def test_a_byte_stream_arrives_whole(participants):
    alice, bob = await connected_pair(participants)
    arrived: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    async def read(reader: rtc.ByteStreamReader, sender: str) -> None:
        chunks = [chunk async for chunk in reader]
        arrived.set_result(b"".join(chunks))

    bob.room.register_byte_stream_handler("blobs", lambda reader, sender: asyncio.ensure_future(read(reader, sender)))
    blob = bytes(range(256)) * 300  # 76,800 bytes
    writer = await alice.local.stream_bytes("blob.bin", topic="blobs", destination_identities=["bob"])
    await writer.write(blob)
    await writer.aclose()
    assert await asyncio.wait_for(arrived, TIMEOUT) == blob
