"""Faults: each ends the job with a clear state and message, and never hurts the kernel or other jobs."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from nbagents import JobContext, ShippingError, launch
from nbagents.runtime import events as ev
from nbagents.runtime.persist import read_event_log

from waiting import WAIT, wait_until

from .conftest import wait_connected


async def raise_after_connect(ctx: JobContext) -> None:
    async def still_runs(reason: str) -> dict:
        return {"reason": reason}

    ctx.add_shutdown_callback(still_runs)
    await ctx.connect()
    raise ValueError("the entrypoint broke")


async def test_entrypoint_exception_fails_the_job_but_hooks_run(server, room_name) -> None:
    job = launch(raise_after_connect, room=room_name)
    result = await job
    assert result.state == "failed"
    assert "ValueError: the entrypoint broke" in result.error
    assert "raise_after_connect" in result.error  # a real traceback, naming the function
    assert result.persisted == {"still_runs": {"reason": "job crashed"}}  # livekit-agents' reason for this path
    assert [e.where for e in job.errors] == ["entrypoint"]


async def block_the_loop(ctx: JobContext) -> None:
    await ctx.connect()
    time.sleep(3600)  # a synchronous call inside async code: the event loop stops


async def test_blocked_event_loop_is_reported_and_killed_on_stop(server, room_name) -> None:
    job = launch(block_the_loop, room=room_name, shutdown_process_timeout=30)
    await wait_until(lambda: job.unresponsive, what="the job to be reported unresponsive")
    assert any(isinstance(e, ev.LoopHealth) and not e.responsive for e in job.events)
    from nbagents.magics import JobTable

    assert f"{job.id}  {room_name}  running (unresponsive)" in repr(JobTable([job]))  # what %agent list shows
    result = await asyncio.wait_for(job.stop(reason="it hangs"), WAIT)
    assert result.state == "killed"
    assert "event loop was blocked" in result.error
    assert result.shutdown_reason == "it hangs"  # the loop never took the request; its reason is still the job's


async def slow_and_fast_hooks(ctx: JobContext) -> None:
    async def fast() -> dict:
        return {"saved": True}

    async def slow() -> dict:
        await asyncio.sleep(3600)
        return {"never": True}

    def sync_hook(reason: str) -> str:  # sync callbacks with the reason work too
        return f"sync saw {reason}"

    ctx.add_shutdown_callback(fast)
    ctx.add_shutdown_callback(slow)
    ctx.add_shutdown_callback(sync_hook)
    await ctx.connect()
    ctx.shutdown(reason="done")


async def test_hook_past_the_timeout_is_cut_off_and_the_process_killed_in_time(server, room_name) -> None:
    timeout = 2.0
    job = launch(slow_and_fast_hooks, room=room_name, shutdown_process_timeout=timeout)
    result = await asyncio.wait_for(job.wait(), WAIT)
    assert result.state == "killed"
    assert result.persisted == {"fast": {"saved": True}, "sync_hook": "sync saw done"}
    outcomes = {c.name: c for c in result.callbacks}
    assert outcomes["slow"].status == "cut_off"
    assert "asyncio.sleep(3600)" in outcomes["slow"].error  # where it was stuck
    started = next(e for e in job.events if isinstance(e, ev.ShutdownStarted))
    shutdown_began = started.deadline - timeout  # the job process sets its deadline when shutdown begins
    assert shutdown_began <= started.time
    assert timeout <= outcomes["slow"].ended - shutdown_began <= timeout + 1.0
    assert job.ended_at is not None and job.ended_at - shutdown_began <= timeout + 1.0  # the process is gone
    assert json.loads((job.log_dir / "result.json").read_text())["persisted"] == result.persisted


async def wait_forever(ctx: JobContext) -> None:
    async def never_reached() -> str:
        return "ran"

    ctx.add_shutdown_callback(never_reached)
    await ctx.connect()
    print("connected and waiting")


async def test_sigkilled_job_is_crashed_and_its_files_survive(server, room_name) -> None:
    job = launch(wait_forever, room=room_name)
    await wait_connected(job)
    await wait_until(lambda: any(r.message == "connected and waiting" for r in job.logs), what="the print")
    os.kill(job.pid, signal.SIGKILL)
    result = await asyncio.wait_for(job.wait(), WAIT)
    assert result.state == "crashed"
    assert "SIGKILL" in result.error
    assert result.exit_code == -signal.SIGKILL
    records = read_event_log(job.log_dir / "events.jsonl")
    assert "room_connected" in [r["kind"] for r in records]
    assert any(r.get("message") == "connected and waiting" for r in records)
    on_disk = json.loads((job.log_dir / "result.json").read_text())
    assert on_disk["state"] == "running" and on_disk["job_id"] == job.id


async def connect_and_maybe_die(ctx: JobContext) -> None:
    await ctx.connect()

    async def alive() -> str:
        return ctx.job.id

    ctx.add_shutdown_callback(alive)
    if ctx.job.room.name.endswith("-3"):
        os._exit(3)  # a hard crash in one job


async def test_ten_concurrent_jobs_one_crashes_the_others_are_fine(server, room_name) -> None:
    jobs = [launch(connect_and_maybe_die, room=f"{room_name}-{i}", shutdown_process_timeout=20) for i in range(10)]
    await asyncio.wait_for(jobs[3].wait(), WAIT * 2)
    for i, job in enumerate(jobs):
        if i != 3:
            await asyncio.wait_for(wait_connected(job), WAIT * 2)
    assert jobs[3].state == "crashed" and "exit code 3" in jobs[3].result(0).error
    results = await asyncio.wait_for(asyncio.gather(*(j.stop("test over") for i, j in enumerate(jobs) if i != 3)), WAIT * 2)
    assert [r.state for r in results] == ["succeeded"] * 9
    assert [r.persisted for r in results] == [{"alive": j.id} for i, j in enumerate(jobs) if i != 3]
    assert len({j.pid for j in jobs}) == 10


DATABASE_LOCK = threading.Lock()


async def uses_a_lock(ctx: JobContext) -> None:
    with DATABASE_LOCK:
        await ctx.connect()


def test_unshippable_global_is_named() -> None:
    with pytest.raises(ShippingError) as info:
        launch(uses_a_lock, room="never-launched")
    message = str(info.value)
    assert "'DATABASE_LOCK'" in message and "uses_a_lock" in message and "lock" in message


async def test_unshippable_entrypoint_on_a_warm_process_leaves_nothing_behind(server, room_name, tmp_path) -> None:
    """A warm process hears of its job before the entrypoint is shipped: when shipping fails, launch() still
    raises, no job is listed, no directory is left, and that process exits (the pool refills)."""
    import psutil

    from nbagents import jobs
    from nbagents.runtime.pool import shared_pool

    pool = shared_pool()
    pool.start()
    await wait_until(lambda: pool.idle_pids(), what="an idle process")
    idle = set(pool.idle_pids())
    listed = list(jobs())
    with pytest.raises(ShippingError) as info:
        launch(uses_a_lock, room=room_name, jobs_dir=tmp_path / "jobs")
    assert "'DATABASE_LOCK'" in str(info.value) and "uses_a_lock" in str(info.value)
    assert jobs() == listed
    assert not (tmp_path / "jobs").exists()  # nor the jobs directory the launch created for it
    taken = idle - set(pool.idle_pids())
    assert len(taken) == 1
    assert not psutil.pid_exists(taken.pop())  # exited, and reaped by the zygote
    # the pool refills, and the next launch takes a warm process as before
    await wait_until(lambda: pool.idle_pids(), what="an idle process again")
    job = launch(shuts_down_at_once, room=room_name, jobs_dir=tmp_path / "jobs")
    result = await asyncio.wait_for(job, WAIT)
    assert result.state == "succeeded" and job.entrypoint_started is not None and job.entrypoint_started.warm
    assert [p.name for p in (tmp_path / "jobs").iterdir()] == [job.id]


async def shuts_down_at_once(ctx: JobContext) -> None:
    ctx.shutdown(reason="done")


def test_bad_arguments_get_clear_errors() -> None:
    def not_async(ctx):  # noqa: ANN001
        pass

    with pytest.raises(TypeError, match="must be an async function"):
        launch(not_async)
    with pytest.raises(ValueError, match="shutdown_process_timeout"):
        launch(wait_forever, shutdown_process_timeout=0)
    with pytest.raises(ValueError, match="room"):
        launch(wait_forever, room="")


KERNEL_SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    from nbagents import launch
    from nbagents.runtime.engine_session import shared_engine

    async def entrypoint(ctx):
        async def on_kernel_gone(reason):
            return reason
        ctx.add_shutdown_callback(on_kernel_gone)
        await ctx.connect()
        print("connected")

    async def main():
        shared_engine().use((sys.argv[1], sys.argv[2], sys.argv[3]))
        job = launch(entrypoint, room=sys.argv[4], jobs_dir=sys.argv[5])
        while job.connected is None:
            await asyncio.sleep(0.02)
        print(job.log_dir, flush=True)
        await asyncio.sleep(3600)

    asyncio.run(main())
    """
)


