"""A simulated caller talks to a livekit-agents voice agent built on the offline pipeline, through a real
server (each engine): the agent hears the caller's words, ScriptedLLM calls a function tool, and the
caller hears the tool's result spoken. The agent runs as a plain livekit-agents worker process."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
import uuid
from pathlib import Path

import pytest

from nbagents import sim
from nbagents.offline import word_error_rate

AGENT = Path(__file__).parent / "agents" / "order_desk.py"
HEARD_PHRASES = [
    "hello this is the order desk",
    "order four hundred twenty seven is shipped",
    "order five hundred twelve is being packed",
    "goodbye",
    "sorry which order",
]


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
async def test_caller_and_offline_agent_talk_through_a_tool_call(lk_server) -> None:
    env = dict(
        os.environ,
        LIVEKIT_URL=lk_server.url,
        LIVEKIT_API_KEY=lk_server.api_key,
        LIVEKIT_API_SECRET=lk_server.api_secret,
        LIVEKIT_AGENTS_PRELOAD_LOCAL_INFERENCE="0",
        PYTHONUNBUFFERED="1",
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(AGENT), "dev", "--no-reload",  # start mode declines jobs on a busy machine (CPU load >= 0.7)
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, start_new_session=True,
    )
    lines: list[str] = []
    drain: asyncio.Task | None = None
    try:
        await _wait_for_line(proc, lines, "registered worker", timeout=240)

        async def keep_reading() -> None:
            assert proc.stdout is not None
            async for raw in proc.stdout:
                lines.append(raw.decode("utf-8", "replace").rstrip())

        drain = asyncio.create_task(keep_reading())
        credentials = (lk_server.url, lk_server.api_key, lk_server.api_secret)
        room = f"voice-{uuid.uuid4().hex[:8]}"
        async with sim.join(room, "caller", phrases=HEARD_PHRASES, credentials=credentials) as caller:
            greeting = await caller.wait_for_speech(timeout=420)  # the job's process starts, loads its models
            assert word_error_rate("hello this is the order desk", greeting) <= 0.2, greeting

            said = await caller.say("what is the status of order 427")
            reply = await caller.wait_for_speech(timeout=120)
            assert "shipped" in reply, (reply, lines[-20:])

            await caller.say("what is the status of order 512")
            reply = await caller.wait_for_speech(timeout=120)
            assert "packed" in reply, (reply, lines[-20:])

            assert [h.text for h in caller.heard][-2:] == [
                "order four hundred twenty seven is shipped",
                "order five hundred twelve is being packed",
            ]
            first_reply = caller.heard[-2]
            assert first_reply.started_at is not None and first_reply.started_at > said["ended_at"]
            assert first_reply.sender.startswith("agent-")
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
