"""The inspector's voice-session view, driven by a real job running a real AgentSession (no browser).

The agent speaks with the offline TTS into the room; a simulated participant sends it what to answer as
data (the user's words as text), so each turn happens when the test says: the view is checked while the
job runs, then its final state. ScriptedLLM answers, calling a function tool for order questions.

(No ``from __future__ import annotations``: livekit-agents reads the tool's annotations in the job process.)
"""

import asyncio
import base64
import io
import json

from livekit.agents import Agent, AgentSession, RunContext, function_tool
from PIL import Image

from nbagents import JobContext, launch, sim
from nbagents.offline import TTS, ScriptedLLM, call
from nbagents.ui import STATE_MIME, Inspector
from nbagents.ui._final import final_plot_png, plot_bundle, state_bundle

from waiting import wait_until

STORY = "Once upon a time. " + "There was a parcel that travelled far. " * 8 + "The end."  # short sentences: audio starts soon


class Desk(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="You look up orders.")

    @function_tool
    async def order_status(self, context: RunContext, order_id: str) -> str:
        """Look up the status of an order."""
        return {"427": "shipped"}.get(order_id, "unknown")


async def desk_driven_by_data(ctx: JobContext) -> None:
    """Says hello, then answers each data packet's text as the user's words; "stop" interrupts it."""
    import asyncio

    llm = ScriptedLLM(
        [(r"order (?P<id>\d+)", call("order_status", order_id="{id}", then="Order {id} is {result}.")), (r"story", STORY)],
        default="Sorry?",
    )
    await ctx.connect()
    session = AgentSession(llm=llm, tts=TTS())
    await session.start(agent=Desk(), room=ctx.room)

    def on_data(packet) -> None:
        text = packet.data.decode()
        if text == "stop":
            session.interrupt()
        else:
            asyncio.ensure_future(session.generate_reply(user_input=text))

    ctx.room.on("data_received", on_data)
    await session.say("Hello, this is the desk.")


def png_height(png: bytes) -> int:
    return Image.open(io.BytesIO(png)).size[1]


async def test_voice_view_follows_a_session_live_and_keeps_its_final_state(server, room_name, tmp_path) -> None:
    job = launch(desk_driven_by_data, room=room_name, shutdown_process_timeout=20, jobs_dir=tmp_path)
    inspector = Inspector(job)
    view = inspector.voice
    if not job.sessions:  # a warm job process may have started its session while the inspector was built
        assert view.box.layout.display == "none"  # hidden until a session starts
    async with sim.join(room_name, "alice") as alice:
        await wait_until(lambda: "Hello, this is the desk." in view.conversation.value, timeout=300,
                         what="the greeting in the conversation")  # the job loads its voice first
        assert view.box.layout.display != "none"
        assert "<code>Desk</code>" in view.badges.value
        await wait_until(lambda: job.sessions[1].agent_state in ("listening", "idle")
                         and f"data-state='{job.sessions[1].agent_state}'" in view.badges.value,
                         what="the agent's badge to leave speaking after the greeting")
        await wait_until(lambda: len(view.timeline.value) > 0, what="the first timeline")
        first_timeline = view.timeline.value

        await alice.send_data("what is the status of order 427")
        await wait_until(lambda: "Order 427 is shipped." in view.conversation.value, what="the reply to the order question")
        conversation = view.conversation.value
        assert "what is the status of order 427" in conversation
        assert "order_status(order_id=&quot;427&quot;)" in conversation and ">shipped</code>" in conversation
        assert conversation.index("order_status(") < conversation.index("Order 427 is shipped.")  # in time order
        await wait_until(lambda: job.sessions[1].latency()[-1].tts_ttfb is not None, what="the reply's metrics")
        reply = job.sessions[1].latency()[-1]
        assert reply.text == "Order 427 is shipped." and reply.user_text == "what is the status of order 427"
        assert reply.llm_ttft is not None, reply
        await wait_until(lambda: f">{reply.tts_ttfb * 1000:.0f}<" in view.latency.value.split("nbagents-latency-row")[-1],
                         what="the reply's TTS time to first byte in the latency table")
        assert view.latency.value.count("nbagents-latency-row") == 2 and "Order 427 is shipped." in view.latency.value
        await wait_until(lambda: view.timeline.value != first_timeline, what="the timeline to grow")

        await alice.send_data("tell me a story")
        spoken = sum(state == "speaking" for _, state in job.sessions[1].agent_states)
        await wait_until(lambda: sum(state == "speaking" for _, state in job.sessions[1].agent_states) > spoken,
                         what="the agent to speak the story", timeout=120)
        await wait_until(lambda: "data-state='speaking'" in view.badges.value, what="the badge to say speaking")
        # livekit-agents commits an interrupted reply only with the words already played out: let some play
        await asyncio.sleep(1.5)
        assert job.sessions[1].agent_state == "speaking", "the story ended before it could be interrupted"
        await alice.send_data("stop")
        await wait_until(lambda: "nbagents-turn-interrupted" in view.conversation.value, what="the interrupted reply")
        assert "(interrupted)" in view.conversation.value

        result = await job.stop("seen enough")
    await wait_until(lambda: view.finished and inspector.finished, what="the views to finish")
    assert "data-state='closed'" in view.badges.value and "data-state='listening'" not in view.badges.value
    assert result.state == "succeeded", result.error
    assert [t["role"] for t in result.transcript] == ["assistant", "user", "assistant", "user", "assistant"]

    # the final state: transcript and latency table as Markdown and text, the timeline in the PNG
    png = final_plot_png(job)
    bundle = state_bundle(job, result, png)
    voice = bundle[STATE_MIME]["voice"]
    json.dumps(voice)
    assert [e["kind"] for e in voice["conversation"]] == ["turn", "turn", "tool", "turn", "turn", "turn"]
    assert voice["conversation"][-1]["interrupted"]
    markdown = bundle["text/markdown"]
    assert "**Conversation**" in markdown and "| **user** | what is the status of order 427 |" in markdown
    assert '`order_status(order_id="427")` → shipped' in markdown and "*(interrupted)*" in markdown
    assert "| reply | end of utterance | STT | LLM TTFT | TTS TTFB | total |" in markdown
    assert "what is the status of order 427" in bundle["text/plain"] and "latency per reply" in bundle["text/plain"]
    timeline_only = view.plot.render([job.sessions[1]], None)
    assert png_height(png) >= png_height(timeline_only)  # the timeline is stacked above any audio plot
    assert "voice timeline" in plot_bundle(job, png)["text/plain"]
    assert "image/png" not in bundle and base64.b64decode(plot_bundle(job, png)["image/png"]) == png  # stored once

    on_disk = json.loads((job.log_dir / "transcript.json").read_text())
    assert [t["text"] for t in on_disk["transcript"]] == [t["text"] for t in result.transcript]
    assert on_disk["sessions"][0]["tool_calls"][0]["output"] == "shipped"
    assert view.plot.frames_redrawn < view.plot.frames_rendered  # live updates reuse the cached frame
