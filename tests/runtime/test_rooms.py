"""A launched job's room (nbagents/runtime/rooms.py): created with the job's departure_timeout, by the kernel
when livekit.api is loaded there and by the job otherwise; a room that cannot be created is the job's
``ctx.connect()`` error, naming the room."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from pathlib import Path

from livekit import api

from nbagents import JobContext, launch
from nbagents.runtime.engine_session import shared_engine
from nbagents.runtime.rooms import creates_at_launch

from waiting import WAIT

from .conftest import wait_connected


async def connect_and_wait(ctx: JobContext) -> None:
    await ctx.connect()
    await asyncio.sleep(3600)


async def _room(server, name: str) -> api.Room:  # noqa: ANN001
    lkapi = api.LiveKitAPI(url=server.url.replace("ws", "http", 1), api_key=server.api_key, api_secret=server.api_secret)
    try:
        rooms = (await lkapi.room.list_rooms(api.ListRoomsRequest(names=[name]))).rooms
    finally:
        await lkapi.aclose()
    assert len(rooms) == 1, rooms
    return rooms[0]


async def test_the_kernel_creates_the_room_with_the_jobs_departure_timeout(server, room_name, jobs_dir) -> None:
    assert creates_at_launch()  # this process has loaded livekit.api, as a notebook using livekit-agents has
    job = launch(connect_and_wait, room=room_name, departure_timeout=7, jobs_dir=jobs_dir)
    await wait_connected(job)
    assert (await _room(server, room_name)).departure_timeout == 7
    result = await job.stop(reason="enough")
    assert result.state == "succeeded", result.error


KERNEL_WITHOUT_LIVEKIT_API = textwrap.dedent(
    """
    import asyncio, sys
    from nbagents import launch
    from nbagents.runtime.engine_session import shared_engine
    from nbagents.runtime.rooms import creates_at_launch

    async def entrypoint(ctx):
        await ctx.connect()
        await asyncio.sleep(3600)

    async def main():
        shared_engine().use((sys.argv[1], sys.argv[2], sys.argv[3]))
        job = launch(entrypoint, room=sys.argv[4], jobs_dir=sys.argv[5], departure_timeout=7)
        while job.connected is None and not job.done:
            await asyncio.sleep(0.02)
        print(creates_at_launch(), "livekit.api" in sys.modules, job.connected is not None, flush=True)
        sys.stdin.readline()
        result = await job.stop(reason="enough")
        print(result.state, flush=True)

    asyncio.run(main())
    """
)


async def test_a_job_creates_its_room_itself_when_the_kernel_has_not_loaded_livekit_api(server, room_name, tmp_path: Path) -> None:
    kernel = subprocess.Popen(
        [sys.executable, "-c", KERNEL_WITHOUT_LIVEKIT_API, server.url, server.api_key, server.api_secret, room_name, str(tmp_path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        line = await asyncio.wait_for(asyncio.to_thread(kernel.stdout.readline), WAIT)
        assert line.split() == ["False", "False", "True"]  # the kernel neither created the room nor imported livekit.api
        assert (await _room(server, room_name)).departure_timeout == 7
        kernel.stdin.write("\n")
        kernel.stdin.flush()
        assert (await asyncio.wait_for(asyncio.to_thread(kernel.stdout.readline), WAIT)).strip() == "succeeded"
    finally:
        kernel.kill()
        kernel.wait()


async def test_a_room_that_cannot_be_created_is_a_connection_error_naming_it(server, room_name, jobs_dir) -> None:
    shared_engine().use((server.url, server.api_key, "not-the-servers-secret-not-the-servers-secret"))
    job = launch(connect_and_wait, room=room_name, jobs_dir=jobs_dir)
    result = await job
    assert result.state == "failed"
    assert f"ConnectionError: nbagents could not create the room {room_name!r} on the LiveKit server at {server.url}" in result.error
