"""A simulated caller talks to a voice agent built on the offline pipeline, through a real server (each
engine): the agent hears the caller's words, ScriptedLLM calls a function tool, and the caller hears the
tool's result spoken. The same agent (agents/order_desk.py) runs as an nbagents job and as a plain
livekit-agents worker process."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import signal
import sys
import time
import uuid
from pathlib import Path

import pytest

from nbagents import launch, sim
from nbagents.offline import word_error_rate

AGENT = Path(__file__).parent / "agents" / "order_desk.py"
UNLOADED_WORKER = Path(__file__).parents[1] / "unloaded_worker.py"  # see there
# The caller hears the closest of these (strict): the checks below tell which answer the agent gave, and a busy
# machine roughens the audio a participant receives (at load 6, "is being packed" was once heard as "is the packed").
HEARD_PHRASES = [
    "hello this is the order desk",
    "order four hundred twenty seven is shipped",
    "order five hundred twelve is being packed",
    "goodbye",
    "sorry which order",
]
CONVERSATION = [
    ("what is the status of order 427", "order four hundred twenty seven is shipped"),
    ("what is the status of order 512", "order five hundred twelve is being packed"),
]
# Deadlines for things that need processes started and models loaded: generous, the machine is shared.
FIRST_WORDS = 300.0
REPLY = 120.0


def order_desk():
    spec = importlib.util.spec_from_file_location("order_desk", AGENT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def talk(caller: sim.SimulatedParticipant) -> list[dict]:
    """The greeting, then each question and its spoken answer; returns what was said and heard, with times."""
    greeting = await caller.wait_for_speech(timeout=FIRST_WORDS)  # the job starts and loads its models
    assert word_error_rate("hello this is the order desk", greeting) <= 0.2, greeting
    turns = []
    for question, answer in CONVERSATION:
        said = await caller.say(question)
        reply = await caller.wait_for_speech(timeout=REPLY)
        assert reply == answer, (question, reply, caller.heard)
        heard = caller.heard[-1]
        assert heard.sender.startswith("agent-")
        assert heard.started_at is not None and heard.started_at > said["ended_at"]
        turns.append({"said": question, "ended_at": said["ended_at"], "reply": reply, "reply_started_at": heard.started_at})
    return turns


@pytest.mark.timeout(900)  # the job loads its models; slow on a loaded machine
async def test_caller_and_offline_agent_talk_through_a_tool_call_in_an_nbagents_job(server, tmp_path) -> None:
    agent = order_desk()
    room = f"voice-{uuid.uuid4().hex[:8]}"
    job = launch(agent.entrypoint, room=room, prewarm=agent.prewarm, shutdown_process_timeout=20, jobs_dir=tmp_path)
    async with sim.join(room, "caller", phrases=HEARD_PHRASES, strict=True) as caller:
        try:
            turns = await talk(caller)
        except (AssertionError, TimeoutError) as exc:
            raise AssertionError(f"{exc}\nthe job ({job.state}), its last log lines:\n" + "\n".join(f"{r.level} {r.logger}: {r.message}" for r in list(job.logs)[-40:])) from exc
    result = await asyncio.wait_for(job.wait(), 120)  # the room closes once the caller has left
    assert result.state == "succeeded", (result.error, list(job.logs)[-20:])

    # what the agent's STT heard of the caller's words (the phrase model knows the questions)
    heard = [t["text"] for t in result.transcript if t["role"] == "user"]
    wer = word_error_rate([t["said"] for t in turns], heard)
    print(f"\nWER of the agent's STT on the caller's questions: {wer:.3f} ({heard})")
    assert wer <= 0.1, heard
    replies = [t["text"] for t in result.transcript if t["role"] == "assistant"]
    assert replies == [agent.GREETING, "Order 427 is shipped.", "Order 512 is being packed."]

    session = job.sessions[1]
    assert session.agent == "OrderDesk"
    assert [(c.name, json.loads(c.arguments), c.output, c.is_error) for c in session.tool_calls] == [
        ("order_status", {"order_id": "427"}, "shipped", False),
        ("order_status", {"order_id": "512"}, "being packed", False),
    ]
    answered = [row for row in session.latency() if row.user_text is not None]
    assert [row.user_text for row in answered] == heard
    for row in answered:  # livekit-agents measured every stage of the answered turns
        assert None not in (row.end_of_turn_delay, row.transcription_delay, row.llm_ttft, row.tts_ttfb, row.e2e_latency), row
        assert row.e2e_latency > 0
    states = [s for _, s in session.agent_states]
    assert {"listening", "thinking", "speaking"} <= set(states)
    assert any(s == "speaking" for _, s in session.user_states)

    on_disk = json.loads((job.log_dir / "transcript.json").read_text())
    assert [(t["role"], t["text"]) for t in on_disk["transcript"]] == [(t["role"], t["text"]) for t in result.transcript]
    assert [c["name"] for c in on_disk["sessions"][0]["tool_calls"]] == ["order_status", "order_status"]
    assert len(on_disk["sessions"][0]["latency"]) == 3

    # the caller's measure of the same turns: its last word → the answer's first sound, as it heard them
    for turn, row in zip(turns, answered):
        response = turn["reply_started_at"] - turn["ended_at"]
        print(f"response at the caller {response * 1000:.0f} ms; livekit-agents' e2e_latency {row.e2e_latency * 1000:.0f} ms")


async def _wait_for_line(proc: asyncio.subprocess.Process, lines: list[str], needle: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        try:
            raw = await asyncio.wait_for(proc.stdout.readline(), deadline - time.monotonic())
        except asyncio.TimeoutError:
            break
        if not raw:
            raise AssertionError("the worker exited:\n" + "\n".join(lines[-30:]))
        lines.append(raw.decode("utf-8", "replace").rstrip())
        if needle in lines[-1]:
            return
    raise AssertionError(f"no {needle!r} from the worker within {timeout:.0f} s:\n" + "\n".join(lines[-30:]))


@pytest.mark.timeout(900)  # three processes import livekit-agents and load models: slow on a loaded machine
async def test_caller_and_offline_agent_talk_through_a_tool_call_under_a_livekit_agents_worker(lk_server) -> None:
    env = dict(
        os.environ,
        LIVEKIT_URL=lk_server.url,
        LIVEKIT_API_KEY=lk_server.api_key,
        LIVEKIT_API_SECRET=lk_server.api_secret,
        PYTHONUNBUFFERED="1",
    )
    proc = await asyncio.create_subprocess_exec(
        # the agent's script as is; its worker reports no load, or a busy machine would keep its job from it
        sys.executable, str(UNLOADED_WORKER), str(AGENT), "dev", "--no-reload",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, start_new_session=True,
    )
    lines: list[str] = []
    drain: asyncio.Task | None = None
    try:
        await _wait_for_line(proc, lines, "registered worker", timeout=FIRST_WORDS)

        async def keep_reading() -> None:
            assert proc.stdout is not None
            async for raw in proc.stdout:
                lines.append(raw.decode("utf-8", "replace").rstrip())

        drain = asyncio.create_task(keep_reading())
        credentials = (lk_server.url, lk_server.api_key, lk_server.api_secret)
        room = f"voice-{uuid.uuid4().hex[:8]}"
        async with sim.join(room, "caller", phrases=HEARD_PHRASES, strict=True, credentials=credentials) as caller:
            try:
                await talk(caller)
            except (AssertionError, TimeoutError) as exc:
                raise AssertionError(f"{exc}\nthe worker's last lines:\n" + "\n".join(lines[-40:])) from exc
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except asyncio.TimeoutError:
                os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
        if drain is not None:
            drain.cancel()
