"""Simulated participants, heard and seen by a plain ``rtc.Room`` in the test against a real server."""

from __future__ import annotations

import asyncio
import math
import os
import secrets
import wave
from pathlib import Path

import numpy as np
import psutil
import pytest
from livekit import api, rtc

from nbagents import sim

EVENT_TIMEOUT = 30.0


def _token(server, room: str, identity: str) -> str:
    grants = api.VideoGrants(room_join=True, room=room)
    return api.AccessToken(server.api_key, server.api_secret).with_identity(identity).with_grants(grants).to_jwt()


def _creds(server) -> tuple[str, str, str]:
    return (server.url, server.api_key, server.api_secret)


def _room_name() -> str:
    return f"sim-{secrets.token_hex(4)}"


class Listener:
    """A plain rtc.Room that records what it hears and sees."""

    def __init__(self) -> None:
        self.room = rtc.Room()
        self.changed = asyncio.Event()
        self.tracks: list[tuple[rtc.Track, str]] = []
        self.attribute_changes: list[tuple[str, dict[str, str]]] = []
        self.data: list[tuple[bytes, str | None, str]] = []
        self.room.on("participant_connected", lambda p: self.changed.set())
        self.room.on("participant_disconnected", lambda p: self.changed.set())
        self.room.on("track_subscribed", lambda track, pub, p: self._add(self.tracks, (track, p.identity)))
        self.room.on(
            "participant_attributes_changed", lambda changed, p: self._add(self.attribute_changes, (p.identity, dict(changed)))
        )
        self.room.on(
            "data_received",
            lambda pkt: self._add(self.data, (bytes(pkt.data), pkt.participant.identity if pkt.participant else None, pkt.topic)),
        )

    def _add(self, items: list, item: object) -> None:
        items.append(item)
        self.changed.set()

    async def until(self, condition, what: str) -> None:
        async def wait() -> None:
            while not condition():
                self.changed.clear()
                try:  # woken by the room's events; re-checked now and then for state they do not announce
                    await asyncio.wait_for(self.changed.wait(), 0.25)
                except asyncio.TimeoutError:
                    pass

        try:
            await asyncio.wait_for(wait(), EVENT_TIMEOUT)
        except asyncio.TimeoutError:
            pytest.fail(f"timed out waiting until {what}")

    async def record(self, track: rtc.Track, stop: asyncio.Event) -> np.ndarray:
        """Collect 48 kHz mono samples from ``track`` until ``stop`` is set."""
        stream = rtc.AudioStream(track, sample_rate=48000, num_channels=1)
        chunks: list[np.ndarray] = []

        async def collect() -> None:
            async for event in stream:
                chunks.append(np.frombuffer(event.frame.data, dtype=np.int16).copy())

        task = asyncio.ensure_future(collect())
        await stop.wait()
        task.cancel()
        await stream.aclose()
        return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)


def loudest_frequency(samples: np.ndarray) -> float:
    loud = samples[np.abs(samples) > 0]  # ignore silence before the tone arrives
    spectrum = np.abs(np.fft.rfft(loud.astype(np.float64) * np.hanning(len(loud))))
    return float(np.argmax(spectrum)) * 48000 / len(loud)


@pytest.fixture
async def listener(lk_server):
    """A room name and a plain participant already connected to it."""
    room = _room_name()
    listening = Listener()
    await listening.room.connect(lk_server.url, _token(lk_server, room, "listener"))
    yield room, listening
    await listening.room.disconnect()


async def test_tone_is_heard_at_its_frequency_with_attributes_and_data(lk_server, listener):
    room, listening = listener
    async with sim.join(room, "alice", attributes={"user.language": "en"}, credentials=_creds(lk_server)) as alice:
        assert alice.sid and alice.sid.startswith("PA_")
        await listening.until(lambda: "alice" in listening.room.remote_participants, "the listener sees alice")
        alice_seen = listening.room.remote_participants["alice"]
        assert dict(alice_seen.attributes) == {"user.language": "en"}
        assert alice_seen.kind == rtc.ParticipantKind.PARTICIPANT_KIND_STANDARD

        playing = asyncio.ensure_future(alice.play_tone(freq_hz=1000.0, seconds=2.0))
        await listening.until(lambda: listening.tracks, "alice's track is subscribed")
        track, who = listening.tracks[0]
        assert who == "alice" and track.kind == rtc.TrackKind.KIND_AUDIO
        publication = next(iter(alice_seen.track_publications.values()))
        assert publication.source == rtc.TrackSource.SOURCE_MICROPHONE
        finished = asyncio.Event()
        recording = asyncio.ensure_future(listening.record(track, finished))
        played = await playing
        await asyncio.sleep(0.3)  # let the last frames cross the network before stopping the recording
        finished.set()
        samples = await recording
        assert played["frames"] == 200 and played["track_sid"] == track.sid
        loud = np.abs(samples) > 2000
        assert loud.sum() > 48000 * 0.5, f"heard only {loud.sum()} loud samples of a 2 s tone"
        assert loudest_frequency(samples) == pytest.approx(1000.0, abs=5.0)

        assert await alice.set_attributes({"user.language": "fr", "mood": "curious"}) == {
            "user.language": "fr",
            "mood": "curious",
        }
        await listening.until(
            lambda: dict(alice_seen.attributes) == {"user.language": "fr", "mood": "curious"}, "the attributes change"
        )
        assert ("alice", {"user.language": "fr", "mood": "curious"}) in listening.attribute_changes

        await alice.send_data("ping", topic="chat")
        await listening.until(lambda: listening.data, "the listener receives alice's data")
        assert listening.data[0] == (b"ping", "alice", "chat")

        await listening.room.local_participant.publish_data(b"\x00binary\xff", topic="bytes")
        await listening.room.local_participant.publish_data("hello world")
        first = await alice.wait_for_data(topic="bytes")
        greeting = await alice.wait_for_data(topic="")
        assert (first.payload, first.sender, first.topic) == (b"\x00binary\xff", "listener", "bytes")
        assert (greeting.text, greeting.sender) == ("hello world", "listener")
        assert [p.topic for p in alice.received] == ["bytes", ""]
    await listening.until(lambda: "alice" not in listening.room.remote_participants, "alice leaves")


