"""Watchdog, engine restart and heartbeat costs, each beside its anchor from the same run.

Run inside the network namespace:  scripts/netns .venv/bin/python bench/lifetime.py [--runs N] [--engine E]

Prints one JSON document:

- ``unresponsive_detect_s``: SIGSTOP of a connected job -> ``job.unresponsive``; anchor: the configured
  limit (``UNRESPONSIVE_AFTER_SECONDS``);
- ``stop_kill_s``: ``job.stop()`` of that stopped job -> its result (``killed``); anchor: its
  ``shutdown_process_timeout``;
- ``restart_to_connected_s``: the engine's server SIGKILLed -> the next launch's job connected (restart
  included); anchor: ``first_start_to_connected_s``, the very first launch in the same run (engine start
  included, job-process zygote already warm);
- ``kernel_cpu_pct_per_idle_job`` (heartbeats received and checked) over 10 s with 10 idle connected jobs;
  anchor: ``job_cpu_pct_idle``, what each of those job processes itself uses meanwhile;
- ``remote_probe_ms``: the check a remote engine gets before each launch (a TCP connect); anchor:
  ``remote_list_rooms_ms``, the service-API call the remote engine makes when it first starts.
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
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TEST_CONFIG = ROOT / "tests" / "livekit-server.yaml"


async def idle(ctx: Any) -> None:
    await ctx.connect()
    await asyncio.Event().wait()


async def connect_and_leave(ctx: Any) -> None:
    await ctx.connect()
    ctx.shutdown(reason="measured")


async def _connected(job: Any) -> None:
    while job.connected is None and not job.done:
        await asyncio.sleep(0.005)
    if job.connected is None:
        raise RuntimeError(f"job {job.id} ended before connecting: {job.result(0)}")


def _median(values: list[float], digits: int = 3) -> float:
    return round(statistics.median(values), digits)


async def measure(engine_name: str, runs: int) -> dict[str, Any]:
    import psutil

    from nbagents import launch
    from nbagents.engines import make_engine
    from nbagents.engines.remote import RemoteEngine
    from nbagents.runtime import engine_session, watchdog
    from nbagents.runtime.engine_session import EngineSession
    from nbagents.runtime.pool import shared_pool

    session = EngineSession()
    engine_session._shared = session
    shared_pool().start()
    shared_pool().zygote.wait_ready()
    options = {"config_file": str(TEST_CONFIG)} if engine_name == "livekit-server" else {}
    result: dict[str, Any] = {"engine": engine_name, "runs": runs}
    try:
        started = time.perf_counter()
        session.use_engine(make_engine(engine_name, **options))
        job = launch(connect_and_leave, room="bench-first")
        await _connected(job)
        result["first_start_to_connected_s"] = round(time.perf_counter() - started, 3)
        await job

        detect, kill = [], []
        timeout = 2.0
        for i in range(runs):
            job = launch(idle, room=f"bench-stop-{i}", shutdown_process_timeout=timeout)
            await _connected(job)
            os.kill(job.pid, signal.SIGSTOP)
            t = time.perf_counter()
            while not job.unresponsive:
                await asyncio.sleep(0.005)
            detect.append(time.perf_counter() - t)
            t = time.perf_counter()
            outcome = await job.stop(reason="bench")
            assert outcome.state == "killed", outcome
            kill.append(time.perf_counter() - t)
        result["unresponsive_detect_s"] = _median(detect)
        result["unresponsive_limit_s"] = watchdog.UNRESPONSIVE_AFTER_SECONDS
        result["stop_kill_s"] = _median(kill)
        result["stop_timeout_s"] = timeout

        restart = []
        for i in range(runs):
            engine = session.engine
            os.kill(engine.pid, signal.SIGKILL)
            while engine.exited() is None:
                await asyncio.sleep(0.005)
            t = time.perf_counter()
            job = launch(connect_and_leave, room=f"bench-restart-{i}")
            await _connected(job)
            restart.append(time.perf_counter() - t)
            await job
        result["restart_to_connected_s"] = _median(restart)

        jobs = [launch(idle, room=f"bench-idle-{i}", shutdown_process_timeout=5) for i in range(10)]
        await asyncio.gather(*(_connected(j) for j in jobs))
        await asyncio.sleep(1.0)
        kernel = psutil.Process()
        processes = [psutil.Process(j.pid) for j in jobs]

        def cpu(p: Any) -> float:
            times = p.cpu_times()
            return times.user + times.system

        k0, j0, t0 = cpu(kernel), [cpu(p) for p in processes], time.perf_counter()
        await asyncio.sleep(10.0)
        k1, j1, elapsed = cpu(kernel), [cpu(p) for p in processes], time.perf_counter() - t0
        result["kernel_cpu_pct_per_idle_job"] = round(100 * (k1 - k0) / elapsed / len(jobs), 3)
        result["job_cpu_pct_idle"] = round(100 * statistics.mean(b - a for a, b in zip(j0, j1)) / elapsed, 3)
        await asyncio.gather(*(j.stop(reason="bench over") for j in jobs))

        url, key, secret = session.credentials
        remote = RemoteEngine(url, key, secret)
        probes, lists = [], []
        for _ in range(max(runs, 20)):
            t = time.perf_counter()
            remote.probe()
            probes.append(time.perf_counter() - t)
            t = time.perf_counter()
            remote.start()
            lists.append(time.perf_counter() - t)
            remote.stop()
        result["remote_probe_ms"] = _median([p * 1000 for p in probes], 2)
        result["remote_list_rooms_ms"] = _median([p * 1000 for p in lists], 2)
    finally:
        session.stop()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--engine", action="append", choices=["embedded", "livekit-server"])
    args = parser.parse_args()
    if os.environ.get("NBAGENTS_NETNS") != "1":
        sys.exit("run inside the network namespace: scripts/netns .venv/bin/python bench/lifetime.py")
    results = [asyncio.run(measure(name, args.runs)) for name in args.engine or ["embedded", "livekit-server"]]
    print(json.dumps({"machine_load_1min": os.getloadavg()[0], "results": results}, indent=2))


if __name__ == "__main__":
    main()
