"""``nbagents.offline.STT``: a livekit-agents STT backed by PocketSphinx, streaming, with no account."""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Sequence

from livekit import rtc
from livekit.agents import stt, utils
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, NOT_GIVEN, APIConnectOptions, NotGivenOr
from livekit.agents.vad import VAD, VADEventType

from nbagents.offline import _sphinx

#: How often (seconds of speech) a streaming recognition reports an interim transcript.
INTERIM_INTERVAL = 0.4


class STT(stt.STT):
    """Offline speech-to-text for US English (PocketSphinx, its model inside the wheel).

    ``STT()`` does open dictation with the default language model: quick, but it gets about one word in
    eight wrong on clear synthetic speech. ``STT(phrases=[...])`` builds a language model from the phrases
    you expect (numbers may be written as digits) and recognises those reliably while still allowing
    other orders of their words; ``strict=True`` accepts exactly one of the phrases per utterance.

    Streaming: ``stream()`` segments the audio with a VAD (``vad``, default livekit-agents' own Silero
    ``inference.VAD``) and decodes while the user speaks, so the final transcript is ready a few
    milliseconds after the end of speech; interim transcripts come every ``INTERIM_INTERVAL`` seconds.
    Any input sample rate is resampled to 16 kHz (soxr, high quality). ``recognize()`` decodes a buffer.
    Raises ``ValueError`` for a phrase word that the pronouncing dictionary does not know, and for a
    language other than English.
    """

    def __init__(
        self,
        *,
        phrases: Sequence[str] | None = None,
        strict: bool = False,
        language: str = "en-US",
        vad: VAD | None = None,
        min_silence_duration: float = 0.5,
        interim_results: bool = True,
    ) -> None:
        super().__init__(
            capabilities=stt.STTCapabilities(streaming=True, interim_results=interim_results, offline_recognize=True)
        )
        _check_language(language)
        if isinstance(phrases, str):
            raise TypeError("phrases must be a list of strings, not one string (wrap it: phrases=[...])")
        self._language = language
        self._recognition = _sphinx.Recognition(tuple(phrases) if phrases is not None else None, strict)
        self._vad = vad
        self._min_silence = min_silence_duration
        self._interim = interim_results
        self._idle: list[_sphinx.Recognizer] = []
        if phrases is not None:
            self.prewarm()  # builds the phrase model now, so a word the dictionary lacks is an error here

    @property
    def model(self) -> str:
        return "pocketsphinx-en-us" + ("-phrases" if self._recognition.phrases else "")

    @property
    def provider(self) -> str:
        return "nbagents.offline"

    @property
    def phrases(self) -> tuple[str, ...] | None:
        return self._recognition.phrases

    def prewarm(self) -> None:
        if not self._idle:
            self._idle.append(_sphinx.Recognizer(self._recognition))

    async def _acquire(self) -> _sphinx.Recognizer:
        if self._idle:
            return self._idle.pop()
        return await asyncio.to_thread(_sphinx.Recognizer, self._recognition)

    def _release(self, recognizer: _sphinx.Recognizer) -> None:
        self._idle.append(recognizer)

    def _make_vad(self) -> VAD:
        if self._vad is not None:
            return self._vad
        from livekit.agents import inference

        self._vad = inference.VAD(min_silence_duration=self._min_silence)
        return self._vad

    async def _recognize_impl(
        self,
        buffer: utils.AudioBuffer,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
    ) -> stt.SpeechEvent:
        lang = _check_language(language) if language else self._language
        frame = utils.merge_frames(buffer) if isinstance(buffer, list) else buffer
        pcm = _to_16k(frame)
        recognizer = await self._acquire()
        try:
            text = await asyncio.to_thread(recognizer.recognize, pcm)
        finally:
            self._release(recognizer)
        return stt.SpeechEvent(
            type=stt.SpeechEventType.FINAL_TRANSCRIPT,
            request_id=utils.shortuuid(),
            alternatives=[stt.SpeechData(language=lang, text=text, end_time=frame.duration)],
        )

    def stream(
        self,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
    ) -> SpeechStream:
        lang = _check_language(language) if language else self._language
        return SpeechStream(stt=self, language=lang, conn_options=conn_options)


