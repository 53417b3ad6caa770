"""Shared tools of the conformance suite: tokens, participants, events, tones and their detection.

Everything here talks to the server under test only through the public `livekit` SDK and `livekit-api`,
so the suite runs unchanged against any LiveKit server given its URL, API key and secret.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import itertools
import math
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from livekit import api, rtc

#: Generous: the machine has two loaded cores, and a slow pass is far better than a flaky failure.
TIMEOUT = 20.0
SAMPLE_RATE = 48000
FRAME_SAMPLES = SAMPLE_RATE // 100  # 10 ms, the SDK's own frame size

# Every event a Room emits that a test may wait for; each is recorded from before connect() on.
ROOM_EVENTS = (
    "participant_connected", "participant_disconnected", "track_published", "track_unpublished",
    "track_subscribed", "track_unsubscribed", "track_muted", "track_unmuted", "room_metadata_changed",
    "participant_metadata_changed", "participant_name_changed", "participant_attributes_changed",
    "participant_permissions_changed", "data_received", "disconnected", "reconnecting", "reconnected",
    "local_track_published", "local_track_unpublished",
)


#: ``@engine_difference("embedded", reason=...)``: a documented, expected difference of that engine from the
#: reference (livekit-server); a strict xfail for that engine only (tests/conformance/conftest.py applies it).
engine_difference = pytest.mark.engine_difference


def unique_room(prefix: str = "room") -> str:
    """A room name no other test (nor an earlier run against the same server) uses."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def make_token(server: Any, identity: str, join: str | None, *, name: str | None = None,
               metadata: str | None = None, attributes: dict[str, str] | None = None, kind: str | None = None,
               ttl: datetime.timedelta | None = None, secret: str | None = None, **grants: Any) -> str:
    """A signed access token; ``grants`` are VideoGrants fields. ``join``: the room it lets one join (or None)."""
    if join is not None:
        grants.setdefault("room_join", True)
        grants.setdefault("room", join)
        grants.setdefault("can_update_own_metadata", True)  # off unless granted; most applications grant it
    token = api.AccessToken(server.api_key, secret or server.api_secret).with_identity(identity)
    token.with_grants(api.VideoGrants(**grants))
    if name is not None:
        token.with_name(name)
    if metadata is not None:
        token.with_metadata(metadata)
    if attributes is not None:
        token.with_attributes(attributes)
    if kind is not None:
        token.with_kind(kind)  # type: ignore[arg-type]
    if ttl is not None:
        token.with_ttl(ttl)
    return token.to_jwt()


class EventLog:
    """Records events of an emitter (a Room) from the moment it is attached, and waits for them.

    ``wait`` first looks at what already happened, so a test never misses an event that fired while it
    was busy awaiting something else.
    """

    def __init__(self, emitter: Any, names: tuple[str, ...] = ROOM_EVENTS) -> None:
        self.history: list[tuple[str, tuple[Any, ...]]] = []
        self._changed = asyncio.Event()
        for name in names:
            emitter.on(name, self._recorder(name))

    def _recorder(self, name: str) -> Callable[..., None]:
        def record(*args: Any) -> None:
            self.history.append((name, args))
            self._changed.set()
        return record

    def events(self, name: str, where: Callable[..., bool] = lambda *a: True) -> list[tuple[Any, ...]]:
        return [args for event, args in self.history if event == name and where(*args)]

    async def wait(self, name: str, where: Callable[..., bool] = lambda *a: True, *, after: int = 0,
                   timeout: float = TIMEOUT) -> tuple[Any, ...]:
        """The first ``name`` event (at history index >= ``after``) whose arguments satisfy ``where``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            for event, args in self.history[after:]:
                if event == name and where(*args):
                    return args
            self._changed.clear()
            remaining = deadline - loop.time()
            if remaining <= 0:
                seen = [event for event, _ in self.history[after:]]
                raise AssertionError(f"no matching {name!r} event within {timeout:.0f} s; events seen: {seen}")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    def mark(self) -> int:
        """A position in the history: pass it as ``after`` to wait only for what happens from now on."""
        return len(self.history)


async def wait_until(condition: Callable[[], Awaitable[bool] | bool], what: str, timeout: float = TIMEOUT,
                     interval: float = 0.1) -> None:
    """Poll a condition (sync or async) until it holds; for state only observable by asking (service API)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = condition()
        if asyncio.iscoroutine(result) or isinstance(result, Awaitable):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting until {what}")
        await asyncio.sleep(interval)


