"""The kernel-side watchdog: a job without heartbeats is unresponsive, whatever the cause, and stop() kills it.

A stopped process (SIGSTOP) and native code holding the GIL stop every thread of the job process, so only
the kernel can see them; both must be reported and killed at ``shutdown_process_timeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time

from nbagents import JobContext, launch
from nbagents.runtime import events as ev

from waiting import WAIT, wait_until

from .conftest import wait_connected

TIMEOUT = 2.0


async def connect_and_wait(ctx: JobContext) -> None:
    async def never_finishes() -> str:  # a stopped process cannot run it
        return "ran"

    ctx.add_shutdown_callback(never_finishes)
    await ctx.connect()
    print("connected")
    await asyncio.Event().wait()


async def hold_the_gil_in_native_code(ctx: JobContext) -> None:
    import ctypes

    await ctx.connect()
    print("holding the GIL")
    await asyncio.sleep(0.2)  # let the print reach the kernel
    ctypes.PyDLL(None).sleep(3600)  # libc's sleep() through PyDLL, which keeps the GIL held


def warnings_of(job) -> list[str]:
    return [r.message for r in job.logs if r.level == "WARNING" and r.logger == "nbagents"]


async def stop_and_check_the_kill(job, what: str) -> None:
    asked = time.monotonic()
    result = await asyncio.wait_for(job.stop(reason=f"{what} job"), WAIT)
    ended = time.monotonic()
    assert result.state == "killed", result
    assert result.exit_code == -signal.SIGKILL
    assert "unresponsive (no heartbeat" in result.error
    assert f"shutdown_process_timeout ({TIMEOUT:g} s)" in result.error
    assert ended - asked >= TIMEOUT  # killed at the timeout, not before it
    outcomes = {c.name: c.status for c in result.callbacks}
    assert outcomes.get("never_finishes", "cut_off") == "cut_off"


async def test_a_stopped_job_is_unresponsive_and_stop_kills_it_at_the_timeout(server, room_name) -> None:
    job = launch(connect_and_wait, room=room_name, shutdown_process_timeout=TIMEOUT)
    await wait_connected(job)
    await wait_until(lambda: any(r.message == "connected" for r in job.logs), what="the job's print")
    assert not job.unresponsive
    os.kill(job.pid, signal.SIGSTOP)
    try:
        await wait_until(lambda: job.unresponsive, what="the stopped job to be reported unresponsive")
        health = [e for e in job.events if isinstance(e, ev.LoopHealth)]
        assert health and not health[-1].responsive
        assert any("is stopped (SIGSTOP" in w for w in warnings_of(job)), warnings_of(job)
        assert job.state == "running"
        await stop_and_check_the_kill(job, "a stopped")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(job.pid, signal.SIGCONT)


async def test_a_job_hung_in_native_code_holding_the_gil_is_unresponsive_and_killed(server, room_name) -> None:
    job = launch(hold_the_gil_in_native_code, room=room_name, shutdown_process_timeout=TIMEOUT)
    await wait_until(lambda: any(r.message == "holding the GIL" for r in job.logs) or job.done, what="the job's print")
    await wait_until(lambda: job.unresponsive, what="the hung job to be reported unresponsive")
    assert any("no heartbeat" in w and f"process {job.pid}" in w for w in warnings_of(job)), warnings_of(job)
    await stop_and_check_the_kill(job, "a hung")


async def test_a_job_that_continues_is_responsive_again(server, room_name) -> None:
    job = launch(connect_and_wait, room=room_name, shutdown_process_timeout=TIMEOUT)
    await wait_connected(job)
    os.kill(job.pid, signal.SIGSTOP)
    try:
        await wait_until(lambda: job.unresponsive, what="the stopped job to be reported unresponsive")
    finally:
        os.kill(job.pid, signal.SIGCONT)
    await wait_until(lambda: not job.unresponsive, what="the continued job to be responsive again")
    health = [e.responsive for e in job.events if isinstance(e, ev.LoopHealth)]
    assert health[-2:] == [False, True]
    result = await asyncio.wait_for(job.stop(reason="test over"), WAIT)
    assert result.state == "succeeded"  # a responsive job ends itself, hooks and all
