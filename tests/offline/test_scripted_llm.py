"""ScriptedLLM drives a real livekit-agents AgentSession: replies by rule, and function-tool calls that run."""

from __future__ import annotations

import pytest
from livekit.agents import Agent, AgentSession, RunContext, function_tool

from nbagents.offline import ScriptedLLM, call

ORDERS = {"427": "shipped", "512": "being packed"}


class OrderDesk(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="You look up orders.")
        self.looked_up: list[str] = []

    @function_tool
    async def order_status(self, context: RunContext, order_id: str) -> str:
        """Look up the status of an order."""
        self.looked_up.append(order_id)
        return ORDERS.get(order_id, "unknown")


def rules() -> ScriptedLLM:
    return ScriptedLLM(
        [
            (r"\bhello\b|\bhi\b", "Hello! How can I help you today?"),
            (r"order (?:number )?(?P<id>\d+)", call("order_status", order_id="{id}", then="Order {id} is {result}.")),
            (r"bye", lambda m: f"Good{m.group(0)}!"),
        ],
        default="Sorry, I did not catch that.",
    )


async def test_rules_reply_and_fall_back_to_the_default() -> None:
    async with AgentSession(llm=rules()) as session:
        await session.start(OrderDesk())
        result = await session.run(user_input="hi there")
        msg = result.expect.next_event().is_message(role="assistant")
        assert msg.event().item.text_content == "Hello! How can I help you today?"
        result = await session.run(user_input="what colour is the sky")
        msg = result.expect.next_event().is_message(role="assistant")
        assert msg.event().item.text_content == "Sorry, I did not catch that."
        result = await session.run(user_input="ok bye")
        assert result.expect.next_event().is_message(role="assistant").event().item.text_content == "Goodbye!"


async def test_a_tool_call_runs_and_its_result_is_answered() -> None:
    agent = OrderDesk()
    async with AgentSession(llm=rules()) as session:
        await session.start(agent)
        result = await session.run(user_input="where is order number 427?")
        result.expect.next_event().is_function_call(name="order_status", arguments={"order_id": "427"})
        result.expect.next_event().is_function_call_output(output="shipped")
        reply = result.expect.next_event().is_message(role="assistant").event().item.text_content
    assert agent.looked_up == ["427"]
    assert reply == "Order 427 is shipped."


async def test_the_reply_streams_word_by_word() -> None:
    from livekit.agents import llm

    scripted = ScriptedLLM({"weather": "It is sunny in Paris today."})
    ctx = llm.ChatContext()
    ctx.add_message(role="user", content="what is the weather like")
    chunks = [c async for c in scripted.chat(chat_ctx=ctx)]
    texts = [c.delta.content for c in chunks if c.delta and c.delta.content]
    assert texts == ["It ", "is ", "sunny ", "in ", "Paris ", "today."]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 6


async def test_a_rule_calling_a_missing_tool_names_the_tools() -> None:
    scripted = ScriptedLLM({"refund": call("issue_refund")})
    async with AgentSession(llm=scripted) as session:
        await session.start(OrderDesk())
        with pytest.raises(Exception) as info:
            await session.run(user_input="I want a refund")
    assert "issue_refund" in str(info.value), repr(info.value)


def test_bad_rules_are_refused_clearly() -> None:
    with pytest.raises(ValueError, match="regular expression"):
        ScriptedLLM({"(unclosed": "x"})
    with pytest.raises(TypeError, match="reply string"):
        ScriptedLLM({"x": 42})
    with pytest.raises(TypeError, match="pair"):
        ScriptedLLM(["just a string"])
