"""Job runtime benchmark: nbagents vs livekit-agents 1.8 running the same entrypoint on the same server.

Run inside the network namespace:  scripts/netns .venv/bin/python bench/jobs.py [--runs N]

Prints one JSON document: launch latency (call -> first line of the entrypoint) for the very first job
in a fresh kernel, for a process without a warm one, and from the warm pool; ``ctx.connect()`` latency;
RSS/PSS/USS per job process; ``ctx.shutdown()`` -> process exit; the same for livekit-agents (PROCESS
executor via ``AgentServer`` + ``simulate_job``, idle pool 0 and 1), and the ratios nbagents / livekit-agents.
Both sides use CLOCK_MONOTONIC (``time.perf_counter``), which is shared by all processes on Linux.

Both run the entrypoint under livekit-agents' own ``JobContext``, with livekit-agents loaded in the job
process (nbagents preloads it in its zygote, livekit-agents in its forkserver), both without the local
inference models (``LIVEKIT_AGENTS_PRELOAD_LOCAL_INFERENCE=0``, nbagents' default). The targets: nbagents no
slower than livekit-agents on each launch path and on shutdown -> exit, and its job processes no larger (PSS).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH_DIR_ENV = "NBAGENTS_BENCH_DIR"
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


async def entrypoint(ctx: Any) -> None:
    """The measured entrypoint (the same for both frameworks); reports through files in BENCH_DIR."""
    first = time.perf_counter()
    out = Path(os.environ[BENCH_DIR_ENV])
    name = ctx.job.room.name
    before = time.perf_counter()
    await ctx.connect()
    connect_s = time.perf_counter() - before
    (out / f"{name}.json").write_text(json.dumps({"first": first, "connect_s": connect_s, "pid": os.getpid()}))
    stop = out / f"{name}.stop"
    while not stop.exists():
        await asyncio.sleep(0.005)
    (out / f"{name}.shutdown").write_text(repr(time.perf_counter()))
    ctx.shutdown(reason="benchmark")


# ---- measuring one job -------------------------------------------------------------------------------


async def _wait_file(path: Path, timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        try:
            text = path.read_text()
            if text:
                return text
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {path.name} after {timeout} s")
        await asyncio.sleep(0.002)


def _gone(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


async def measure_job(out: Path, room: str, launched_at: float) -> dict[str, float]:
    """Follow a launched job through the files its entrypoint writes; stop it; time its exit."""
    import psutil

    report = json.loads(await _wait_file(out / f"{room}.json"))
    pid = report["pid"]
    await asyncio.sleep(0.3)  # let the connection settle before reading memory
    memory = psutil.Process(pid).memory_full_info()
    (out / f"{room}.stop").write_text("stop")
    shutdown_at = float(await _wait_file(out / f"{room}.shutdown"))
    while not _gone(pid):
        await asyncio.sleep(0.0005)
    exited_at = time.perf_counter()
    return {
        "launch_ms": (report["first"] - launched_at) * 1000,
        "connect_ms": report["connect_s"] * 1000,
        "rss_mb": memory.rss / 2**20,
        "pss_mb": memory.pss / 2**20,
        "uss_mb": memory.uss / 2**20,
        "shutdown_to_exit_ms": (exited_at - shutdown_at) * 1000,
    }


def _uid() -> str:
    """Rooms (and their report files) are unique across rounds."""
    return os.urandom(3).hex()


def summarize(samples: list[dict[str, float]]) -> dict[str, Any]:
    keys = samples[0].keys() if samples else []
    summary: dict[str, Any] = {"n": len(samples)}
    for key in keys:
        values = sorted(s[key] for s in samples)
        summary[key] = {"p50": round(statistics.median(values), 2), "min": round(values[0], 2), "max": round(values[-1], 2)}
    return summary


# ---- nbagents ------------------------------------------------------------------------------------------


async def bench_nbagents(out: Path, runs: int, *, raw: bool = False) -> dict[str, Any]:
    os.environ["NBAGENTS_IDLE_PROCESSES"] = "0"
    from nbagents import launch
    from nbagents.runtime.pool import shared_pool

    pool = shared_pool()
    pool.num_idle = 0
    pool.start()
    pool.zygote.wait_ready()
    while (idle := pool.acquire(None)) is not None:  # a warm process left from an earlier round
        idle.retire()
    this = sys.modules[__name__]
    cold = []
    for i in range(runs):
        room = f"nb-cold-{i}-{_uid()}"
        t = time.perf_counter()
        job = launch(this.entrypoint, room=room)
        cold.append(await measure_job(out, room, t))
        await job
    pool.num_idle = 1
    pool.refill()
    warm = []
    for i in range(runs):
        while pool.acquire_peek() < 1:
            await asyncio.sleep(0.01)
        room = f"nb-warm-{i}-{_uid()}"
        t = time.perf_counter()
        job = launch(this.entrypoint, room=room)
        sample = await measure_job(out, room, t)
        await job
        assert job.entrypoint_started is not None and job.entrypoint_started.warm
        warm.append(sample)
    pool.num_idle = 0
    if raw:
        return {"no_warm_process": cold, "warm_pool": warm}
    return {"no_warm_process": summarize(cold), "warm_pool": summarize(warm)}


FRESH_KERNEL = """
import asyncio, sys, time, json
t0 = time.perf_counter()
sys.path.insert(0, {here!r})
import nbagents
import jobs
from nbagents.runtime.engine_session import shared_engine
from nbagents.runtime.engine_session import Credentials
t_import = time.perf_counter()

