"""The agent side of bench/server.py's scale figure: a livekit-agents 1.8 worker whose jobs listen to their caller.

Run by bench/server.py as a subprocess (``python bench/scale_agent.py URL KEY SECRET OUT_DIR``): it registers
with the server as a worker for automatic dispatch, so every room the benchmark opens gets a job, which runs
in its own process as in production. Each job subscribes to its caller's audio, decodes it through the SDK's
``AudioStream`` (as a voice agent's VAD/STT would, in 100 ms frames) and writes once a second to
``OUT_DIR/<room>.json`` how many 10 ms blocks it has decoded and how many of them carried the caller's tone.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

OUT_ENV = "NBAGENTS_SCALE_OUT"
LOUD = 3000  # int16 peak that only the caller's tone reaches


async def entrypoint(ctx: Any) -> None:
    from livekit import rtc
    from livekit.agents import AutoSubscribe

    out = Path(os.environ[OUT_ENV]) / f"{ctx.room.name}.json"
    await ctx.connect(auto_subscribe=AutoSubscribe.AUDIO_ONLY)
    subscribed: asyncio.Future[rtc.Track] = asyncio.get_running_loop().create_future()

    def on_track(track: rtc.Track, publication: rtc.RemoteTrackPublication, participant: Any) -> None:
        if track.kind == rtc.TrackKind.KIND_AUDIO and not subscribed.done():
            subscribed.set_result(track)

    ctx.room.on("track_subscribed", on_track)
    for participant in ctx.room.remote_participants.values():
        for publication in participant.track_publications.values():
            if publication.track is not None and publication.kind == rtc.TrackKind.KIND_AUDIO:
                on_track(publication.track, publication, participant)
    track = await subscribed
    # 100 ms frames, judged in 10 ms blocks: the same verdict as per 10 ms frame, a tenth of the Python work
    stream = rtc.AudioStream(track, sample_rate=48000, num_channels=1, frame_size_ms=100)
    frames = loud = 0
    next_report = time.perf_counter()
    async for event in stream:
        blocks = np.frombuffer(event.frame.data, dtype=np.int16).reshape(-1, 480)
        frames += len(blocks)
        loud += int((np.abs(blocks).max(axis=1) > LOUD).sum())
        now = time.perf_counter()
        if now >= next_report:
            next_report = now + 1.0
            tmp = out.with_suffix(".tmp")
            tmp.write_text(json.dumps({"t": now, "frames": frames, "loud": loud, "pid": os.getpid()}))
            tmp.replace(out)


def no_load(*_: Any) -> float:
    """The load this worker reports: none.

    livekit-server offers a job only to a worker whose reported load is below 1 (its dispatch affinity is
    ``1 - load``), and livekit-agents reports the machine's CPU use by default. The scale figure drives the
    machine's CPU to its limit on purpose, so with the default the reference server would stop dispatching
    before its relay is the limit; like ``load_threshold=inf``, this keeps the worker taking every job.
    """
    return 0.0


def main() -> int:
    url, key, secret, out = sys.argv[1:5]
    os.environ[OUT_ENV] = out
    os.environ.setdefault("LIVEKIT_AGENTS_PRELOAD_LOCAL_INFERENCE", "0")
    import logging

    logging.basicConfig(level=logging.WARNING)
    from livekit.agents import AgentServer, JobExecutorType, WorkerOptions

    import scale_agent  # by reference, so the job processes import it (bench/ is on their PYTHONPATH)

    server = AgentServer.from_server_options(WorkerOptions(
        entrypoint_fnc=scale_agent.entrypoint, ws_url=url, api_key=key, api_secret=secret,
        job_executor_type=JobExecutorType.PROCESS, num_idle_processes=2, shutdown_process_timeout=10.0,
        load_threshold=float("inf"), load_fnc=no_load, port=0,
    ))

    async def run() -> None:
        started = asyncio.Event()
        server.once("worker_started", lambda *_: started.set())
        runner = asyncio.ensure_future(server.run(devmode=True))
        await asyncio.wait_for(started.wait(), 120)
        print("ready", flush=True)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, sys.stdin.read)  # until the benchmark closes our stdin
        await server.aclose()
        runner.cancel()

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
