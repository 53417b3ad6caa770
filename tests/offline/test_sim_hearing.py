"""Simulated participants speak and listen through a real server (each engine): what one says with the offline
voice, another hears and recognises; what it cannot make out is reported as such, and a wait for speech that
times out says so."""

from __future__ import annotations

import uuid

import pytest

from nbagents import sim

PHRASES = ["hello this is the order desk", "goodbye"]


@pytest.mark.timeout(300)
async def test_one_participant_hears_what_another_says(server) -> None:
    room = f"hear-{uuid.uuid4().hex[:8]}"
    async with sim.join(room, "listener", phrases=PHRASES, strict=True) as listener, sim.join(room, "speaker") as speaker:
        said = await speaker.say("hello this is the order desk")
        assert await listener.wait_for_speech(timeout=60, sender="speaker") == "hello this is the order desk"
        heard = listener.heard[-1]
        assert heard.sender == "speaker"
        assert heard.started_at is not None and heard.ended_at is not None
        assert heard.started_at < said["ended_at"] + 1.0  # heard while it was said (plus the trip through the server)


@pytest.mark.timeout(300)
async def test_what_a_listener_cannot_make_out_is_reported_and_named_when_a_wait_times_out(server) -> None:
    room = f"hear-{uuid.uuid4().hex[:8]}"
    async with sim.join(room, "listener", phrases=PHRASES, strict=True) as listener, sim.join(room, "player") as player:
        await player.play_tone(440.0, 1.5)  # loud enough to be an utterance, no phrase at all
        with pytest.raises(TimeoutError) as raised:
            await listener.wait_for_speech(timeout=8)
        assert listener.heard == []
        assert [u.sender for u in listener.unrecognised] == ["player"]
        assert listener.unrecognised[0].text == ""
        assert "1 utterance(s) it could not make out" in str(raised.value)
