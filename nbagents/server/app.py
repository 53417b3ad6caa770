"""The aiohttp application: routes, CORS, and an orderly shutdown that tells every client why."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from aiohttp import web

from nbagents.server import agent_twirp, dispatch, signaling, twirp
from nbagents.server.auth import TokenVerifier
from nbagents.server.rooms import RoomDefaults, RoomRegistry
from nbagents.server.state import STATE, ServerState

_CORS_METHODS = "GET, POST, OPTIONS"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _cors_headers(request: web.Request) -> dict[str, str]:
    """livekit-server answers every origin; browsers need this to read even a 404 from /rtc/v1/validate."""
    headers = {
        "Access-Control-Allow-Origin": request.headers.get("Origin", "*"),
        "Access-Control-Allow-Methods": _CORS_METHODS,
        "Access-Control-Allow-Headers": request.headers.get("Access-Control-Request-Headers", "*"),
        "Access-Control-Max-Age": "600",
        "Vary": "Origin",
    }
    if "Origin" in request.headers:
        headers["Access-Control-Allow-Credentials"] = "true"
    return headers


@web.middleware
async def cors(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.method == "OPTIONS":
        return web.Response(status=204, headers=_cors_headers(request))
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        exc.headers.update(_cors_headers(request))
        raise
    if not response.prepared:  # a websocket has already sent its headers
        response.headers.update(_cors_headers(request))
    return response


async def health(request: web.Request) -> web.Response:
    return web.Response(text="OK")


def make_app(api_keys: Mapping[str, str], room_defaults: RoomDefaults = RoomDefaults()) -> web.Application:
    app = web.Application(middlewares=[cors])
    rooms = RoomRegistry(room_defaults)
    app[STATE] = ServerState(verifier=TokenVerifier(api_keys), rooms=rooms,
                             agents=dispatch.AgentDispatcher(rooms, api_keys))
    app.router.add_get("/", health)
    app.router.add_get("/rtc", signaling.rtc)
    app.router.add_get("/rtc/validate", signaling.validate)
    app.router.add_get("/rtc/v1", signaling.rtc_v1)
    app.router.add_get("/rtc/v1/validate", signaling.rtc_v1)
    app.router.add_get("/agent", dispatch.agent_worker)
    app.router.add_route("*", "/twirp/livekit.RoomService/{method}", twirp.room_service)
    app.router.add_route("*", "/twirp/livekit.AgentDispatchService/{method}", agent_twirp.agent_dispatch_service)
    app.router.add_route("*", "/twirp/{service}/{method}", twirp.unknown_service)
    app.on_shutdown.append(_disconnect_everyone)
    return app


async def _disconnect_everyone(app: web.Application) -> None:
    state = app[STATE]
    await state.agents.close()
    await state.rooms.close_all()