async def test_kernel_death_runs_the_jobs_shutdown_callbacks(server, room_name, tmp_path: Path) -> None:
    kernel = subprocess.Popen(
        [sys.executable, "-c", KERNEL_SCRIPT, server.url, server.api_key, server.api_secret, room_name, str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        line = await asyncio.wait_for(asyncio.to_thread(kernel.stdout.readline), WAIT)
        log_dir = Path(line.strip())
        os.killpg(kernel.pid, signal.SIGKILL)  # as a kernel restart does: the whole process group
        result_file = log_dir / "result.json"

        def final() -> dict | None:
            try:
                data = json.loads(result_file.read_text())
            except (OSError, ValueError):
                return None
            return data if data["state"] in ("succeeded", "failed", "killed") else None

        await wait_until(final, what="the orphaned job to finish its shutdown")
        data = final()
        assert data["state"] == "succeeded"
        assert data["shutdown_reason"] == "the notebook kernel exited"
        assert data["persisted"] == {"on_kernel_gone": "the notebook kernel exited"}
    finally:
        kernel.kill()
        kernel.wait()


def broken_prewarm(proc) -> None:  # noqa: ANN001
    raise RuntimeError("model file missing")


async def test_prewarm_exception_fails_the_job_with_its_traceback(server, room_name) -> None:
    result = await asyncio.wait_for(launch(wait_forever, room=room_name, prewarm=broken_prewarm).wait(), WAIT)
    assert result.state == "failed"
    assert "prewarm raised" in result.error and "RuntimeError: model file missing" in result.error
    assert "broken_prewarm" in result.error


def test_unwritable_jobs_directory_is_reported_before_launching(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    with pytest.raises(OSError, match="cannot create the job's directory .*jobs_dir"):
        launch(wait_forever, room="never-launched", jobs_dir=blocker / "jobs")