@dataclass
class Peer:
    """A connected participant: its Room and the log of everything the Room emitted."""

    room: rtc.Room
    events: EventLog
    identity: str
    tones: list[TonePublisher] = field(default_factory=list)

    @property
    def local(self) -> rtc.LocalParticipant:
        return self.room.local_participant

    def remote(self, identity: str) -> rtc.RemoteParticipant:
        return self.room.remote_participants[identity]

    async def wait_for_participant(self, identity: str) -> rtc.RemoteParticipant:
        if identity not in self.room.remote_participants:
            await self.events.wait("participant_connected", lambda p: p.identity == identity)
        return self.remote(identity)

    async def wait_for_track(self, publisher: str, name: str | None = None) -> rtc.RemoteAudioTrack:
        """The subscribed track of ``publisher`` (optionally with this name)."""
        args = await self.events.wait(
            "track_subscribed",
            lambda track, pub, p: p.identity == publisher and (name is None or pub.name == name))
        return args[0]

    async def publish_tone(self, frequency: float, name: str = "tone") -> TonePublisher:
        tone = TonePublisher(frequency, name)
        await tone.publish(self.local)
        self.tones.append(tone)
        return tone

    async def send_data(self, payload: bytes, **options: Any) -> None:
        await self.local.publish_data(payload, **options)


class ParticipantFactory:
    """Connects participants to the server under test and disconnects all of them when the test ends."""

    def __init__(self, server: Any) -> None:
        self.server = server
        self.peers: list[Peer] = []
        self._counter = itertools.count()

    async def __call__(self, room: str, identity: str | None = None, *, auto_subscribe: bool = True,
                       single_peer_connection: bool | None = None, token: str | None = None,
                       **token_options: Any) -> Peer:
        """``single_peer_connection=False`` makes the SDK join at /rtc (two PeerConnections) instead of its
        default, /rtc/v1 (one PeerConnection)."""
        identity = identity or f"p{next(self._counter)}"
        token = token or make_token(self.server, identity, room, **token_options)
        lk_room = rtc.Room()
        peer = Peer(lk_room, EventLog(lk_room), identity)
        self.peers.append(peer)
        options = rtc.RoomOptions(auto_subscribe=auto_subscribe, single_peer_connection=single_peer_connection)
        await asyncio.wait_for(lk_room.connect(self.server.url, token, options), TIMEOUT)
        return peer

    async def admin_view(self, room: str, identity: str) -> api.ParticipantInfo:
        """The participant as the service API sees it (GetParticipant with full credentials)."""
        async with service(self.server) as client:
            return await client.room.get_participant(api.RoomParticipantIdentity(room=room, identity=identity))

    async def close(self) -> None:
        for peer in self.peers:
            for tone in peer.tones:
                await tone.stop()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(peer.room.disconnect(), TIMEOUT)


# ---------------------------------------------------------------------------------------------------------
# Tones: a publisher that plays a pure sine, and a detector that says which frequency a track carries.


def sine_frames(frequency: float, amplitude: float = 0.4) -> AsyncIterator[rtc.AudioFrame]:
    async def frames() -> AsyncIterator[rtc.AudioFrame]:
        for index in itertools.count():
            t = (np.arange(FRAME_SAMPLES) + index * FRAME_SAMPLES) / SAMPLE_RATE
            pcm = (amplitude * 32767 * np.sin(2 * math.pi * frequency * t)).astype(np.int16)
            yield rtc.AudioFrame(pcm.tobytes(), SAMPLE_RATE, 1, FRAME_SAMPLES)
    return frames()


class TonePublisher:
    """Publishes a microphone track playing a continuous sine of one frequency, in real time."""

    def __init__(self, frequency: float, name: str = "tone") -> None:
        self.frequency = frequency
        self.name = name
        self.source = rtc.AudioSource(SAMPLE_RATE, 1, queue_size_ms=100)
        self.track = rtc.LocalAudioTrack.create_audio_track(name, self.source)
        self.publication: rtc.LocalTrackPublication | None = None
        self._task: asyncio.Task[None] | None = None

    async def publish(self, participant: rtc.LocalParticipant) -> rtc.LocalTrackPublication:
        self._task = asyncio.ensure_future(self._play())
        self.publication = await asyncio.wait_for(participant.publish_track(
            self.track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)), TIMEOUT)
        return self.publication

    async def _play(self) -> None:
        async for frame in sine_frames(self.frequency):
            await self.source.capture_frame(frame)  # paces itself: returns as the source drains in real time

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        with contextlib.suppress(Exception):
            await self.source.aclose()


