"""Path forms: every form of a path that livekit-server accepts reaches the same endpoint.

livekit-server drops one slash from a path that starts with ``//`` (livekit-client joins ``ws://host//rtc`` when
the server URL ends with ``/``, and livekit-api calls ``//twirp/...`` then), redirects any other unclean path
(repeated slashes inside it) with a 307 to its clean form, and matches exact paths, so a trailing slash is a 404.
"""

from __future__ import annotations

import aiohttp
import pytest
from livekit import api, rtc

from .agent_worker import RawWorker
from .helpers import TIMEOUT, make_token, unique_room

SIGNAL_ENDPOINTS = ("/rtc", "/rtc/validate", "/agent")


def variants(path: str) -> dict[str, tuple[str, str]]:
    """Path forms of ``path`` and what livekit-server does with each: ("serves" | "redirects" | "404", target)."""
    head, _, tail = path[1:].partition("/")
    forms = {
        "as-is": (path, ("serves", path)),
        "leading-double-slash": ("/" + path, ("serves", path)),
        "leading-triple-slash": ("//" + path, ("redirects", path)),
        "trailing-slash": (path + "/", ("404", path + "/")),
        "leading-double-slash-and-trailing-slash": ("/" + path + "/", ("404", path + "/")),
    }
    if tail:
        forms["double-slash-inside"] = (f"/{head}//{tail}", ("redirects", path))
    return {name: (form, expected) for name, (form, expected) in forms.items()}


CASES = [(endpoint, name, form, expected) for endpoint in SIGNAL_ENDPOINTS + ("/twirp/livekit.RoomService/ListRooms",)
         for name, (form, expected) in variants(endpoint).items()]


def admin_token(server) -> str:
    return make_token(server, "path-prober", None, room_list=True, room_create=True)


async def plain_request(server, path: str, token: str) -> aiohttp.ClientResponse:
    """The endpoint's answer to a plain request (POST for Twirp, GET otherwise), redirects not followed."""
    url = f"{server.http_url}{path}"
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT)) as session:
        if "/twirp" in path:
            headers["Content-Type"] = "application/json"
            response = await session.post(url, data=b"{}", headers=headers, allow_redirects=False)
        else:
            response = await session.get(url, headers=headers, allow_redirects=False)
        await response.read()
        return response


@pytest.mark.parametrize(("endpoint", "form_name", "form", "expected"), CASES,
                         ids=[f"{endpoint}-{name}" for endpoint, name, _, _ in CASES])
async def test_path_forms_are_resolved_like_livekit_server(lk_server, endpoint, form_name, form, expected):
    outcome, target = expected
    response = await plain_request(lk_server, form, admin_token(lk_server) if "twirp" in endpoint else
                                    make_token(lk_server, "path-prober", unique_room(), agent=True))
    if outcome == "redirects":
        assert response.status == 307, f"{form} answered {response.status}, expected a redirect to {target}"
        assert response.headers["Location"].split("?")[0] == target
    elif outcome == "404":
        assert response.status == 404, f"{form} answered {response.status}"
    elif endpoint == "/rtc/validate":
        assert response.status == 200
    elif endpoint.startswith("/twirp"):
        assert response.status == 200
        assert isinstance(await response.json(), dict)
    else:  # /rtc and /agent serve websockets only; a plain GET reaches them and is refused as not one
        assert response.status == 404


async def test_a_redirect_keeps_the_query(lk_server):
    token = make_token(lk_server, "path-prober", unique_room())
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT)) as session:
        async with session.get(f"{lk_server.http_url}/rtc//validate", params={"access_token": token},
                               allow_redirects=False) as response:
            assert response.status == 307
            location = response.headers["Location"]
    assert location.startswith("/rtc/validate?") and token in location


async def test_sdk_joins_through_a_server_url_ending_in_a_slash(lk_server):
    """The SDK appends ``/rtc`` to the URL's path, so ``ws://host:port/`` makes it ask for ``//rtc``."""
    room = unique_room()
    client = rtc.Room()
    try:
        await client.connect(lk_server.url + "/", make_token(lk_server, "slash", room))
        assert client.isconnected() and client.name == room
    finally:
        await client.disconnect()


async def test_signal_websocket_joins_at_a_leading_double_slash(lk_server):
    room = unique_room()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT)) as session:
        async with session.ws_connect(f"{lk_server.url}//rtc", params={"access_token": make_token(lk_server, "ds", room)},
                                      autoclose=False) as ws:
            first = await ws.receive(timeout=TIMEOUT)
    from livekit.protocol import rtc as signal
    assert first.type == aiohttp.WSMsgType.BINARY
    assert signal.SignalResponse.FromString(first.data).join.room.name == room


async def test_service_api_works_with_a_server_url_ending_in_a_slash(lk_server):
    name = unique_room()
    async with api.LiveKitAPI(lk_server.http_url + "/", lk_server.api_key, lk_server.api_secret,
                              timeout=aiohttp.ClientTimeout(total=TIMEOUT)) as client:
        await client.room.create_room(api.CreateRoomRequest(name=name))
        listed = await client.room.list_rooms(api.ListRoomsRequest(names=[name]))
    assert [room.name for room in listed.rooms] == [name]


async def test_twirp_call_to_an_unclean_path_succeeds_after_the_redirect(lk_server):
    name = unique_room()
    headers = {"Authorization": f"Bearer {admin_token(lk_server)}", "Content-Type": "application/json"}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT)) as session:
        async with session.post(f"{lk_server.http_url}/twirp//livekit.RoomService/CreateRoom",
                                json={"name": name}, headers=headers) as response:  # 307 keeps method and body
            assert response.status == 200
            assert (await response.json())["name"] == name


async def test_agent_worker_registers_at_a_leading_double_slash(lk_server):
    worker = await RawWorker.register(lk_server, path="//agent")
    try:
        assert worker.registration is not None and worker.registration.worker_id
    finally:
        await worker.close()
