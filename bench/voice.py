"""Voice-agent benchmark: per-turn response latency of the offline pipeline as an nbagents job and under a
livekit-agents worker, on each engine, and the kernel's CPU while the voice-session view is live. Prints JSON.

    scripts/netns .venv/bin/python bench/voice.py [--engines embedded,livekit-server] [--turns 2] [--wer]

The agent is tests/offline/agents/order_desk.py (AgentSession with nbagents.offline STT/TTS, ScriptedLLM and a
function tool), unchanged in both runners. A simulated caller (nbagents.sim: the offline voice into its
microphone, PocketSphinx over what it hears) asks questions; each answer needs a tool call.

Response latency = the caller stops speaking (its last loud frame sent) → the first audible frame of the
agent's answer reaching the caller, both taken in the caller's process. It holds the network both ways, the
agent's end-of-turn decision (VAD silence + endpointing delay), STT, the scripted LLM and tool call, and the
TTS's first sentence. livekit-agents' own ``e2e_latency`` (measured in the job, from its VAD's end of speech
to its first audio frame out) and the stage breakdown are reported beside it for the nbagents job.

Per engine, in one run:

- ``nbagents_job``: a real ipykernel (as a notebook server starts it) launches the agent with
  ``nbagents.launch`` and drives the caller, over three windows of ``--turns`` questions: the job alone,
  then with the voice-session view displayed (badges, conversation, latency table, timeline), then with
  the whole inspector (which adds the audio plots of the caller's track); the kernel's own CPU
  (``time.process_time`` inside it) and its widget traffic are measured over each window.
- ``livekit_agents_worker``: the same file as a plain livekit-agents 1.8 worker (``python order_desk.py
  dev``) dispatched by the same server; the caller runs in this process.

Anchors: the same agent under livekit-agents on the same engine in the same run; embedded vs livekit-server.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import signal
import statistics
import sys
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

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
STAGES = ("end_of_turn_delay", "transcription_delay", "llm_ttft", "tts_ttfb", "e2e_latency")


def _load_bench_ui() -> Any:
    spec = importlib.util.spec_from_file_location("bench_ui", Path(__file__).with_name("ui.py"))
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def summary(ms: list[float]) -> dict[str, Any]:
    return {
        "turns": len(ms),
        "response_ms": [round(x) for x in ms],
        "p50_ms": round(statistics.median(ms)) if ms else None,
        "max_ms": round(max(ms)) if ms else None,
    }


# -- the nbagents job, driven from a real kernel ---------------------------------------------------------

KERNEL_SETUP = textwrap.dedent(
    f"""
    import importlib.util, json, time, asyncio
    import nbagents, nbagents.ui
    from nbagents import sim
    from nbagents.runtime.engine_session import shared_engine

    _spec = importlib.util.spec_from_file_location("order_desk", {str(AGENT)!r})
    order_desk = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(order_desk)
    QUESTIONS, HEARD = {QUESTIONS!r}, {HEARD!r}

    async def converse(caller, turns, offset=0, view=None):
        '''Ask ``turns`` questions; the caller-side response latencies and the kernel's CPU meanwhile.'''
        renders0 = view.timeline_renders if view else 0
        flushes0 = view._ui.flushes if view else 0
        b0, m0, c0, w0 = comm_traffic["bytes"], comm_traffic["messages"], time.process_time(), time.perf_counter()
        latencies = []
        for i in range(turns):
            said = await caller.say(QUESTIONS[(offset + i) % len(QUESTIONS)])
            await caller.wait_for_speech(timeout=120)
            heard = caller.heard[-1]
            latencies.append(1000 * (heard.started_at - said["speech_ended_at"]))
        wall = time.perf_counter() - w0
        return {{
            "latencies_ms": latencies,
            "kernel_cpu_pct": round(100 * (time.process_time() - c0) / wall, 2),
            "widget_bytes_per_s": round((comm_traffic["bytes"] - b0) / wall),
            "widget_messages_per_s": round((comm_traffic["messages"] - m0) / wall, 1),
            "timeline_renders_per_s": round(((view.timeline_renders if view else 0) - renders0) / wall, 2),
            "voice_view_redraws_per_s": round(((view._ui.flushes if view else 0) - flushes0) / wall, 2),
            "window_s": round(wall, 1),
        }}
    """
)


def bench_nbagents_job(kernel: Any, credentials: tuple[str, str, str], turns: int) -> dict[str, Any]:
    """Three windows of ``turns`` questions: the job alone, the voice view alone, the whole inspector."""
    room = f"bench-voice-job-{uuid.uuid4().hex[:6]}"
    out = kernel.run(
        textwrap.dedent(
            f"""
            from nbagents.ui._inspector import _renderer
            from nbagents.ui._voice import VoiceView
            shared_engine().use({credentials!r})
            job = nbagents.launch(order_desk.entrypoint, room={room!r}, prewarm=order_desk.prewarm, shutdown_process_timeout=20)
            caller = await sim.join({room!r}, "caller", phrases=HEARD)
            await caller.wait_for_speech(timeout=300)
            alone = await converse(caller, {turns})
            view = VoiceView(job, loop=asyncio.get_running_loop(), render_executor=_renderer())
            display(view.box)
            voice_view = await converse(caller, {turns}, offset={turns}, view=view)
            inspector = nbagents.ui.inspect(job)
            display(inspector)
            whole = await converse(caller, {turns}, offset={2 * turns}, view=inspector.voice)
            await caller.leave()
            result = await asyncio.wait_for(job.wait(), 120)
            rows = [dict(text=r.text, user=r.user_text, **{{k: getattr(r, k) for k in {STAGES!r}}})
                    for r in job.sessions[1].latency() if r.user_text]
            print(json.dumps({{"alone": alone, "voice_view": voice_view, "inspector": whole, "rows": rows,
                              "state": result.state}}))
            """
        ),
        timeout=1200,
    )
    data = json.loads(out[-1])
    latencies = [x for window in ("alone", "voice_view", "inspector") for x in data[window]["latencies_ms"]]
    stages = {
        f"{stage}_ms_p50": round(1000 * statistics.median(values))
        for stage in STAGES
        if (values := [row[stage] for row in data["rows"] if row[stage] is not None])
    }

    def kernel_window(window: dict[str, Any]) -> dict[str, Any]:
        return {k: window[k] for k in ("kernel_cpu_pct", "timeline_renders_per_s", "voice_view_redraws_per_s",
                                       "widget_bytes_per_s", "widget_messages_per_s", "window_s")}

    return {
        **summary(latencies),
        "agent_side_livekit_agents_metrics": stages,
        "job_state": data["state"],
        "kernel": {
            "job_only": kernel_window(data["alone"]),
            "voice_view_live": kernel_window(data["voice_view"]),
            "whole_inspector_live": kernel_window(data["inspector"]),
            "voice_view_cpu_pct": round(data["voice_view"]["kernel_cpu_pct"] - data["alone"]["kernel_cpu_pct"], 2),
        },
    }


# -- the same agent under a livekit-agents worker ----------------------------------------------------------


async def start_worker(url: str, key: str, secret: str) -> asyncio.subprocess.Process:
    env = dict(os.environ, LIVEKIT_URL=url, LIVEKIT_API_KEY=key, LIVEKIT_API_SECRET=secret, PYTHONUNBUFFERED="1")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(AGENT), "dev", "--no-reload",  # start mode declines jobs on a busy machine
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, start_new_session=True,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        line = await asyncio.wait_for(proc.stdout.readline(), deadline - time.monotonic())
        if not line:
            raise RuntimeError("the agent worker exited before registering")
        if b"registered worker" in line:
            asyncio.ensure_future(_drain(proc.stdout))
            return proc
    raise RuntimeError("the agent worker did not register within 300 s")


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


async def bench_worker(credentials: tuple[str, str, str], turns: int) -> dict[str, Any]:
    from nbagents import sim

    proc = await start_worker(*credentials)
    try:
        latencies: list[float] = []
        room = f"bench-voice-worker-{uuid.uuid4().hex[:6]}"
        async with sim.join(room, "caller", phrases=HEARD, credentials=credentials) as caller:
            await caller.wait_for_speech(timeout=300)
            for i in range(turns):
                said = await caller.say(QUESTIONS[i % len(QUESTIONS)])
                await caller.wait_for_speech(timeout=120)
                latencies.append(1000 * (caller.heard[-1].started_at - said["speech_ended_at"]))
        return summary(latencies)
    finally:
        await stop_worker(proc)


async def word_error_rates() -> dict[str, Any]:
    from nbagents.offline import STT, TTS
    from nbagents.offline._evaluation import SENTENCES, measure_wer, speak_all

    spoken = await speak_all(TTS())
    without = await measure_wer(STT(), spoken)
    with_phrases = await measure_wer(STT(phrases=list(SENTENCES)), spoken)
    return {"sentences": len(SENTENCES), "without_phrases": round(without.wer, 3), "with_phrases": round(with_phrases.wer, 3)}


def run(args: argparse.Namespace) -> dict[str, Any]:
    from nbagents.engines import make_engine

    bench_ui = _load_bench_ui()
    out: dict[str, Any] = {"benchmark": "voice agent, offline pipeline", "cpu_count": os.cpu_count(),
                           "load_avg_start": [round(x, 2) for x in os.getloadavg()], "turns": args.turns}
    if args.wer:
        out["wer"] = asyncio.run(word_error_rates())
    kernel = bench_ui.Kernel()
    try:
        kernel.run("%load_ext nbagents\n" + bench_ui.COUNTER + KERNEL_SETUP)
        out["engines"] = {}
        for name in args.engines.split(","):
            options = {"config_file": str(LIVEKIT_SERVER_CONFIG)} if name == "livekit-server" else {}
            engine = make_engine(name, **options)
            credentials = tuple(engine.start())
            try:
                result = {"nbagents_job": bench_nbagents_job(kernel, credentials, args.turns)}
                result["livekit_agents_worker"] = asyncio.run(bench_worker(credentials, 3 * args.turns))
                job, worker = result["nbagents_job"]["p50_ms"], result["livekit_agents_worker"]["p50_ms"]
                if job and worker:
                    result["job_vs_worker_p50"] = round(job / worker, 2)
                out["engines"][name] = result
            finally:
                engine.stop()
    finally:
        kernel.close()
    p50 = {name: r["nbagents_job"]["p50_ms"] for name, r in out["engines"].items()}
    if p50.get("embedded") and p50.get("livekit-server"):
        out["job_embedded_vs_livekit_server_p50"] = round(p50["embedded"] / p50["livekit-server"], 2)
    out["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engines", default="embedded,livekit-server")
    parser.add_argument("--turns", type=int, default=2,
                        help="questions per measuring window (the job: alone, voice view, inspector; the worker: 3x as many)")
    parser.add_argument("--wer", action="store_true", help="also measure the word error rate on the fixed sentence set")
    args = parser.parse_args()
    if os.environ.get("NBAGENTS_NETNS") != "1":
        sys.exit("bench/voice.py opens WebRTC connections: run it inside scripts/netns")
    print(json.dumps(run(args), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