@dataclass
class Heard:
    """What a window of received audio sounded like."""

    rms: float  # of int16 samples
    frequency: float  # the strongest frequency, Hz

    def is_tone(self, frequency: float, min_rms: float = 1000.0, tolerance: float = 25.0) -> bool:
        return self.rms >= min_rms and abs(self.frequency - frequency) <= tolerance

    def is_silent(self, max_rms: float = 200.0) -> bool:
        return self.rms <= max_rms


def analyse(samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> Heard:
    """RMS and dominant frequency (Hann-windowed FFT) of mono int16 samples."""
    x = samples.astype(np.float64)
    rms = float(np.sqrt(np.mean(x * x))) if len(x) else 0.0
    if len(x) < 2:
        return Heard(rms, 0.0)
    spectrum = np.abs(np.fft.rfft((x - x.mean()) * np.hanning(len(x))))
    peak = int(np.argmax(spectrum))
    return Heard(rms, peak * sample_rate / len(x))


class Listener:
    """Reads a remote audio track and answers questions about what it hears, window by window (200 ms)."""

    WINDOW = SAMPLE_RATE // 5

    def __init__(self, track: rtc.Track) -> None:
        self.stream = rtc.AudioStream(track, sample_rate=SAMPLE_RATE, num_channels=1)
        self.heard: list[Heard] = []
        self._buffer = np.zeros(0, dtype=np.int16)
        self._frames = aiter(self.stream)

    async def next_window(self) -> Heard:
        while len(self._buffer) < self.WINDOW:
            try:
                event = await anext(self._frames)
            except StopAsyncIteration:
                raise AssertionError("the audio stream ended: the track was unsubscribed or closed") from None
            self._buffer = np.concatenate([self._buffer, np.frombuffer(event.frame.data, dtype=np.int16)])
        window, self._buffer = self._buffer[:self.WINDOW], self._buffer[self.WINDOW:]
        heard = analyse(window)
        self.heard.append(heard)
        return heard

    async def until(self, condition: Callable[[Heard], bool], what: str, timeout: float = TIMEOUT,
                    consecutive: int = 2) -> None:
        """Wait until ``consecutive`` windows in a row satisfy the condition."""
        async def listen() -> None:
            run = 0
            while run < consecutive:
                run = run + 1 if condition(await self.next_window()) else 0
        try:
            await asyncio.wait_for(listen(), timeout)
        except asyncio.TimeoutError:
            recent = ", ".join(f"{h.frequency:.0f} Hz @ rms {h.rms:.0f}" for h in self.heard[-5:])
            raise AssertionError(
                f"never heard {what} within {timeout:.0f} s ({len(self.heard)} windows; last: {recent or 'no audio frames at all'})"
            ) from None

    async def hears_tone(self, frequency: float, timeout: float = TIMEOUT) -> None:
        await self.until(lambda h: h.is_tone(frequency), f"a {frequency:.0f} Hz tone", timeout)

    async def hears_silence(self, timeout: float = TIMEOUT) -> None:
        await self.until(lambda h: h.is_silent(), "silence", timeout)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.stream.aclose()


@contextlib.asynccontextmanager
async def listening(track: rtc.Track) -> AsyncIterator[Listener]:
    listener = Listener(track)
    try:
        yield listener
    finally:
        await listener.close()


@contextlib.asynccontextmanager
async def service(server: Any, token: str | None = None) -> AsyncIterator[api.LiveKitAPI]:
    """A livekit-api client with admin credentials (or only the given token's grants)."""
    if token is not None:
        client = api.LiveKitAPI(server.http_url, token=token, timeout=_api_timeout())
    else:
        client = api.LiveKitAPI(server.http_url, server.api_key, server.api_secret, timeout=_api_timeout())
    try:
        yield client
    finally:
        await client.aclose()


def _api_timeout() -> Any:
    import aiohttp
    return aiohttp.ClientTimeout(total=TIMEOUT)
