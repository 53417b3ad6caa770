"""``nbagents.offline.TTS``: a livekit-agents TTS backed by Piper, with no account."""

from __future__ import annotations

import asyncio
from pathlib import Path

from livekit.agents import tts, utils
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, APIConnectOptions

from nbagents.offline import _piper


class TTS(tts.TTS):
    """Offline text-to-speech (Piper, a neural voice that runs on the CPU; US English by default).

    ``voice`` is a path to a Piper ``.onnx`` voice (its ``.onnx.json`` beside it); by default the
    ``en_US-joe-medium`` voice that ``nbagents[offline]`` installs. ``speed`` > 1 speaks faster. Output is
    16-bit mono at the voice's rate (22 050 Hz for the default). Not streaming: livekit-agents' session
    feeds it sentence by sentence (its ``tts.StreamAdapter``), and each request yields audio sentence
    by sentence, so the first audio of a reply comes after its first sentence is synthesised
    (roughly a third of that sentence's duration on a free core). The voice loads on first use or in
    ``prewarm()``. ``threads``: CPU threads for synthesis (1 by default: a real-time voice needs less
    than a fifth of a core, and more threads mostly compete with the rest of the agent).
    """

    def __init__(
        self, *, voice: str | Path | None = None, speed: float = 1.0, volume: float = 1.0, threads: int = 1
    ) -> None:
        if not (isinstance(speed, (int, float)) and 0.25 <= speed <= 4):
            raise ValueError(f"speed must be between 0.25 and 4 (got {speed!r})")
        if not (isinstance(volume, (int, float)) and 0 < volume <= 4):
            raise ValueError(f"volume must be above 0 and at most 4 (got {volume!r})")
        self._voice = _piper.voice_from_path(voice) if voice is not None else _piper.default_voice()
        super().__init__(
            capabilities=tts.TTSCapabilities(streaming=False), sample_rate=self._voice.sample_rate, num_channels=1
        )
        if not (isinstance(threads, int) and 1 <= threads <= 64):
            raise ValueError(f"threads must be a whole number from 1 to 64 (got {threads!r})")
        self._speed = float(speed)
        self._volume = float(volume)
        self._threads = threads

    @property
    def model(self) -> str:
        return Path(self._voice.model).stem

    @property
    def provider(self) -> str:
        return "nbagents.offline"

    def prewarm(self) -> None:
        _piper.load(self._voice, self._threads)

    def synthesize(self, text: str, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS) -> ChunkedStream:
        return ChunkedStream(tts=self, input_text=text, conn_options=conn_options)


class ChunkedStream(tts.ChunkedStream):
    def __init__(self, *, tts: TTS, input_text: str, conn_options: APIConnectOptions) -> None:
        super().__init__(tts=tts, input_text=input_text, conn_options=conn_options)
        self._owner = tts

    async def _run(self, output_emitter: tts.AudioEmitter) -> None:
        owner = self._owner
        output_emitter.initialize(
            request_id=utils.shortuuid(), sample_rate=owner.sample_rate, num_channels=1, mime_type="audio/pcm"
        )
        await asyncio.to_thread(_piper.load, owner._voice, owner._threads)
        chunks = _piper.synthesize(
            owner._voice, self.input_text, speed=owner._speed, volume=owner._volume, threads=owner._threads
        )
        while (pcm := await asyncio.to_thread(next, chunks, None)) is not None:
            output_emitter.push(pcm)
        output_emitter.flush()
