"""``nbagents.offline.ScriptedLLM``: a deterministic livekit-agents LLM for agents under development and tests."""

from __future__ import annotations

import asyncio
import json
import re
import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Union

from livekit.agents import llm, utils
from livekit.agents.llm.tool_context import get_fnc_tool_names
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, NOT_GIVEN, APIConnectOptions, NotGivenOr


@dataclass(frozen=True)
class ToolCall:
    """A rule's action that calls a function tool; make it with ``call(name, **arguments)``.

    Argument values that are strings are templates: ``"{order}"`` takes the rule's named group
    ``order``, ``"{0}"`` the whole match, ``"{1}"`` the first group. When the tool's result comes back,
    the LLM speaks ``then`` (a template that may also use ``{result}``, the tool's output as text).
    """

    name: str
    arguments: Mapping[str, Any] = field(default_factory=dict)
    then: str = "{result}"


def call(name: str, /, *, then: str = "{result}", **arguments: Any) -> ToolCall:
    """A rule action: call the function tool ``name`` with ``arguments``, then say ``then``."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"the tool name must be a non-empty string (got {name!r})")
    return ToolCall(name, dict(arguments), then)


Action = Union[str, ToolCall, Callable[[re.Match[str]], Union[str, ToolCall]]]


@dataclass(frozen=True)
class _Rule:
    pattern: re.Pattern[str]
    action: Action


class ScriptedLLM(llm.LLM):
    """An LLM that answers by rules: a regex on the user's latest words → a reply or a function-tool call.

    ``rules`` is a mapping or a list of ``(pattern, action)`` pairs, tried in order; the first pattern
    that matches (``re.search``, case-insensitive) anywhere in the user's latest message wins. An action is

    - a string: the reply, a template filled from the match (``"Order {order} is on its way"``);
    - ``call("tool_name", arg="{group}", then="It is {result}")``: a function-tool call, streamed as a
      real LLM streams one; the session runs the tool, and the LLM's next turn speaks ``then``;
    - a function of the match returning either of the above.

    No rule matching → ``default`` (a string, or None to say nothing). Replies stream word by word,
    ``token_delay`` seconds apart, after ``first_token_delay`` seconds (0 by default: deterministic and
    fast for tests; set them to feel the latency of a real model). A rule that calls a tool the agent
    does not have raises ``ValueError`` naming the tools it has. ``requests`` records every chat context
    it was asked to answer (for tests).
    """

    def __init__(
        self,
        rules: Mapping[str, Action] | Sequence[tuple[str, Action]],
        *,
        default: str | None = "Sorry, I did not understand that.",
        first_token_delay: float = 0.0,
        token_delay: float = 0.0,
    ) -> None:
        super().__init__()
        items = list(rules.items()) if isinstance(rules, Mapping) else list(rules)
        self._rules: list[_Rule] = []
        for i, item in enumerate(items):
            try:
                pattern, action = item
            except (TypeError, ValueError):
                raise TypeError(f"rules[{i}] must be a (pattern, action) pair (got {item!r})") from None
            if not isinstance(action, (str, ToolCall)) and not callable(action):
                raise TypeError(
                    f"the action for {pattern!r} must be a reply string, call(...), or a function of the match "
                    f"(got {type(action).__name__})"
                )
            try:
                compiled = re.compile(pattern, re.IGNORECASE)
            except (re.error, TypeError) as exc:
                raise ValueError(f"rules[{i}]: {pattern!r} is not a valid regular expression ({exc})") from None
            self._rules.append(_Rule(compiled, action))
        if default is not None and not isinstance(default, str):
            raise TypeError(f"default must be a string or None (got {type(default).__name__})")
        if first_token_delay < 0 or token_delay < 0:
            raise ValueError("delays must not be negative")
        self._default = default
        self._first_token_delay = first_token_delay
        self._token_delay = token_delay
        self._pending: dict[str, tuple[ToolCall, re.Match[str]]] = {}
        self.requests: list[llm.ChatContext] = []

    @property
    def model(self) -> str:
        return "scripted"

    @property
    def provider(self) -> str:
        return "nbagents.offline"

    def chat(
        self,
        *,
        chat_ctx: llm.ChatContext,
        tools: list[llm.Tool] | None = None,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
        parallel_tool_calls: NotGivenOr[bool] = NOT_GIVEN,
        tool_choice: NotGivenOr[llm.ToolChoice] = NOT_GIVEN,
        extra_kwargs: NotGivenOr[dict[str, Any]] = NOT_GIVEN,
    ) -> ScriptedStream:
        self.requests.append(chat_ctx.copy())
        return ScriptedStream(self, chat_ctx=chat_ctx, tools=tools or [], conn_options=conn_options)

    # -- deciding what to answer ---------------------------------------------------------------------

    def _answer(
        self, chat_ctx: llm.ChatContext, tool_names: Sequence[str] | None = None
    ) -> str | tuple[ToolCall, re.Match[str]] | None:
        """What to answer to ``chat_ctx``: reply text, a tool call (arguments filled in) with its match, or None."""
        items = list(chat_ctx.items)
        last = items[-1] if items else None
        if last is not None and last.type == "function_call_output":
            pending = self._pending.pop(last.call_id, None)
            if pending is None:
                return last.output if not last.is_error else f"That did not work: {last.output}"
            tool_call, match = pending
            return _fill(tool_call.then, match, result=_result_text(last.output))
        text = ""
        for item in reversed(items):
            if item.type == "message" and item.role == "user":
                text = item.text_content or ""
                break
        for rule in self._rules:
            match = rule.pattern.search(text)
            if match is None:
                continue
            action = rule.action(match) if callable(rule.action) and not isinstance(rule.action, ToolCall) else rule.action
            if isinstance(action, str):
                return _fill(action, match)
            if isinstance(action, ToolCall):
                if tool_names is not None and action.name not in tool_names:
                    raise ValueError(
                        f"the rule {rule.pattern.pattern!r} calls the tool {action.name!r}, but the agent's tools are "
                        f"{sorted(tool_names) or 'none'}; add it to the Agent's tools or fix the rule"
                    )
                arguments = {k: _fill(v, match) if isinstance(v, str) else v for k, v in action.arguments.items()}
                filled = ToolCall(action.name, arguments, action.then)
                return filled, match
            raise TypeError(f"the rule {rule.pattern.pattern!r} returned {action!r}; return a string or call(...)")
        return self._default


class ScriptedStream(llm.LLMStream):
    def __init__(
        self, owner: ScriptedLLM, *, chat_ctx: llm.ChatContext, tools: list[llm.Tool], conn_options: APIConnectOptions
    ) -> None:
        super().__init__(owner, chat_ctx=chat_ctx, tools=tools, conn_options=conn_options)
        self._owner = owner

    async def _run(self) -> None:
        owner = self._owner
        request_id = utils.shortuuid()
        answer = owner._answer(self._chat_ctx, get_fnc_tool_names(self._tools))
        if owner._first_token_delay:
            await asyncio.sleep(owner._first_token_delay)
        completion = 0
        if isinstance(answer, tuple):
            tool_call, match = answer
            call_id = f"call_{utils.shortuuid()}"
            owner._pending[call_id] = (tool_call, match)
            arguments = json.dumps(dict(tool_call.arguments))
            self._event_ch.send_nowait(
                llm.ChatChunk(
                    id=request_id,
                    delta=llm.ChoiceDelta(
                        role="assistant",
                        tool_calls=[llm.FunctionToolCall(name=tool_call.name, arguments=arguments, call_id=call_id)],
                    ),
                )
            )
            completion = len(arguments.split())
        elif answer:
            for i, token in enumerate(re.findall(r"\S+\s*", answer)):
                if i and owner._token_delay:
                    await asyncio.sleep(owner._token_delay)
                self._event_ch.send_nowait(
                    llm.ChatChunk(id=request_id, delta=llm.ChoiceDelta(role="assistant", content=token))
                )
                completion += 1
        prompt = sum(len((getattr(item, "text_content", None) or "").split()) for item in self._chat_ctx.items)
        self._event_ch.send_nowait(
            llm.ChatChunk(
                id=request_id,
                usage=llm.CompletionUsage(
                    completion_tokens=completion, prompt_tokens=prompt, total_tokens=prompt + completion
                ),
            )
        )


class _Template(string.Formatter):
    def __init__(self, match: re.Match[str], extra: dict[str, Any]) -> None:
        self._match, self._extra = match, extra

    def get_value(self, key: int | str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
        if isinstance(key, int) or (isinstance(key, str) and key.isdigit()):
            return self._match.group(int(key)) or ""
        if key in self._extra:
            return self._extra[key]
        groups = self._match.groupdict()
        if key in groups:
            return groups[key] or ""
        raise KeyError(
            f"the template uses {{{key}}}, but the pattern {self._match.re.pattern!r} has no group of that name"
            + (" ({result} exists only in then=...)" if key == "result" else "")
        )


def _fill(template: str, match: re.Match[str], **extra: Any) -> str:
    return _Template(match, extra).format(template)


def _result_text(output: str) -> str:
    # livekit-agents passes a tool's return value as str(); JSON strings are shown without quotes
    try:
        value = json.loads(output)
    except (TypeError, ValueError):
        return output
    return value if isinstance(value, str) else output
