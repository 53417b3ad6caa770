"""A dead engine is noticed: a local one is restarted by the next launch, a remote one is reported unreachable.

Each test gives the kernel a session of its own (``launch()`` and ``nbagents.sim`` use it) whose engine
the test starts and then kills for real.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from nbagents import JobContext, launch, sim
from nbagents.engines import make_engine
from nbagents.engines.remote import RemoteEngine
from nbagents.runtime import engine_session
from nbagents.runtime.engine_session import EngineSession
from nbagents.server import DevServer

from waiting import WAIT, wait_until

TEST_CONFIG = Path(__file__).parent.parent / "livekit-server.yaml"


async def connect_and_leave(ctx: JobContext) -> None:
    await ctx.connect()
    ctx.shutdown(reason="connected")


@pytest.fixture
def session(monkeypatch: pytest.MonkeyPatch):
    """A fresh kernel engine session, stopped at the end."""
    fresh = EngineSession()
    monkeypatch.setattr(engine_session, "_shared", fresh)
    yield fresh
    fresh.stop()


def _engine_options(name: str) -> dict:
    return {"config_file": str(TEST_CONFIG)} if name == "livekit-server" else {}


async def test_a_dead_local_engine_is_restarted_by_the_next_launch(lk_server, session, room_name, capfd) -> None:
    session.use_engine(make_engine(lk_server.engine, **_engine_options(lk_server.engine)))
    url, key, secret = await asyncio.to_thread(session.wait, WAIT)
    first = await asyncio.wait_for(launch(connect_and_leave, room=room_name).wait(), WAIT)
    assert first.state == "succeeded", first

    engine = session.engine
    os.kill(engine.pid, signal.SIGKILL)
    await wait_until(lambda: engine.exited() is not None, what="the engine to be seen dead")
    assert engine.exited() == "killed by SIGKILL"

    job = launch(connect_and_leave, room=room_name + "-again")
    result = await asyncio.wait_for(job.wait(), WAIT)
    assert result.state == "succeeded", result
    assert job.connected is not None and job.connected.url == url  # same port: URLs handed out still work
    assert session.credentials == (url, key, secret)
    notice = f"nbagents engine: the {lk_server.engine} engine at {url} had stopped (killed by SIGKILL); restarted it"
    assert session.notices == [notice]
    assert notice in capfd.readouterr().err.splitlines()

    async with sim.join(room_name + "-sim", "alice") as alice:  # simulated participants use it too
        assert alice.url == url


async def test_a_restarted_engine_takes_another_port_when_its_own_is_taken(session, room_name) -> None:
    session.use_engine(make_engine("embedded"))
    url, _, _ = await asyncio.to_thread(session.wait, WAIT)
    engine = session.engine
    os.kill(engine.pid, signal.SIGKILL)
    await wait_until(lambda: engine.exited() is not None, what="the engine to be seen dead")
    squatter = DevServer(port=int(url.rsplit(":", 1)[1]))  # something else took the port meanwhile
    squatter.start()
    try:
        result = await asyncio.wait_for(launch(connect_and_leave, room=room_name).wait(), WAIT)
        assert result.state == "succeeded", result
        new_url = session.credentials.url
        assert new_url != url
        assert session.notices == [f"nbagents engine: the embedded engine at {url} had stopped (killed by SIGKILL); "
                                   f"restarted it at {new_url}"]
    finally:
        squatter.stop()


async def test_a_changed_livekit_url_is_noted_once_and_the_engine_kept(session, room_name, monkeypatch) -> None:
    monkeypatch.setenv("NBAGENTS_ENGINE", "embedded")
    monkeypatch.delenv("LIVEKIT_URL", raising=False)
    session.start()
    url, _, _ = await asyncio.to_thread(session.wait, WAIT)
    monkeypatch.setenv("LIVEKIT_URL", "wss://example.invalid")  # e.g. switching to LiveKit Cloud mid-session
    result = await asyncio.wait_for(launch(connect_and_leave, room=room_name).wait(), WAIT)
    assert result.state == "succeeded", result
    assert session.credentials.url == url
    notice = (f"nbagents engine: LIVEKIT_URL changed after the engine was chosen; this kernel's jobs keep using the "
              f"embedded engine at {url}. Restart the kernel to use the new setting")
    assert session.notices == [notice]
    session.start()  # the same change is not noted again
    assert session.notices == [notice]


def _server_at(name: str, port: int | None = None, key: str | None = None, secret: str | None = None):
    """A server of engine ``name`` that the kernel's session did not start (the test's "remote" one)."""
    if name == "livekit-server":
        return make_engine(name, config_file=str(TEST_CONFIG), port=port, api_key=key, api_secret=secret)
    return make_engine(name, port=port or 0, api_key=key, api_secret=secret)


async def test_an_unreachable_remote_engine_fails_the_next_launch_saying_what_to_do(lk_server, session,
                                                                                   room_name) -> None:
    server = _server_at(lk_server.engine)
    url, key, secret = server.start()
    try:
        session.use_engine(RemoteEngine(url, key, secret))
        await asyncio.to_thread(session.wait, WAIT)
        assert (await asyncio.wait_for(launch(connect_and_leave, room=room_name).wait(), WAIT)).state == "succeeded"
    finally:
        server.stop()  # the remote server goes away; nbagents did not start it and cannot restart it

    result = await asyncio.wait_for(launch(connect_and_leave, room=room_name + "-2").wait(), WAIT)
    assert result.state == "failed"
    assert f"the remote LiveKit server at {url} (LIVEKIT_URL) is unreachable" in result.error
    assert "start it again (or correct LIVEKIT_URL), or unset LIVEKIT_URL" in result.error
    assert session.notices and "is unreachable" in session.notices[-1]
    with pytest.raises(sim.SimError, match="is unreachable"):
        await sim.join(room_name + "-sim", "alice")

    again = _server_at(lk_server.engine, int(url.rsplit(":", 1)[1]), key, secret)  # the user starts it again
    again.start()
    try:
        result = await asyncio.wait_for(launch(connect_and_leave, room=room_name + "-3").wait(), WAIT)
        assert result.state == "succeeded", result  # checked again, and usable again
    finally:
        again.stop()
