"""A scripted LLM for AgentSession tests: deterministic, offline, a real ``livekit.agents.llm.LLM``.

No model weights can be downloaded here, so agents under test talk to this one. It answers the latest
user message with ``"You said: <text>"``; a user message ``"call NAME {json arguments}"`` makes it call
the function tool NAME with those arguments, and once the tool's output is in the conversation it answers
``"the tool said <output>"``.
"""

from __future__ import annotations

from typing import Any

from livekit.agents import DEFAULT_API_CONNECT_OPTIONS, llm
from livekit.agents.utils import shortuuid


class EchoLLM(llm.LLM):
    @property
    def model(self) -> str:
        return "echo"

    @property
    def provider(self) -> str:
        return "nbagents-tests"

    def chat(self, *, chat_ctx: llm.ChatContext, tools: list[Any] | None = None,
             conn_options: Any = DEFAULT_API_CONNECT_OPTIONS, **_: Any) -> llm.LLMStream:
        return _EchoStream(self, chat_ctx=chat_ctx, tools=tools or [], conn_options=conn_options)


class _EchoStream(llm.LLMStream):
    async def _run(self) -> None:
        items = self._chat_ctx.items
        chunk_id = shortuuid("echo_")
        last = items[-1] if items else None
        if last is not None and last.type == "function_call_output":
            self._say(chunk_id, f"the tool said {last.output}")
            return
        user = next((i.text_content for i in reversed(items) if i.type == "message" and i.role == "user"), None) or ""
        if user.startswith("call "):
            _, name, arguments = user.split(" ", 2)
            call = llm.FunctionToolCall(name=name, arguments=arguments, call_id=shortuuid("call_"))
            self._event_ch.send_nowait(llm.ChatChunk(id=chunk_id, delta=llm.ChoiceDelta(role="assistant", tool_calls=[call])))
            return
        self._say(chunk_id, f"You said: {user}")

    def _say(self, chunk_id: str, text: str) -> None:
        self._event_ch.send_nowait(llm.ChatChunk(id=chunk_id, delta=llm.ChoiceDelta(role="assistant", content=text)))
