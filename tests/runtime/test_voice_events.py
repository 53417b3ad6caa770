"""An AgentSession in a job streams its voice events to the kernel, and its conversation is the job's transcript.

(No ``from __future__ import annotations`` here: livekit-agents reads the tool's annotations with
``get_type_hints``, and code shipped by value keeps only the globals its code uses, so string
annotations would not resolve in the job process, as they would not in a notebook cell either.)
"""

import json

from livekit.agents import Agent, AgentSession, RunContext, function_tool, room_io

from nbagents import JobContext, launch
from nbagents.runtime import events as ev
from nbagents.runtime.persist import read_event_log
from scripted_llm import EchoLLM


class Forecaster(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="You tell the weather.", llm=EchoLLM())

    @function_tool
    async def weather(self, context: RunContext, city: str) -> str:
        """The weather in a city."""
        return f"sunny in {city}"


async def talk_about_the_weather(ctx: JobContext) -> None:
    await ctx.connect()
    session = AgentSession()
    await session.start(agent=Forecaster(), room=ctx.room, room_options=room_io.RoomOptions(audio_output=False))
    await session.generate_reply(user_input="hello")
    await session.generate_reply(user_input='call weather {"city": "Paris"}')
    ctx.shutdown(reason="talked")


async def test_voice_session_events_and_transcript(server, room_name) -> None:
    job = launch(talk_about_the_weather, room=room_name, shutdown_process_timeout=20)
    result = await job
    assert result.state == "succeeded", result.error
    assert result.transcript == [
        {"role": "user", "text": "hello", "time": result.transcript[0]["time"]},
        {"role": "assistant", "text": "You said: hello", "time": result.transcript[1]["time"]},
        {"role": "user", "text": 'call weather {"city": "Paris"}', "time": result.transcript[2]["time"]},
        {"role": "assistant", "text": "the tool said sunny in Paris", "time": result.transcript[3]["time"]},
    ]
    times = [turn["time"] for turn in result.transcript]
    assert times == sorted(times) and job.created <= times[0]

    started = [e for e in job.events if isinstance(e, ev.SessionStarted)]
    assert [(e.session, e.agent) for e in started] == [(1, "Forecaster")]
    states = [e.new_state for e in job.events if isinstance(e, ev.AgentStateChanged)]
    assert "thinking" in states and states[-1] in ("listening", "idle")
    assert job.sessions[1].agent_state == states[-1]
    calls = [call for e in job.events if isinstance(e, ev.FunctionToolsExecuted) for call in e.calls]
    assert [(c.name, json.loads(c.arguments), c.output, c.is_error) for c in calls] == [
        ("weather", {"city": "Paris"}, "sunny in Paris", False)
    ]
    assert job.sessions[1].tool_calls == calls
    answers = [m for m in job.sessions[1].metrics if m.role == "assistant"]
    assert answers and all(m.llm_ttft is not None and m.llm_ttft >= 0 for m in answers)

    closed = [e for e in job.events if isinstance(e, ev.SessionClosed)]
    assert [(e.session, e.reason) for e in closed] == [(1, "user_initiated")]  # as livekit-agents closes a primary session
    assert [e.primary for e in started] == [True]

    on_disk = json.loads((job.log_dir / "result.json").read_text())
    assert on_disk["transcript"] == result.transcript
    logged = [ev.from_json(r) for r in read_event_log(job.log_dir / "events.jsonl") if r["kind"] == "conversation_item"]
    assert [e.text for e in logged] == [turn["text"] for turn in result.transcript]
