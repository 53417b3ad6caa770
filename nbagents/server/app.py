"""The aiohttp application: routes, CORS, request limits, and an orderly shutdown that tells every client why.

Paths are resolved the way livekit-server resolves them (see ``paths``): ``//rtc`` is ``/rtc``, an unclean path
is redirected to its clean form, and only exact paths match. One catch-all aiohttp route hands every request
to ``route``, which does that and then picks the handler.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from aiohttp import web

from nbagents.server import agent_twirp, dispatch, paths, signaling, twirp
from nbagents.server.auth import TokenVerifier
from nbagents.server.rooms import RoomDefaults, RoomRegistry
from nbagents.server.state import STATE, ServerState

_CORS_METHODS = "GET, POST, OPTIONS"
#: livekit-server (Go's net/http) reads request headers up to 1 MB (``http.DefaultMaxHeaderBytes``); aiohttp's
#: default of 8 KiB per line would refuse a token carrying a long identity before the server could say why.
MAX_HEADER_BYTES = 1 << 20
#: Twirp request bodies up to this size are read and checked (livekit-server reads any size; its own limits,
#: such as 512 KiB of metadata, then refuse what is too big); larger ones are refused unread.
MAX_BODY_BYTES = 16 << 20

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


#: exact paths, as livekit-server registers them
ROUTES: dict[str, Handler] = {
    "/": health,
    "/rtc": signaling.rtc,
    "/rtc/validate": signaling.validate,
    "/rtc/v1": signaling.rtc_v1,
    "/rtc/v1/validate": signaling.validate_v1,
    "/agent": dispatch.agent_worker,
}

#: Twirp services by name: ``/twirp/<service>/<Method>``
TWIRP_SERVICES: dict[str, Callable[[web.Request, str], Awaitable[web.Response]]] = {
    "livekit.RoomService": twirp.room_service,
    "livekit.AgentDispatchService": agent_twirp.agent_dispatch_service,
}


async def route(request: web.Request) -> web.StreamResponse:
    """Resolve the path as livekit-server does, then hand the request to its handler."""
    resolved = paths.resolve(request.path)
    if resolved.redirect:
        location = resolved.path + (f"?{request.query_string}" if request.query_string else "")
        raise web.HTTPTemporaryRedirect(location)
    handler = ROUTES.get(resolved.path)
    if handler is not None:
        return await handler(request)
    if resolved.path.startswith("/twirp/"):
        service, _, method = resolved.path[len("/twirp/"):].partition("/")
        serve = TWIRP_SERVICES.get(service)
        if serve is not None:
            return await serve(request, method)
        return twirp.unknown_service(resolved.path)
    raise web.HTTPNotFound(text=f"404 page not found: this server has no {resolved.path!r}")


def make_app(api_keys: Mapping[str, str], room_defaults: RoomDefaults = RoomDefaults()) -> web.Application:
    app = web.Application(middlewares=[cors], client_max_size=MAX_BODY_BYTES,
                          handler_args={"max_line_size": MAX_HEADER_BYTES, "max_field_size": MAX_HEADER_BYTES})
    rooms = RoomRegistry(room_defaults)
    app[STATE] = ServerState(verifier=TokenVerifier(api_keys), rooms=rooms,
                             agents=dispatch.AgentDispatcher(rooms, api_keys))
    app.router.add_route("*", "/{path:.*}", route)
    app.on_shutdown.append(_disconnect_everyone)
    return app


async def _disconnect_everyone(app: web.Application) -> None:
    state = app[STATE]
    await state.agents.close()
    await state.rooms.close_all()
