"""Fixtures for the job runtime tests: jobs run against the session's server; a plain rtc.Room plays the human."""

from __future__ import annotations

import asyncio
import contextlib
import math
import secrets
from pathlib import Path
from typing import AsyncIterator, Callable

import numpy as np
import pytest
from waiting import wait_until
from livekit import api, rtc

from nbagents.runtime.job import Job



@pytest.fixture
def room_name() -> str:
    return "rt-" + secrets.token_hex(4)


@pytest.fixture
def jobs_dir(tmp_path: Path) -> Path:
    return tmp_path / "jobs"


class Human:
    """A second participant: a plain livekit rtc.Room, recording what it sees."""

    def __init__(self, room: rtc.Room) -> None:
        self.room = room
        self.data: list[tuple[str, str, bytes]] = []
        self.disconnect_reasons: list[int] = []
        self._tone_task: asyncio.Task[None] | None = None
        room.on("data_received", lambda p: self.data.append((p.participant.identity if p.participant else "", p.topic, bytes(p.data))))
        room.on("disconnected", lambda reason=None: self.disconnect_reasons.append(reason))

    async def play_tone(self, freq_hz: float = 440.0, amplitude: float = 0.5) -> None:
        """Publish a microphone track playing a sine tone until ``leave``."""
        source = rtc.AudioSource(48000, 1)
        track = rtc.LocalAudioTrack.create_audio_track("mic", source)
        await self.room.local_participant.publish_track(track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE))

        async def pump() -> None:
            n = 0
            samples = 480
            while True:
                t = (np.arange(samples) + n) / 48000
                pcm = (amplitude * 32767 * np.sin(2 * math.pi * freq_hz * t)).astype(np.int16)
                frame = rtc.AudioFrame(pcm.tobytes(), 48000, 1, samples)
                await source.capture_frame(frame)
                n += samples

        self._tone_task = asyncio.ensure_future(pump())

    async def leave(self) -> None:
        if self._tone_task is not None:
            self._tone_task.cancel()
        await self.room.disconnect()


@pytest.fixture
def human(server) -> Callable[..., contextlib.AbstractAsyncContextManager[Human]]:
    @contextlib.asynccontextmanager
    async def join(room: str, identity: str = "alice", attributes: dict[str, str] | None = None) -> AsyncIterator[Human]:
        token = (
            api.AccessToken(server.api_key, server.api_secret)
            .with_identity(identity)
            .with_attributes(attributes or {})
            .with_grants(api.VideoGrants(room_join=True, room=room, can_update_own_metadata=True))
            .to_jwt()
        )
        rtc_room = rtc.Room()
        person = Human(rtc_room)
        await rtc_room.connect(server.url, token)
        try:
            yield person
        finally:
            with contextlib.suppress(Exception):
                await person.leave()

    return join


async def wait_connected(job: Job) -> None:
    await wait_until(lambda: job.connected is not None or job.done, what=f"job {job.id} to connect")
    assert job.connected is not None, f"job ended before connecting: {job.result(0) if job.done else ''}"