class SpeechStream(stt.RecognizeStream):
    """Decodes each VAD-delimited utterance incrementally while it is spoken."""

    def __init__(self, *, stt: STT, language: str, conn_options: APIConnectOptions) -> None:
        super().__init__(stt=stt, conn_options=conn_options)
        self._owner = stt
        self._language = language

    async def _run(self) -> None:
        vad_stream = self._owner._make_vad().stream()
        recognizer = await self._owner._acquire()
        # one thread per stream keeps the decoder's calls in order without blocking the event loop
        executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="nbagents-stt")
        loop = asyncio.get_running_loop()

        async def forward_input() -> None:
            async for item in self._input_ch:
                if isinstance(item, self._FlushSentinel):
                    vad_stream.flush()
                else:
                    vad_stream.push_frame(item)
            vad_stream.end_input()

        async def recognize() -> None:
            resampler: rtc.AudioResampler | None = None
            speaking = False
            next_interim = 0.0
            last_interim = ""
            request_id = ""

            async def feed(frames: list[rtc.AudioFrame]) -> None:
                nonlocal resampler
                for frame in frames:
                    if resampler is None:
                        resampler = _resampler(frame.sample_rate)
                    pcm = b"".join(bytes(f.data) for f in resampler.push(_mono(frame)))
                    await loop.run_in_executor(executor, recognizer.feed, pcm)

            async for event in vad_stream:
                if event.type == VADEventType.START_OF_SPEECH:
                    speaking, resampler, next_interim, last_interim = True, None, INTERIM_INTERVAL, ""
                    request_id = utils.shortuuid()
                    await loop.run_in_executor(executor, recognizer.start)
                    await feed(event.frames)  # the speech so far, with the VAD's prefix padding
                    self._event_ch.send_nowait(
                        stt.SpeechEvent(stt.SpeechEventType.START_OF_SPEECH, request_id=request_id)
                    )
                elif event.type == VADEventType.INFERENCE_DONE and speaking:
                    await feed(event.frames)
                    if self._owner._interim and event.speech_duration >= next_interim:
                        next_interim = event.speech_duration + INTERIM_INTERVAL
                        text = await loop.run_in_executor(executor, recognizer.partial)
                        text = _sphinx._clean(text)
                        if text and text != last_interim:
                            last_interim = text
                            self._event_ch.send_nowait(
                                stt.SpeechEvent(
                                    stt.SpeechEventType.INTERIM_TRANSCRIPT,
                                    request_id=request_id,
                                    alternatives=[stt.SpeechData(language=self._language, text=text)],
                                )
                            )
                elif event.type == VADEventType.END_OF_SPEECH and speaking:
                    speaking = False
                    speech_end = time.time() - event.silence_duration - event.inference_duration
                    if resampler is not None:
                        tail = b"".join(bytes(f.data) for f in resampler.flush())
                        await loop.run_in_executor(executor, recognizer.feed, tail)
                    text = await loop.run_in_executor(executor, recognizer.finish)
                    self._event_ch.send_nowait(
                        stt.SpeechEvent(stt.SpeechEventType.END_OF_SPEECH, request_id=request_id, speech_end_time=speech_end)
                    )
                    if text:
                        self._event_ch.send_nowait(
                            stt.SpeechEvent(
                                stt.SpeechEventType.FINAL_TRANSCRIPT,
                                request_id=request_id,
                                alternatives=[stt.SpeechData(language=self._language, text=text)],
                                speech_end_time=speech_end,
                            )
                        )
                    self._event_ch.send_nowait(
                        stt.SpeechEvent(
                            stt.SpeechEventType.RECOGNITION_USAGE,
                            request_id=request_id,
                            recognition_usage=stt.RecognitionUsage(audio_duration=event.speech_duration),
                        )
                    )

        tasks = [asyncio.create_task(forward_input()), asyncio.create_task(recognize())]
        try:
            await asyncio.gather(*tasks)
        finally:
            await utils.aio.cancel_and_wait(*tasks)
            await vad_stream.aclose()
            executor.shutdown(wait=True)
            self._owner._release(recognizer)


def _check_language(language: str) -> str:
    if not str(language).lower().startswith("en"):
        raise ValueError(
            f"nbagents.offline.STT recognises US English only (got language={language!r}); "
            "use a cloud STT plugin for other languages"
        )
    return str(language)


def _resampler(rate: int) -> rtc.AudioResampler:
    return rtc.AudioResampler(rate, _sphinx.SAMPLE_RATE, num_channels=1, quality=rtc.AudioResamplerQuality.HIGH)


def _to_16k(frame: rtc.AudioFrame) -> bytes:
    frame = _mono(frame)
    if frame.sample_rate == _sphinx.SAMPLE_RATE:
        return bytes(frame.data)
    resampler = _resampler(frame.sample_rate)
    out = [bytes(f.data) for f in resampler.push(frame)] + [bytes(f.data) for f in resampler.flush()]
    return b"".join(out)


def _mono(frame: rtc.AudioFrame) -> rtc.AudioFrame:
    if frame.num_channels == 1:
        return frame
    import numpy as np

    samples = np.frombuffer(frame.data, dtype=np.int16).reshape(-1, frame.num_channels).mean(axis=1)
    return rtc.AudioFrame(samples.astype(np.int16).tobytes(), frame.sample_rate, 1, len(samples))
