"""Speaking and listening for a simulated participant's process (offline TTS and STT from nbagents.offline).

Imported by the participant's process only when it first speaks or listens, so participants that only
play tones never load a voice or a recogniser.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from livekit import rtc

from nbagents.sim import _audio

#: A frame whose peak reaches this (int16) counts as sound when finding where an utterance begins.
ONSET_PEAK = 600
#: Silence that ends an utterance the participant hears: longer than a pause between two sentences.
HEARING_SILENCE = 0.8


def speech_frames(text: str, speed: float = 1.0) -> list[np.ndarray]:
    """``text`` spoken by the offline voice, as 10 ms int16 frames at 48 kHz."""
    from nbagents.offline import _piper

    voice = _piper.default_voice()
    pcm = b"".join(_piper.synthesize(voice, text, speed=speed))
    resampler = rtc.AudioResampler(voice.sample_rate, _audio.SAMPLE_RATE, num_channels=1, quality=rtc.AudioResamplerQuality.HIGH)
    samples = np.frombuffer(pcm, dtype=np.int16)
    frame = rtc.AudioFrame(pcm, voice.sample_rate, 1, len(samples))
    out = [np.frombuffer(f.data, dtype=np.int16) for f in [*resampler.push(frame), *resampler.flush()]]
    return list(_audio.split_frames(np.concatenate(out) if out else np.zeros(0, dtype=np.int16)))


def prewarm_voice() -> None:
    from nbagents.offline import _piper

    _piper.load(_piper.default_voice())


class Ear:
    """Recognises what the participant hears on one remote audio track; reports each utterance."""

    def __init__(self, phrases: Sequence[str] | None, strict: bool, report: Callable[[dict[str, Any]], None]) -> None:
        from nbagents.offline import STT

        self._stt = STT(phrases=phrases, strict=strict, min_silence_duration=HEARING_SILENCE, interim_results=False)
        self._stt.prewarm()
        self._report = report
        self._tasks: set[asyncio.Task[None]] = set()

    @staticmethod
    def listen_when_ready(ear: asyncio.Future[Ear], track: rtc.Track, sender: str) -> None:
        """Listen to ``track`` once ``ear`` has loaded; its audio is buffered from now on."""
        audio = rtc.AudioStream(track, sample_rate=_audio.SAMPLE_RATE, num_channels=1)

        async def start() -> None:
            try:
                ready = await ear
            except BaseException:
                await audio.aclose()
                raise
            task = asyncio.ensure_future(ready._listen(audio, sender))
            ready._tasks.add(task)
            task.add_done_callback(ready._tasks.discard)

        asyncio.ensure_future(start())

    async def _listen(self, audio: rtc.AudioStream, sender: str) -> None:
        stream = self._stt.stream()
        onset: float | None = None

        async def feed() -> None:
            nonlocal onset
            async for event in audio:
                frame = event.frame
                if onset is None and np.abs(np.frombuffer(frame.data, dtype=np.int16)).max(initial=0) >= ONSET_PEAK:
                    onset = time.time()  # where the utterance begins, as this participant receives it
                stream.push_frame(frame)
            stream.end_input()

        feeder = asyncio.ensure_future(feed())
        try:
            async for event in stream:
                if event.type.value == "final_transcript" and event.alternatives:
                    self._report(
                        {
                            "event": "speech",
                            "text": event.alternatives[0].text,
                            "sender": sender,
                            "started_at": onset,
                            "ended_at": event.speech_end_time,
                        }
                    )
                    onset = None
        finally:
            feeder.cancel()
            await stream.aclose()
            await audio.aclose()

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