async def main():
    if {creds!r}:
        shared_engine().use(Credentials(*{creds!r}))
    t = time.perf_counter()
    job = nbagents.launch(jobs.entrypoint, room={room!r})
    sample = await jobs.measure_job(jobs.Path({out!r}), {room!r}, t)
    sample["import_ms"] = (t_import - t0) * 1000
    sample["import_and_launch_ms"] = sample["launch_ms"] + sample["import_ms"]
    await job
    print(json.dumps(sample))

asyncio.run(main())
"""


def bench_nbagents_fresh_kernel(out: Path, creds: tuple[str, str, str] | None, runs: int, *,
                                summary: bool = True) -> Any:
    """The very first job of a fresh interpreter: zygote start + fork; with ``creds`` None the kernel
    also starts its own embedded engine at the same time (both compete for the CPU)."""
    samples = []
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVEKIT_")}
    env["NBAGENTS_ENGINE"] = "embedded"
    for i in range(runs):
        room = f"nb-first-{i}-{'engine' if creds is None else 'shared'}-{_uid()}"
        code = FRESH_KERNEL.format(here=str(HERE), creds=tuple(creds) if creds else (), room=room, out=str(out))
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr[-2000:])
        samples.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return summarize(samples) if summary else samples


# ---- livekit-agents ------------------------------------------------------------------------------------


async def bench_livekit_agents(out: Path, runs: int, idle: int, raw: bool = False) -> dict[str, Any]:
    from livekit.agents import AgentServer, JobExecutorType, WorkerOptions
    from livekit.protocol import models

    import jobs  # by reference: livekit-agents' processes import it (bench/ is on PYTHONPATH)

    options = WorkerOptions(
        entrypoint_fnc=jobs.entrypoint,
        job_executor_type=JobExecutorType.PROCESS,
        num_idle_processes=idle,
        shutdown_process_timeout=60.0,
        port=0,
    )
    server = AgentServer.from_server_options(options)
    started = asyncio.Event()
    server.once("worker_started", lambda *_: started.set())
    run_task = asyncio.ensure_future(server.run(devmode=True, unregistered=True))
    await asyncio.wait_for(started.wait(), 120)
    samples = []
    for i in range(runs + 1):  # the first job (forkserver start when idle == 0) is reported separately
        if idle:
            while server._proc_pool._warmed_proc_queue.qsize() < 1:
                await asyncio.sleep(0.01)
        room = f"lk-idle{idle}-{i}-{_uid()}"
        t = time.perf_counter()
        await server.simulate_job(room, fake_job=False, agent_identity=f"agent-{room}", room_info=models.Room(name=room, sid=f"RM_{room}"))
        samples.append(await measure_job(out, room, t))
    await server.aclose()
    run_task.cancel()
    return {"first_job": samples[0], "steady": samples[1:] if raw else summarize(samples[1:])}


def run_livekit_agents(out: Path, runs: int, idle: int, *, raw: bool = False) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))
    env.setdefault("LIVEKIT_AGENTS_PRELOAD_LOCAL_INFERENCE", "0")
    proc = subprocess.run(
        [sys.executable, str(HERE / "jobs.py"), "--livekit-agents-worker", str(idle), "--runs", str(runs), "--out", str(out)]
        + (["--raw"] if raw else []),
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=600,
    )
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---- main ----------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--livekit-agents-worker", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--raw", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if os.environ.get("NBAGENTS_NETNS") != "1":
        print("run inside the network namespace: scripts/netns .venv/bin/python bench/jobs.py", file=sys.stderr)
        return 2
    if args.livekit_agents_worker is not None:
        os.environ[BENCH_DIR_ENV] = args.out
        import logging

        logging.basicConfig(level=logging.WARNING)
        print(json.dumps(asyncio.run(bench_livekit_agents(Path(args.out), args.runs, args.livekit_agents_worker, args.raw))))
        return 0

    from nbagents.engines import make_engine
    from nbagents.runtime.engine_session import shared_engine

    # This process plays the notebook kernel. A kernel whose cells say `from nbagents import JobContext` (or
    # use an AgentSession) has imported livekit-agents, as livekit-agents' worker process has: PSS splits
    # the library pages a job shares among every process that maps them, so both sides get the same parent
    # (and, as in such a notebook, the kernel signs the job's token: tokens.token_at_launch). USS, the job's
    # private memory, does not depend on the parent.
    from nbagents import JobContext  # noqa: F401

    out = Path(tempfile.mkdtemp(prefix="nbagents-bench-"))
    os.environ[BENCH_DIR_ENV] = str(out)
    os.environ.setdefault("LIVEKIT_AGENTS_PRELOAD_LOCAL_INFERENCE", "0")
    engine = make_engine("embedded")
    url, key, secret = engine.start()
    os.environ.update(LIVEKIT_URL=url, LIVEKIT_API_KEY=key, LIVEKIT_API_SECRET=secret)
    try:
        shared_engine().use((url, key, secret))
        # On a shared machine the load drifts: each comparison interleaves the two frameworks, round by round
        rounds = max(3, args.runs // 2)
        firsts, lk_firsts = [], []
        for _ in range(rounds):  # the very first job: a fresh interpreter each, nbagents' kernel or livekit-agents' worker
            firsts.append(bench_nbagents_fresh_kernel(out, (url, key, secret), 1, summary=False)[0])
            lk_firsts.append(run_livekit_agents(out, 1, 0)["first_job"])
        first, lk_first = summarize(firsts), summarize(lk_firsts)
        first_with_engine = bench_nbagents_fresh_kernel(out, None, rounds)
        nb_rounds, lk0_rounds, lk1_rounds = [], [], []
        for _ in range(2):
            nb_rounds.append(asyncio.run(bench_nbagents(out, args.runs, raw=True)))
            lk0_rounds.append(run_livekit_agents(out, args.runs, 0, raw=True))
            lk1_rounds.append(run_livekit_agents(out, args.runs, 1, raw=True))
        nb = {key: summarize([s for r in nb_rounds for s in r[key]]) for key in ("no_warm_process", "warm_pool")}
        lk0 = {"steady": summarize([s for r in lk0_rounds for s in r["steady"]])}
        lk1 = {"steady": summarize([s for r in lk1_rounds for s in r["steady"]])}
    finally:
        engine.stop()

    def ratio(a: float, b: float) -> float:
        return round(a / b, 3) if b else float("nan")

    p50 = lambda summary, key: summary[key]["p50"]  # noqa: E731
    result = {
        "engine": "embedded",
        "runs": args.runs,
        "note": "first jobs: one fresh nbagents kernel and one fresh livekit-agents worker per round, interleaved; "
                "no-warm and warm launches: two rounds of each framework, interleaved, samples pooled",
        "nbagents": {"first_job_fresh_kernel": first, "first_job_fresh_kernel_starting_its_engine": first_with_engine, **nb},
        "livekit_agents_1_8": {
            "first_job_fresh_worker": lk_first,
            "idle_0_forkserver": lk0["steady"],
            "idle_1_warm_pool": lk1["steady"],
        },
        "ratios_nbagents_over_livekit_agents": {
            "warm_launch": ratio(p50(nb["warm_pool"], "launch_ms"), p50(lk1["steady"], "launch_ms")),
            "launch_without_warm_process": ratio(p50(nb["no_warm_process"], "launch_ms"), p50(lk0["steady"], "launch_ms")),
            "first_job": ratio(p50(first, "launch_ms"), p50(lk_first, "launch_ms")),
            "connect": ratio(p50(nb["warm_pool"], "connect_ms"), p50(lk1["steady"], "connect_ms")),
            "job_pss": ratio(p50(nb["warm_pool"], "pss_mb"), p50(lk1["steady"], "pss_mb")),
            "job_rss": ratio(p50(nb["warm_pool"], "rss_mb"), p50(lk1["steady"], "rss_mb")),
            "job_uss": ratio(p50(nb["warm_pool"], "uss_mb"), p50(lk1["steady"], "uss_mb")),
            "shutdown_to_exit": ratio(p50(nb["warm_pool"], "shutdown_to_exit_ms"), p50(lk1["steady"], "shutdown_to_exit_ms")),
        },
        "targets": {
            "warm_launch_no_slower_than_livekit_agents": p50(nb["warm_pool"], "launch_ms") <= p50(lk1["steady"], "launch_ms"),
            "launch_without_warm_process_no_slower": p50(nb["no_warm_process"], "launch_ms") <= p50(lk0["steady"], "launch_ms"),
            "first_job_fresh_kernel_no_slower": p50(first, "launch_ms") <= p50(lk_first, "launch_ms"),
            "shutdown_to_exit_no_slower": p50(nb["warm_pool"], "shutdown_to_exit_ms") <= p50(lk1["steady"], "shutdown_to_exit_ms"),
            "job_pss_no_larger": p50(nb["warm_pool"], "pss_mb") <= p50(lk1["steady"], "pss_mb"),
        },
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