async def test_participant_runs_in_its_own_process_and_leaving_ends_it(lk_server, listener):
    room, listening = listener
    before = {c.pid for c in psutil.Process().children(recursive=True)}
    alice = await sim.join(room, "alice", kind="sip", credentials=_creds(lk_server))
    children = {c.pid for c in psutil.Process().children(recursive=True)} - before
    assert alice._process is not None and alice._process.pid in children
    await listening.until(lambda: "alice" in listening.room.remote_participants, "the listener sees alice")
    assert listening.room.remote_participants["alice"].kind == rtc.ParticipantKind.PARTICIPANT_KIND_SIP
    await alice.leave()
    await alice.leave()  # twice is fine
    assert alice._process.returncode == 0
    await listening.until(lambda: "alice" not in listening.room.remote_participants, "alice leaves")
    with pytest.raises(sim.SimError, match="not running|has left"):
        await alice.play_tone()


async def test_a_crashed_participant_process_fails_requests_clearly(lk_server, listener):
    room, _ = listener
    alice = await sim.join(room, "alice", credentials=_creds(lk_server))
    try:
        os.kill(alice._process.pid, 9)
        with pytest.raises(sim.SimError, match="alice.*(stopped|not running).*(exited|code) -9"):
            await alice.set_attributes({"a": "b"})
    finally:
        await alice.leave()


def _write_wav(path: Path, *, rate: int, channels: int, freq: float, seconds: float) -> None:
    t = np.arange(int(rate * seconds)) / rate
    tone = (0.5 * 32767 * np.sin(2 * math.pi * freq * t)).astype(np.int16)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.repeat(tone[:, None], channels, axis=1).tobytes())


async def test_play_wav_resamples_and_downmixes(lk_server, listener, tmp_path):
    room, listening = listener
    path = tmp_path / "tone.wav"
    _write_wav(path, rate=16000, channels=2, freq=600.0, seconds=1.5)
    async with sim.join(room, "bob", credentials=_creds(lk_server)) as bob:
        playing = asyncio.ensure_future(bob.play_wav(path))
        await listening.until(lambda: listening.tracks, "bob's track is subscribed")
        finished = asyncio.Event()
        recording = asyncio.ensure_future(listening.record(listening.tracks[0][0], finished))
        played = await playing
        await asyncio.sleep(0.3)
        finished.set()
        samples = await recording
    assert played["frames"] == 150
    assert loudest_frequency(samples) == pytest.approx(600.0, abs=5.0)


async def test_bad_input_is_rejected_with_a_clear_message(lk_server, listener, tmp_path):
    room, _ = listener
    with pytest.raises(ValueError, match="unknown participant kind 'robot'; choose one of standard, agent"):
        sim.join(room, "x", kind="robot", credentials=_creds(lk_server))
    with pytest.raises(TypeError, match="strings"):
        sim.join(room, "x", attributes={"n": 1}, credentials=_creds(lk_server))
    async with sim.join(room, "carol", credentials=_creds(lk_server)) as carol:
        with pytest.raises(FileNotFoundError, match="no WAV file at .*missing.wav"):
            await carol.play_wav(tmp_path / "missing.wav")
        not_wav = tmp_path / "notes.wav"
        not_wav.write_text("not audio")
        with pytest.raises(ValueError, match="not a PCM WAV file"):
            await carol.play_wav(not_wav)
        with pytest.raises(ValueError, match="freq_hz"):
            await carol.play_tone(freq_hz=-5)
        # still usable after rejected requests
        assert await carol.set_attributes({"ok": "yes"}) == {"ok": "yes"}


async def test_unreachable_server_is_reported(lk_server):
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(sim.SimError, match=r"could not connect to ws://127.0.0.1:\d+ .*Is the LiveKit server running"):
        async with sim.join("r", "dave", credentials=(f"ws://127.0.0.1:{port}", "k", "s"), connect_timeout=10):
            pass


async def test_a_deleted_room_disconnects_the_participant_with_the_reason(lk_server, listener):
    room, _ = listener
    async with sim.join(room, "erin", credentials=_creds(lk_server)) as erin:
        async with api.LiveKitAPI(lk_server.http_url, lk_server.api_key, lk_server.api_secret) as lkapi:
            await lkapi.room.delete_room(api.DeleteRoomRequest(room=room))
        deadline = asyncio.get_running_loop().time() + EVENT_TIMEOUT
        while erin.disconnect_reason is None:
            assert asyncio.get_running_loop().time() < deadline, "erin was never told the room was deleted"
            await asyncio.sleep(0.05)
        assert "ROOM_DELETED" in erin.disconnect_reason
        with pytest.raises(sim.SimError, match=r"erin.*was disconnected from room .*ROOM_DELETED.*join again"):
            await erin.send_data("anyone?")
