"""The offline engines really hear what they say: Piper speech, carried at 48 kHz, recognised by PocketSphinx."""

from __future__ import annotations

import asyncio

import pytest
from livekit import rtc

from nbagents.offline import STT, TTS, word_error_rate, words
from nbagents.offline._evaluation import SENTENCES, measure_wer, speak_all, speak_at_48k
from nbagents.offline._lm import phrases_arpa


@pytest.fixture(scope="module")
def tts() -> TTS:
    return TTS()


@pytest.fixture(scope="module")
async def spoken(tts: TTS) -> list[rtc.AudioFrame]:
    return await speak_all(tts)


@pytest.mark.timeout(900)  # synthesises the whole sentence set first: minutes on a loaded 2-core machine
async def test_open_dictation_gets_most_words_right(spoken: list[rtc.AudioFrame]) -> None:
    report = await measure_wer(STT(), spoken)
    print(f"WER without phrases: {report.wer:.3f}", list(zip(report.sentences, report.hypotheses)))
    assert report.wer < 0.35, list(zip(report.sentences, report.hypotheses))


@pytest.mark.timeout(600)
async def test_phrases_make_recognition_dependable(spoken: list[rtc.AudioFrame]) -> None:
    report = await measure_wer(STT(phrases=list(SENTENCES)), spoken)
    print(f"WER with phrases: {report.wer:.3f}")
    assert report.wer <= 0.05, list(zip(report.sentences, report.hypotheses))


async def test_phrases_allow_other_orders_of_their_words(tts: TTS) -> None:
    stt = STT(phrases=["my order number is 427", "what is the status of my order"])
    event = await stt.recognize(await speak_at_48k(tts, "what is the status of order 427"))
    assert words(event.alternatives[0].text)[:5] == ["what", "is", "the", "status", "of"]
    assert word_error_rate("what is the status of order 427", event.alternatives[0].text) <= 0.25


async def test_strict_phrases_answer_one_of_them(tts: TTS) -> None:
    phrases = ["yes please", "no thanks", "talk to a person"]
    stt = STT(phrases=phrases, strict=True)
    event = await stt.recognize(await speak_at_48k(tts, "talk to a person"))
    assert event.alternatives[0].text == "talk to a person"


async def test_streaming_finalises_each_utterance_at_its_end(tts: TTS) -> None:
    """10 ms frames at 48 kHz, two utterances with silence between: two finals, each after its end of speech."""
    stt = STT(phrases=list(SENTENCES))
    stream = stt.stream()
    said = ["where is my package", "call me back later"]
    silence = rtc.AudioFrame(bytes(2 * 48_000), 48_000, 1, 48_000)
    for text in said:
        speech = await speak_at_48k(tts, text)
        for frame in (speech, silence):
            data = bytes(frame.data)
            for i in range(0, len(data), 960):
                chunk = data[i : i + 960]
                stream.push_frame(rtc.AudioFrame(chunk, 48_000, 1, len(chunk) // 2))
    stream.end_input()
    kinds, finals = [], []
    async with asyncio.timeout(60):
        async for event in stream:
            kinds.append(event.type.value)
            if event.type.value == "final_transcript":
                finals.append(event.alternatives[0].text)
    assert finals == said
    order = [k for k in kinds if k in ("start_of_speech", "end_of_speech", "final_transcript")]
    assert order == ["start_of_speech", "end_of_speech", "final_transcript"] * 2
    assert "interim_transcript" in kinds


def test_phrase_words_missing_from_the_dictionary_are_named() -> None:
    with pytest.raises(ValueError, match="zorblax"):
        STT(phrases=["call zorblax now"])


def test_bad_arguments_say_what_to_do() -> None:
    with pytest.raises(ValueError, match="US English"):
        STT(language="fr-FR")
    with pytest.raises(ValueError, match="phrases"):
        STT(strict=True)
    with pytest.raises(TypeError, match="list of strings"):
        STT(phrases="hello there")
    with pytest.raises(FileNotFoundError, match="Piper voice"):
        TTS(voice="/nonexistent/voice.onnx")
    with pytest.raises(ValueError, match="speed"):
        TTS(speed=0)


def test_word_error_rate_normalises_text() -> None:
    assert word_error_rate("Order 427, please!", "order four hundred twenty seven please") == 0.0
    assert word_error_rate("a b c d", "a x c") == 0.5
    with pytest.raises(ValueError, match="one per reference"):
        word_error_rate(["a"], ["a", "b"])


def test_phrase_model_is_a_valid_arpa_bigram() -> None:
    text = phrases_arpa([["yes", "please"], ["no", "please"]])
    assert "\\1-grams:" in text and "\\2-grams:" in text and text.rstrip().endswith("\\end\\")
    assert "<s>\tyes" not in text and "<s> yes" in text


def test_digits_writes_spelled_out_numbers_as_digits() -> None:
    from nbagents.offline import digits

    assert digits("what is the status of order four hundred twenty seven") == "what is the status of order 427"
    assert digits("my number is four two seven thank you") == "my number is 427 thank you"
    assert digits("one thousand two hundred and twenty-one") == "1200 and 21"
    assert digits("Order 427, please") == "Order 427, please"
    assert digits("hello there") == "hello there"
