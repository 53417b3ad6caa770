"""A fixed set of short voice-agent sentences and the word error rate the offline engines reach on them.

Used by the tests (which bound it) and by ``bench/voice.py`` (which reports it): each sentence is
synthesised by ``TTS``, carried at 48 kHz as a room would carry it, and recognised by ``STT`` with and
without the sentences as phrases.
"""

from __future__ import annotations

from dataclasses import dataclass

from livekit import rtc
from livekit.agents import utils

from nbagents.offline._stt import STT
from nbagents.offline._text import word_error_rate
from nbagents.offline._tts import TTS

SENTENCES = (
    "what is the status of my order",
    "my order number is four two seven",
    "thank you goodbye",
    "what is the weather like in paris",
    "it is sunny in paris today",
    "can i speak to a human please",
    "i would like to book a table for two",
    "please cancel my subscription",
    "where is my package",
    "the delivery is late",
    "i want to change my address",
    "yes that is correct",
    "no that is wrong",
    "how much does it cost",
    "send me the receipt by email",
    "what time do you open tomorrow",
    "my name is alice",
    "call me back later",
    "i lost my password",
    "turn on the lights in the kitchen",
)


@dataclass
class WerReport:
    sentences: list[str]
    hypotheses: list[str]
    wer: float


async def speak_at_48k(tts: TTS, text: str) -> rtc.AudioFrame:
    """``text`` synthesised and resampled to 48 kHz mono, as a participant's track carries it."""
    frames = [ev.frame async for ev in tts.synthesize(text)]
    speech = utils.merge_frames(frames)
    resampler = rtc.AudioResampler(speech.sample_rate, 48_000, num_channels=1, quality=rtc.AudioResamplerQuality.HIGH)
    return utils.merge_frames([*resampler.push(speech), *resampler.flush()])


async def speak_all(tts: TTS, sentences: tuple[str, ...] = SENTENCES) -> list[rtc.AudioFrame]:
    return [await speak_at_48k(tts, sentence) for sentence in sentences]


async def measure_wer(stt: STT, spoken: list[rtc.AudioFrame], sentences: tuple[str, ...] = SENTENCES) -> WerReport:
    """Recognise each of ``spoken`` (from ``speak_all``) and score it against ``sentences``."""
    hypotheses = []
    for speech in spoken:
        event = await stt.recognize(speech)
        hypotheses.append(event.alternatives[0].text if event.alternatives else "")
    return WerReport(list(sentences), hypotheses, word_error_rate(list(sentences), hypotheses))
