"""Voice-agent benchmark: per-turn response latency of the offline pipeline, and its word error rate.

    scripts/netns .venv/bin/python bench/voice.py [--engines embedded,livekit-server] [--turns 4] [--no-wer]

For each engine, the order-desk agent (tests/offline/agents/order_desk.py: AgentSession with
nbagents.offline STT/TTS, ScriptedLLM and a function tool) runs as a plain livekit-agents 1.8 worker, and
a simulated caller (nbagents.sim, offline TTS into its microphone, offline STT over what it hears) asks
questions. Response latency = the caller's last speech frame played out → the first audible frame of
the agent's answer reaching the caller (both times taken in the caller's process). The anchor is the same
agent on both engines in one run. Prints JSON.

Not measured yet: the same agent as an nbagents job (AgentSession inside nbagents jobs arrives with
livekit-agents' own JobContext in jobs) and the kernel's CPU with the voice-session view live.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from nbagents import sim
from nbagents.engines import make_engine

ROOT = Path(__file__).resolve().parents[1]
AGENT = ROOT / "tests" / "offline" / "agents" / "order_desk.py"
LIVEKIT_SERVER_CONFIG = ROOT / "tests" / "livekit-server.yaml"
QUESTIONS = ["what is the status of order 427", "what is the status of order 512"]
HEARD = [
    "hello this is the order desk",
    "order four hundred twenty seven is shipped",
    "order five hundred twelve is being packed",
    "goodbye",
    "sorry which order",
]


async def start_worker(url: str, key: str, secret: str) -> asyncio.subprocess.Process:
    env = dict(os.environ, LIVEKIT_URL=url, LIVEKIT_API_KEY=key, LIVEKIT_API_SECRET=secret, PYTHONUNBUFFERED="1")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(AGENT), "dev", "--no-reload",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, start_new_session=True,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        line = await asyncio.wait_for(proc.stdout.readline(), deadline - time.monotonic())
        if not line:
            raise RuntimeError("the agent worker exited before registering")
        if b"registered worker" in line:
            asyncio.ensure_future(_drain(proc.stdout))
            return proc
    raise RuntimeError("the agent worker did not register within 180 s")


async def _drain(stream: asyncio.StreamReader) -> None:
    async for _ in stream:
        pass


async def stop_worker(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 30)
        except asyncio.TimeoutError:
            os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()


async def conversation(credentials: tuple[str, str, str], turns: int) -> dict[str, Any]:
    latencies: list[float] = []
    replies: list[str] = []
    async with sim.join(f"bench-voice-{uuid.uuid4().hex[:6]}", "caller", phrases=HEARD, credentials=credentials) as caller:
        joined = time.time()
        await caller.wait_for_speech(timeout=180)
        greeting_s = caller.heard[-1].started_at - joined if caller.heard[-1].started_at else None
        for i in range(turns):
            said = await caller.say(QUESTIONS[i % len(QUESTIONS)])
            replies.append(await caller.wait_for_speech(timeout=60))
            heard = caller.heard[-1]
            if heard.started_at is not None:
                latencies.append(heard.started_at - said["ended_at"])
    ms = [round(1000 * x) for x in latencies]
    return {
        "turns": len(ms),
        "response_ms": ms,
        "p50_ms": round(statistics.median(ms)) if ms else None,
        "max_ms": max(ms) if ms else None,
        "replies": replies,
        "join_to_greeting_s": round(greeting_s, 2) if greeting_s is not None else None,
    }


async def bench_engine(name: str, turns: int) -> dict[str, Any]:
    options = {"config_file": str(LIVEKIT_SERVER_CONFIG)} if name == "livekit-server" else {}
    engine = make_engine(name, **options)
    url, key, secret = engine.start()
    try:
        proc = await start_worker(url, key, secret)
        try:
            return {"livekit_agents_worker": await conversation((url, key, secret), turns)}
        finally:
            await stop_worker(proc)
    finally:
        engine.stop()


async def word_error_rates() -> dict[str, Any]:
    from nbagents.offline import STT, TTS
    from nbagents.offline._evaluation import SENTENCES, measure_wer, speak_all

    spoken = await speak_all(TTS())
    without = await measure_wer(STT(), spoken)
    with_phrases = await measure_wer(STT(phrases=list(SENTENCES)), spoken)
    return {"sentences": len(SENTENCES), "without_phrases": round(without.wer, 3), "with_phrases": round(with_phrases.wer, 3)}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"load_avg_start": os.getloadavg()[0]}
    if args.wer:
        out["wer"] = await word_error_rates()
    out["engines"] = {name: await bench_engine(name, args.turns) for name in args.engines.split(",")}
    p50 = {n: r["livekit_agents_worker"]["p50_ms"] for n, r in out["engines"].items()}
    if p50.get("embedded") and p50.get("livekit-server"):
        out["embedded_vs_livekit_server_p50"] = round(p50["embedded"] / p50["livekit-server"], 2)
    out["not_measured"] = [
        "the same agent as an nbagents job (needs AgentSession in nbagents jobs)",
        "kernel CPU with the voice-session view live (the view is not built yet)",
    ]
    out["load_avg_end"] = os.getloadavg()[0]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engines", default="embedded,livekit-server")
    parser.add_argument("--turns", type=int, default=4)
    parser.add_argument("--no-wer", dest="wer", action="store_false", help="skip the word error rate measurement")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args)), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
