"""The simulated participant's own process: a real ``livekit.rtc.Room`` driven over stdin/stdout.

Started by ``nbagents.sim.join``; never imported by the kernel. It exits when asked to leave or when the
kernel goes away: its stdin closes and it leaves the room; and, should leaving hang, a pidfd watch of the
kernel (``nbagents._lifeline``) ends the process :data:`LEAVE_GRACE_SECONDS` after the kernel's death. So a
participant can never outlive its notebook, even one killed with SIGKILL.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
import traceback
from typing import Any, BinaryIO, Callable

from nbagents.sim import _audio
from nbagents.sim._delivery import DeliveryTracker, packets_sent
from nbagents.sim._protocol import MAX_LINE_BYTES, b64, decode, encode, unb64

log = logging.getLogger("nbagents.sim.worker")

LEAVE_GRACE_SECONDS = 5.0
SENDING_TIMEOUT_SECONDS = 10.0

Send = Callable[[dict[str, Any]], None]


class _Participant:
    """One connected room participant that does what the kernel asks."""

    def __init__(self, config: dict[str, Any], send: Send) -> None:
        from livekit import rtc

        self._rtc = rtc
        self._config = config
        self._send = send
        self.room = rtc.Room()
        self._source: Any = None
        self._track: Any = None
        self._track_sid: str | None = None
        self._subscribed: set[str] = set()  # our track sids someone subscribed to (the server's TrackSubscribed)
        self._play_lock = asyncio.Lock()
        self._ear: Any = None
        self.room.on("data_received", self._on_data)
        self.room.on("disconnected", self._on_disconnected)
        self.room.on("local_track_subscribed", lambda track: self._subscribed.add(track.sid))

    def _token(self) -> str:
        from livekit import api

        c = self._config
        grants = api.VideoGrants(room_join=True, room=c["room"], can_update_own_metadata=True)
        token = (
            api.AccessToken(c["api_key"], c["api_secret"])
            .with_identity(c["identity"])
            .with_name(c.get("name") or c["identity"])
            .with_kind(c["kind"])
            .with_grants(grants)
        )
        if c.get("attributes"):
            token = token.with_attributes(c["attributes"])
        return token.to_jwt()

    async def connect(self) -> dict[str, Any]:
        listen = self._config.get("listen")
        if listen is not None:
            # the recogniser loads (seconds on a busy machine) while the participant joins; tracks
            # subscribed meanwhile are buffered by their AudioStream, so no word is lost
            from nbagents.sim._speech import Ear, prewarm_voice

            self._ear = asyncio.ensure_future(
                asyncio.to_thread(Ear, listen.get("phrases"), bool(listen.get("strict")), self._send)
            )
            self.room.on("track_subscribed", self._on_track_subscribed)
            # a caller that listens usually talks too: its voice loads meanwhile, so its first say() starts at once
            voice = asyncio.ensure_future(asyncio.to_thread(prewarm_voice))
            voice.add_done_callback(lambda f: f.cancelled() or f.exception())  # a failure shows at say()
        await asyncio.wait_for(self.room.connect(self._config["url"], self._token()), self._config["connect_timeout"])
        if listen is not None:
            # publish the microphone now: by the first say() the others have subscribed to it, so no word is lost
            await self._microphone()
        return {
            "sid": self.room.local_participant.sid,
            "room_sid": await self._room_sid(),
            "remote_participants": sorted(p.identity for p in self.room.remote_participants.values()),
        }

    async def _room_sid(self) -> str:
        sid = self.room.sid
        return await sid if asyncio.iscoroutine(sid) else str(sid)

    def _on_data(self, packet: Any) -> None:
        sender = packet.participant.identity if packet.participant is not None else None
        self._send({"event": "data", "payload": b64(bytes(packet.data)), "sender": sender, "topic": packet.topic or ""})

    def _on_track_subscribed(self, track: Any, publication: Any, participant: Any) -> None:
        if self._ear is not None and track.kind == self._rtc.TrackKind.KIND_AUDIO:
            from nbagents.sim._speech import Ear

            Ear.listen_when_ready(self._ear, track, participant.identity)

    def _on_disconnected(self, reason: Any) -> None:
        try:
            name = self._rtc.DisconnectReason.Name(reason)
        except Exception:
            name = str(reason)
        self._send({"event": "disconnected", "reason": name})

    async def _microphone(self) -> Any:
        """Publish the microphone track on first use; later plays reuse it."""
        rtc = self._rtc
        if self._source is None:
            self._source = rtc.AudioSource(_audio.SAMPLE_RATE, 1, queue_size_ms=100)
            track = rtc.LocalAudioTrack.create_audio_track("microphone", self._source)
            options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
            publication = await self.room.local_participant.publish_track(track, options)
            self._track, self._track_sid = track, publication.sid
            await self._until_sending(track, self._source)
        return self._source

    async def _until_sending(self, track: Any, source: Any) -> None:
        """Feed silence until the new track's RTP stream has sent a packet (at most SENDING_TIMEOUT_SECONDS).

        ``publish_track`` returns when the server has accepted the publication, before the renegotiated
        sender runs; frames captured meanwhile are dropped, so a play started at once would lose its start
        (measured: all of a 0.5 s tone on a loaded machine). If the stream never starts, the play goes
        ahead and its report says nothing reached the server.
        """
        rtc = self._rtc
        silence = rtc.AudioFrame(bytes(2 * _audio.SAMPLES_PER_FRAME), _audio.SAMPLE_RATE, 1, _audio.SAMPLES_PER_FRAME)
        deadline = time.monotonic() + SENDING_TIMEOUT_SECONDS
        frames = 0
        while time.monotonic() < deadline:
            await source.capture_frame(silence)
            frames += 1
            if frames % 5 == 0 and await packets_sent(track) > 0:
                return

    async def _play(self, frames: Any) -> dict[str, Any]:
        """Send frames at real-time pace (the source's queue paces ``capture_frame``), wait for playout, then
        for the server's acknowledgement of what it received (``nbagents.sim._delivery``)."""
        rtc = self._rtc
        async with self._play_lock:
            source = await self._microphone()
            delivery = DeliveryTracker(self._track)
            await delivery.start()
            started = time.monotonic()
            count = 0
            for pcm in frames:
                await source.capture_frame(rtc.AudioFrame(pcm.tobytes(), _audio.SAMPLE_RATE, 1, len(pcm)))
                count += 1
            await source.wait_for_playout()
            seconds, ended_at = round(time.monotonic() - started, 3), time.time()
            reached = await delivery.finish()
            sent, acknowledged = reached["packets_sent"], reached["packets_acknowledged"]
            return {
                "track_sid": self._track_sid,
                "frames": count,
                "seconds": seconds,
                "ended_at": ended_at,  # when the last frame was played out (before the acknowledgement came)
                **reached,
                "frames_acknowledged": min(count, count * acknowledged // sent) if sent else 0,
                "reached_server": acknowledged > 0,
                "subscribed": self._track_sid in self._subscribed,
            }

    async def play_tone(self, freq_hz: float, seconds: float) -> dict[str, Any]:
        return await self._play(_audio.tone_frames(freq_hz, seconds))

    async def say(self, text: str, speed: float) -> dict[str, Any]:
        from nbagents.sim import _speech

        frames = await asyncio.to_thread(_speech.speech_frames, text, speed)
        played = await self._play(frames)
        # the voice ends each utterance with a little silence: when the speech itself ended
        return {**played, "text": text, "speech_ended_at": played["ended_at"] - _speech.trailing_silence(frames)}

    async def play_wav(self, path: str) -> dict[str, Any]:
        info = _audio.describe_wav(path)
        samples = _audio.wav_mono_samples(info)
        if info.sample_rate != _audio.SAMPLE_RATE:
            samples = self._resample(samples, info.sample_rate)
        return await self._play(_audio.split_frames(samples))

    def _resample(self, samples: Any, rate: int) -> Any:
        import numpy as np

        resampler = self._rtc.AudioResampler(rate, _audio.SAMPLE_RATE, num_channels=1)
        out = [np.frombuffer(f.data, dtype=np.int16) for f in resampler.push(bytearray(samples.tobytes()))]
        out += [np.frombuffer(f.data, dtype=np.int16) for f in resampler.flush()]
        return np.concatenate(out) if out else np.zeros(0, dtype=np.int16)

    async def set_attributes(self, attributes: dict[str, str]) -> dict[str, Any]:
        before = dict(self.room.local_participant.attributes)
        await self.room.local_participant.set_attributes(attributes)
        merged = {**before, **attributes}  # the server merges; an empty value deletes a key
        return {"attributes": {k: v for k, v in merged.items() if v != ""}}

    async def send_data(self, payload: str, topic: str, reliable: bool) -> None:
        await self.room.local_participant.publish_data(unb64(payload), topic=topic, reliable=reliable)

    async def leave(self) -> None:
        if self._ear is not None:
            if self._ear.done() and not self._ear.exception():
                await self._ear.result().close()
            else:
                self._ear.cancel()
        await self.room.disconnect()


async def _serve(reader: asyncio.StreamReader, send: Send) -> int:
    line = await reader.readline()
    if not line:
        return 0
    config = decode(line)
    try:
        participant = _Participant(config, send)
        info = await participant.connect()
    except BaseException as exc:  # noqa: BLE001 - every failure is reported to the kernel
        detail = "timed out" if isinstance(exc, (asyncio.TimeoutError, TimeoutError)) else f"{type(exc).__name__}: {exc}"
        send({"event": "connect_failed", "error": detail})
        return 1
    send({"event": "connected", **info})

    tasks: set[asyncio.Task[None]] = set()
    left = asyncio.Event()

    async def handle(request: dict[str, Any]) -> None:
        op, args = request["op"], request.get("args", {})
        try:
            result = await getattr(participant, op)(**args)
            send({"id": request["id"], "ok": True, "result": result})
        except Exception as exc:  # noqa: BLE001 - the kernel raises it with context
            log.debug("request %s failed:\n%s", op, traceback.format_exc())
            send({"id": request["id"], "ok": False, "error": f"{type(exc).__name__}: {exc}"})
        if op == "leave":
            left.set()

    left_waiter = asyncio.ensure_future(left.wait())
    while True:
        next_line = asyncio.ensure_future(reader.readline())
        done, _ = await asyncio.wait({next_line, left_waiter}, return_when=asyncio.FIRST_COMPLETED)
        if next_line not in done:
            next_line.cancel()
            break
        line = next_line.result()
        if not line:  # the kernel went away: leave the room and exit
            await participant.leave()
            break
        task = asyncio.ensure_future(handle(decode(line)))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    for task in list(tasks):
        task.cancel()
    return 0


async def _main() -> int:
    protocol_out: BinaryIO = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)  # stray prints (and native logs) go to stderr, never into the message stream
    sys.stdout = sys.stderr

    def send(message: dict[str, Any]) -> None:
        try:
            protocol_out.write(encode(message))
        except BrokenPipeError:
            pass

    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=MAX_LINE_BYTES)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return await _serve(reader, send)


def _exit_after_the_kernel(kernel_pid: int) -> None:
    """Backstop for a kernel that died: leaving (on stdin's end) gets a few seconds, then the process ends."""
    from nbagents import _lifeline

    def gone() -> None:
        time.sleep(LEAVE_GRACE_SECONDS)
        os._exit(0)

    _lifeline.watch_parent(kernel_pid, gone)


if __name__ == "__main__":
    logging.basicConfig(level=os.environ.get("NBAGENTS_SIM_LOG", "WARNING"), stream=sys.stderr)
    if len(sys.argv) > 1:
        _exit_after_the_kernel(int(sys.argv[1]))
    sys.exit(asyncio.run(_main()))
