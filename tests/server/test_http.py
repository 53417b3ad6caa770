"""The server's HTTP surface without WebRTC: CORS, /rtc/v1 refusals, validation, Twirp errors, bad frames."""

from __future__ import annotations

import aiohttp
import pytest
from livekit import api
from livekit.protocol import room as room_api

from nbagents.server import DevServer


@pytest.fixture(scope="module")
def server():
    with DevServer() as credentials:
        yield credentials


def http(url: str) -> str:
    return url.replace("ws://", "http://", 1)


def token(server, **grants) -> str:
    return api.AccessToken(server.api_key, server.api_secret).with_identity("probe").with_grants(
        api.VideoGrants(**grants)).to_jwt()


async def test_rtc_v1_refusals_are_readable_across_origins(server):
    """Browsers read /rtc/v1/validate to learn why a join failed; without CORS headers they cannot."""
    async with aiohttp.ClientSession() as session:
        async with session.get(http(server.url) + "/rtc/v1/validate", headers={"Origin": "http://example.test"},
                               params={"access_token": token(server, room_join=True, room="r")}) as r:
            assert r.status == 400 and await r.text() == "join_request is required"
            assert r.headers["Access-Control-Allow-Origin"] == "http://example.test"


async def test_cors_preflight_is_answered(server):
    async with aiohttp.ClientSession() as session:
        async with session.options(http(server.url) + "/twirp/livekit.RoomService/ListRooms", headers={
                "Origin": "http://example.test", "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type"}) as r:
            assert r.status == 204
            assert r.headers["Access-Control-Allow-Headers"] == "authorization, content-type"


async def test_validate_explains_a_refused_token(server):
    async with aiohttp.ClientSession() as session:
        async with session.get(http(server.url) + "/rtc/validate") as r:
            assert r.status == 401 and "no access token" in await r.text()
        async with session.get(http(server.url) + "/rtc/validate",
                               params={"access_token": token(server, room_join=True, room="r")}) as r:
            assert r.status == 200


async def twirp(server, method: str, body: bytes, content_type="application/protobuf", bearer: str | None = None):
    headers = {"Content-Type": content_type}
    if bearer:
        headers["Authorization"] = f"Bearer {bearer}"
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{http(server.url)}/twirp/livekit.RoomService/{method}", data=body,
                                headers=headers) as r:
            return r.status, r.headers.get("Access-Control-Allow-Origin"), await r.read()


async def test_twirp_client_mistakes_get_4xx_twirp_errors(server):
    admin = token(server, room_create=True, room_list=True)
    status, _, body = await twirp(server, "NoSuchMethod", b"", bearer=admin)
    assert status == 404 and b'"bad_route"' in body
    status, _, body = await twirp(server, "ListRooms", b"\xff\xff\xff garbage", bearer=admin)
    assert status == 400 and b'"malformed"' in body
    status, _, body = await twirp(server, "ListRooms", b"")
    assert status == 401 and b'"unauthenticated"' in body
    status, _, body = await twirp(server, "ListRooms", b"", bearer=token(server, room_create=True))
    assert status == 403 and b'"permission_denied"' in body and b"roomList" in body
    status, _, body = await twirp(server, "GetParticipant", b"{\"room\": \"nope\", \"identity\": \"x\"}",
                                  "application/json", bearer=token(server, room_admin=True, room="nope"))
    assert status == 404 and b'"not_found"' in body


async def test_twirp_speaks_json_as_well_as_protobuf(server):
    admin = token(server, room_create=True, room_list=True)
    status, cors, body = await twirp(server, "CreateRoom", b'{"name": "json-room", "emptyTimeout": 7}',
                                     "application/json", bearer=admin)
    assert status == 200 and cors == "*" and b'"json-room"' in body
    status, _, body = await twirp(server, "ListRooms", room_api.ListRoomsRequest(names=["json-room"]).SerializeToString(),
                                  bearer=admin)
    rooms = room_api.ListRoomsResponse.FromString(body).rooms
    assert [(r.name, r.empty_timeout) for r in rooms] == [("json-room", 7)]


async def test_garbage_on_the_signal_websocket_closes_only_that_connection(server):
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(server.url + "/rtc",
                                      headers={"Authorization": "Bearer " + token(server, room_join=True, room="g")})
        first = await ws.receive()
        assert first.type == aiohttp.WSMsgType.BINARY  # the JoinResponse
        await ws.send_bytes(b"\xff\xfe not a protobuf")
        while (message := await ws.receive(timeout=10)).type not in (aiohttp.WSMsgType.CLOSE,
                                                                      aiohttp.WSMsgType.CLOSED):
            pass
        async with session.get(http(server.url) + "/") as r:
            assert await r.text() == "OK"


async def test_a_resume_attempt_is_answered_with_a_full_reconnect_request(server):
    from livekit.protocol import rtc as signal

    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(server.url + "/rtc", params={"reconnect": "1", "sid": "PA_gone"},
                                      headers={"Authorization": "Bearer " + token(server, room_join=True, room="g")})
        message = await ws.receive(timeout=10)
        response = signal.SignalResponse.FromString(message.data)
        assert response.WhichOneof("message") == "leave"
        assert response.leave.action == signal.LeaveRequest.Action.RECONNECT
