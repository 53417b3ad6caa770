"""A launched job's room: created with CreateRoom, with the job's ``departure_timeout``, before it connects.

A dispatched job finds its room already there (the server dispatched it because of the room); a launched
one has nobody to create it, so nbagents does. Who does:

- the kernel, when ``livekit.api`` is already loaded there (a notebook that uses livekit-agents has loaded
  it; :func:`creates_at_launch`), once the job's entrypoint has started (as the job would, so that the
  request's work stays off the job's start): the request goes from a thread of the kernel's
  (:func:`create_in_background`) and the job is told the outcome (``ipc.RoomCreated``). The job process
  then needs none of the HTTP client, the request signing and the TLS library code, which keeps those
  pages out of its memory;
- otherwise the job itself, concurrently with its entrypoint (importing ``livekit.api`` would cost the
  kernel a few hundred milliseconds).

Either way the job's room connects only once the room exists (``JobRoom.connect``), and a failed creation
is the same error there: ``ConnectionError`` naming the room, the server and the cause.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Callable

from nbagents.runtime.tokens import mints_at_launch

__all__ = ["RoomNotCreated", "create_in_background", "create_room", "creates_at_launch", "describe_failure"]


class RoomNotCreated(Exception):
    """CreateRoom failed in the kernel; the message is :func:`describe_failure` of what it raised there."""


def creates_at_launch() -> bool:
    """Whether the kernel creates launched jobs' rooms (``livekit.api`` is loaded in this process)."""
    return mints_at_launch()


def http_url(url: str) -> str:
    """The server's HTTP(S) address for its ``ws(s)://`` one (the API is served on the same port)."""
    return url.replace("ws://", "http://", 1).replace("wss://", "https://", 1)


async def create_room(url: str, api_key: str, api_secret: str, room: str, departure_timeout: int) -> None:
    """CreateRoom ``room`` with ``departure_timeout`` (seconds; 0 keeps the server's default) on the server
    at ``url`` (``ws://`` or ``http://``); raises what livekit-api raises (``TwirpError``, aiohttp's errors)."""
    from livekit import api

    lkapi = api.LiveKitAPI(url=http_url(url), api_key=api_key, api_secret=api_secret)
    try:
        await lkapi.room.create_room(api.CreateRoomRequest(name=room, departure_timeout=departure_timeout))
    finally:
        await lkapi.aclose()


def describe_failure(exc: BaseException) -> str:
    """How a failed creation is reported: the exception's type and message."""
    if isinstance(exc, RoomNotCreated):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


_loop: asyncio.AbstractEventLoop | None = None
_loop_lock = threading.Lock()


def _creation_loop() -> asyncio.AbstractEventLoop:
    """The kernel's event loop for room creations: one daemon thread, started on first use."""
    global _loop
    with _loop_lock:
        if _loop is None:
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="nbagents-rooms", daemon=True).start()
            _loop = loop
        return _loop


def create_in_background(url: str, api_key: str, api_secret: str, room: str, departure_timeout: int,
                         done: Callable[[str | None], Any]) -> None:
    """Start :func:`create_room` on the kernel's room thread; returns at once.

    ``done(None)`` once the room exists, or ``done(error)`` with :func:`describe_failure`'s text; it is
    called on that thread.
    """

    async def create() -> None:
        try:
            await create_room(url, api_key, api_secret, room, departure_timeout)
        except Exception as exc:
            done(describe_failure(exc))
        else:
            done(None)

    asyncio.run_coroutine_threadsafe(create(), _creation_loop())
