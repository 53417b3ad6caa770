"""PocketSphinx, the recogniser behind ``nbagents.offline.STT``: its US-English model ships in the wheel.

This module knows nothing of livekit-agents; it turns 16 kHz int16 mono PCM into words.
"""

from __future__ import annotations

import os
import tempfile
import threading
from dataclasses import dataclass

from nbagents.offline._lm import phrase_words, phrases_arpa, phrases_jsgf

SAMPLE_RATE = 16_000

_INSTALL_HINT = 'install the offline speech engines: pip install "nbagents[offline]"'


def _pocketsphinx():
    try:
        import pocketsphinx
    except ImportError as exc:
        raise ImportError(f"nbagents.offline.STT needs PocketSphinx ({exc}); {_INSTALL_HINT}") from None
    return pocketsphinx


@dataclass(frozen=True)
class Recognition:
    """What to recognise: open dictation (``phrases`` None), a phrase-biased model, or exactly one phrase."""

    phrases: tuple[str, ...] | None = None
    strict: bool = False

    def __post_init__(self) -> None:
        if self.strict and not self.phrases:
            raise ValueError("strict=True restricts recognition to the phrases: give phrases=[...] too")
        if self.phrases is not None:
            phrase_words(list(self.phrases))  # validate early, with the caller's stack


class Recognizer:
    """One PocketSphinx decoder (about 0.5 s to load the default model; decoders are not shared across threads)."""

    def __init__(self, recognition: Recognition) -> None:
        ps = _pocketsphinx()
        self._lock = threading.Lock()
        if recognition.phrases is None:
            self._decoder = ps.Decoder(loglevel="FATAL")
            return
        sentences = phrase_words(list(recognition.phrases))
        vocabulary = {w for sentence in sentences for w in sentence}
        pronunciations = _pronunciations(vocabulary)
        unknown = sorted(vocabulary - {line.split(None, 1)[0].split("(")[0] for line in pronunciations})
        if unknown:
            raise ValueError(
                f"these words of the phrases are not in PocketSphinx's US-English dictionary: {', '.join(unknown)}. "
                "Spell them as they sound with known words (e.g. 'live kit' for 'LiveKit'), or drop them"
            )
        # a dictionary of just the phrases' words: with the full one (134k words) building the search
        # for a phrase model takes about ten seconds of CPU, with this one a few milliseconds
        suffix, model = (".gram", phrases_jsgf(sentences)) if recognition.strict else (".arpa", phrases_arpa(sentences))
        with tempfile.TemporaryDirectory(prefix="nbagents-phrases-") as tmp:
            model_path, dict_path = os.path.join(tmp, "phrases" + suffix), os.path.join(tmp, "phrases.dict")
            with open(model_path, "w", encoding="utf-8") as f:
                f.write(model)
            with open(dict_path, "w", encoding="utf-8") as f:
                f.writelines(pronunciations)
            options = {"jsgf": model_path} if recognition.strict else {"lm": model_path}
            self._decoder = ps.Decoder(loglevel="FATAL", dict=dict_path, **options)

    # Streaming use: start, feed as audio arrives, then finish (all from one thread at a time).

    def start(self) -> None:
        with self._lock:
            self._decoder.start_utt()

    def feed(self, pcm16k: bytes) -> None:
        if pcm16k:
            with self._lock:
                self._decoder.process_raw(pcm16k, no_search=False, full_utt=False)

    def partial(self) -> str:
        with self._lock:
            hyp = self._decoder.hyp()
        return hyp.hypstr if hyp is not None else ""

    def finish(self) -> str:
        with self._lock:
            self._decoder.end_utt()
            hyp = self._decoder.hyp()
        return _clean(hyp.hypstr) if hyp is not None else ""

    def recognize(self, pcm16k: bytes) -> str:
        """The words in one whole utterance of 16 kHz int16 mono PCM."""
        with self._lock:
            self._decoder.start_utt()
            self._decoder.process_raw(pcm16k, no_search=False, full_utt=True)
            self._decoder.end_utt()
            hyp = self._decoder.hyp()
        return _clean(hyp.hypstr) if hyp is not None else ""


def _pronunciations(vocabulary: set[str]) -> list[str]:
    """The lines of PocketSphinx's US-English dictionary for ``vocabulary`` (alternatives included)."""
    ps = _pocketsphinx()
    path = os.path.join(ps.get_model_path(), "en-us", "cmudict-en-us.dict")
    with open(path, encoding="utf-8") as f:
        return [line for line in f if line.split(None, 1)[0].split("(")[0] in vocabulary]


def _clean(text: str) -> str:
    # the dictionary marks alternative pronunciations as word(2); fillers look like <sil> or [noise]
    out = []
    for word in text.split():
        if word.startswith(("<", "[", "+")):
            continue
        out.append(word.split("(")[0])
    return " ".join(out)
