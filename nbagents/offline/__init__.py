"""Voice agents with no account: offline speech engines and a scripted LLM, for development and tests.

    from livekit.agents import AgentSession, inference
    from nbagents.offline import STT, TTS, ScriptedLLM, call

    session = AgentSession(
        vad=inference.VAD(),                       # livekit-agents' own Silero VAD
        stt=STT(phrases=["where is my order", ...]),  # PocketSphinx, US English, model inside the wheel
        llm=ScriptedLLM({r"order (?P<id>\\w+)": call("order_status", order_id="{id}")}, default="Pardon?"),
        tts=TTS(),                                 # Piper, the en_US-joe-medium voice
    )

They are livekit-agents STT/TTS/LLM implementations, so a cloud plugin replaces each with one line when
the agent goes to production (see the README). Install with ``pip install "nbagents[offline]"``.
"""

from typing import TYPE_CHECKING, Any

from nbagents.offline._text import digits, word_error_rate, words

if TYPE_CHECKING:
    from nbagents.offline._llm import ScriptedLLM, ToolCall, call
    from nbagents.offline._stt import STT
    from nbagents.offline._tts import TTS

__all__ = ["STT", "TTS", "ScriptedLLM", "ToolCall", "call", "digits", "word_error_rate", "words"]

# The livekit-agents classes are imported on first use: the engines' own modules (_sphinx, _piper) serve
# processes that never import livekit-agents, such as a simulated caller's.
_LAZY = {"STT": "_stt", "TTS": "_tts", "ScriptedLLM": "_llm", "ToolCall": "_llm", "call": "_llm"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'nbagents.offline' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"nbagents.offline.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
