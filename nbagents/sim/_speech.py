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
#: Silence that ends an utterance the participant hears: longer than a pause between two sentences
#: (Piper's longest is ~0.4 s), and than the gaps a loaded machine leaves in delivered audio (0.8 s cut
#: a reply in two about once in ten conversations at load 8–50).
HEARING_SILENCE = 1.2
#: Audio kept from before an utterance's first loud frame and decoded with it.
PREROLL = 0.3


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


def trailing_silence(frames: list[np.ndarray]) -> float:
    """Seconds of quiet (peak below ``ONSET_PEAK``) at the end of 10 ms ``frames``."""
    quiet = 0
    for frame in reversed(frames):
        if np.abs(frame).max(initial=0) >= ONSET_PEAK:
            break
        quiet += 1
    return quiet * _audio.FRAME_MS / 1000


def prewarm_voice() -> None:
    from nbagents.offline import _piper

    _piper.load(_piper.default_voice())


class Ear:
    """Recognises what the participant hears on each remote audio track and reports every utterance.

    What a participant receives is clean (decoded Opus, digital silence between utterances), so an
    utterance is cut by level: it starts at the first frame whose peak reaches ``ONSET_PEAK`` (with
    ``PREROLL`` seconds before it, for soft onsets) and ends after ``HEARING_SILENCE`` seconds below it.
    PocketSphinx (``nbagents.offline``'s recogniser, with the phrase model when phrases are given)
    decodes while the utterance arrives, on one thread per track, so the text is ready a few
    milliseconds after it ends. livekit-agents is not needed here: a simulated caller's process stays
    light (no VAD model, no agents framework to import).
    """

    def __init__(self, phrases: Sequence[str] | None, strict: bool, report: Callable[[dict[str, Any]], None]) -> None:
        from nbagents.offline import _sphinx

        self._recognition = _sphinx.Recognition(tuple(phrases) if phrases is not None else None, bool(strict))
        self._idle = [_sphinx.Recognizer(self._recognition)]  # the first loads now; more only for several tracks
        self._report = report
        self._tasks: set[asyncio.Task[None]] = set()

    def _recognizer(self) -> Any:
        from nbagents.offline import _sphinx

        return self._idle.pop() if self._idle else _sphinx.Recognizer(self._recognition)

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
        import concurrent.futures
        import collections

        from nbagents.offline import _sphinx

        loop = asyncio.get_running_loop()
        executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="nbagents-ear")
        recognizer = await loop.run_in_executor(executor, self._recognizer)
        preroll: collections.deque[rtc.AudioFrame] = collections.deque(maxlen=max(1, int(PREROLL * 100)))
        resampler: rtc.AudioResampler | None = None
        onset: float | None = None
        last_sound = 0.0
        quiet = 0.0

        def pcm16k(frames: list[rtc.AudioFrame]) -> bytes:
            assert resampler is not None
            return b"".join(bytes(out.data) for frame in frames for out in resampler.push(frame))

        try:
            async for event in audio:
                frame = event.frame
                loud = np.abs(np.frombuffer(frame.data, dtype=np.int16)).max(initial=0) >= ONSET_PEAK
                now = time.time()
                if onset is None:
                    if not loud:
                        preroll.append(frame)
                        continue
                    onset, last_sound, quiet = now, now, 0.0  # where the utterance begins, as received here
                    resampler = rtc.AudioResampler(_audio.SAMPLE_RATE, _sphinx.SAMPLE_RATE, num_channels=1,
                                                   quality=rtc.AudioResamplerQuality.HIGH)
                    frames = [*preroll, frame]
                    preroll.clear()
                    await loop.run_in_executor(executor, recognizer.start)
                    await loop.run_in_executor(executor, recognizer.feed, pcm16k(frames))
                    continue
                await loop.run_in_executor(executor, recognizer.feed, pcm16k([frame]))
                if loud:
                    last_sound, quiet = now, 0.0
                    continue
                quiet += frame.samples_per_channel / frame.sample_rate
                if quiet < HEARING_SILENCE:
                    continue
                tail = b"".join(bytes(out.data) for out in resampler.flush()) if resampler is not None else b""
                await loop.run_in_executor(executor, recognizer.feed, tail)
                text = await loop.run_in_executor(executor, recognizer.finish)
                # an utterance the recogniser could not make out is reported too (without text): a caller that
                # waits for speech can then say what it did hear
                self._report({"event": "speech" if text else "unrecognised", "text": text, "sender": sender,
                              "started_at": onset, "ended_at": last_sound})
                onset, resampler = None, None
        finally:
            await audio.aclose()
            executor.shutdown(wait=False)
            self._idle.append(recognizer)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
