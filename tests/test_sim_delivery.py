"""A simulated participant reports what reached the room, not only what it generated.

``play_tone`` counts what the server acknowledged (its RTCP receiver reports) and whether anyone subscribed;
when the server acknowledges nothing — here it is stopped with SIGSTOP while the tone plays — it raises.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
from pathlib import Path

import pytest
from livekit import api, rtc

from nbagents import sim
from nbagents.engines import make_engine

from waiting import wait_until

TEST_CONFIG = Path(__file__).parent / "livekit-server.yaml"


def _creds(server) -> tuple[str, str, str]:
    return (server.url, server.api_key, server.api_secret)


def _token(server, room: str, identity: str) -> str:
    grants = api.VideoGrants(room_join=True, room=room)
    return api.AccessToken(server.api_key, server.api_secret).with_identity(identity).with_grants(grants).to_jwt()


def _check_counts(played: dict) -> None:
    assert played["frames"] == 100
    assert played["packets_sent"] > 0
    assert played["packets_lost"] == 0  # a private veth pair loses nothing
    assert played["packets_acknowledged"] == played["packets_sent"]  # a report covering the last packet came
    assert played["frames_acknowledged"] == played["frames"]
    assert played["reached_server"] is True


async def test_a_tone_reports_what_the_server_acknowledged_and_whether_anyone_subscribed(lk_server) -> None:
    room = f"delivery-{secrets.token_hex(3)}"
    async with sim.join(room, "alice", credentials=_creds(lk_server)) as alice:
        alone = await alice.play_tone(440, seconds=1.0)
        _check_counts(alone)
        assert alone["subscribed"] is False  # nobody else is in the room

        listener = rtc.Room()
        subscribed: list[rtc.Track] = []
        listener.on("track_subscribed", lambda track, publication, participant: subscribed.append(track))
        await listener.connect(lk_server.url, _token(lk_server, room, "listener"))
        try:
            await wait_until(lambda: subscribed, what="the listener to subscribe to alice's track")
            heard = await alice.play_tone(440, seconds=1.0)
            _check_counts(heard)
            assert heard["subscribed"] is True
            assert heard["track_sid"] == alone["track_sid"] == subscribed[0].sid
        finally:
            await listener.disconnect()


async def test_a_tone_that_never_reaches_the_server_is_an_error(lk_server) -> None:
    """The server is stopped (SIGSTOP) while the tone plays: 100 frames were generated, none arrived."""
    options = {"config_file": str(TEST_CONFIG)} if lk_server.engine == "livekit-server" else {}
    engine = make_engine(lk_server.engine, **options)
    credentials = engine.start()
    try:
        async with sim.join(f"lost-{secrets.token_hex(3)}", "alice", credentials=credentials) as alice:
            first = await alice.play_tone(440, seconds=0.5)  # publishes the track; it reaches the server
            assert first["reached_server"] is True
            os.kill(engine.pid, signal.SIGSTOP)
            try:
                with pytest.raises(sim.AudioNotDelivered, match=r"alice.*100 frames.*acknowledged none of it") as info:
                    await alice.play_tone(440, seconds=1.0)
            finally:
                os.kill(engine.pid, signal.SIGCONT)
            report = info.value.report
            assert report["frames"] == 100 and report["packets_sent"] > 0
            assert report["packets_acknowledged"] == 0 and report["frames_acknowledged"] == 0
            assert report["reached_server"] is False
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(engine.pid, signal.SIGCONT)
        engine.stop()
