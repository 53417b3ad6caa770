"""Lifecycle paths beyond the documentation's examples: server gone, participant entrypoints, observing the model."""

from __future__ import annotations

import asyncio
import threading

from livekit import rtc

from nbagents import JobContext, launch
from nbagents.engines import make_engine
from nbagents.runtime import events as ev
from nbagents.runtime.engine_session import shared_engine

from waiting import WAIT, wait_until

from .conftest import wait_connected


async def hold_the_room(ctx: JobContext) -> None:
    async def server_gone(reason: str) -> str:
        return reason

    ctx.add_shutdown_callback(server_gone)
    await ctx.connect()


async def test_server_going_away_ends_the_job_and_runs_its_hooks(lk_server, room_name) -> None:
    engine = make_engine("embedded")  # a server of this test's own, so stopping it harms no other test
    credentials = await asyncio.to_thread(engine.start)
    try:
        shared_engine().use(credentials)
        job = launch(hold_the_room, room=room_name)
        await wait_connected(job)
    finally:
        await asyncio.to_thread(engine.stop)
    result = await asyncio.wait_for(job.wait(), WAIT * 2)
    assert result.state == "succeeded", result.error
    assert result.shutdown_reason == "room disconnected"
    assert result.persisted == {"server_gone": result.shutdown_reason}


async def greet_each(ctx: JobContext) -> None:
    greeted: list[str] = []

    async def greet(ctx: JobContext, participant: rtc.RemoteParticipant) -> None:
        greeted.append(participant.identity)
        await ctx.room.local_participant.publish_data(f"hi {participant.identity}", destination_identities=[participant.identity])
        if len(greeted) == 2:
            ctx.shutdown(reason="greeted both")

    async def who() -> list:
        return sorted(greeted)

    ctx.add_shutdown_callback(who)
    ctx.add_participant_entrypoint(greet)
    await ctx.connect()


async def test_participant_entrypoint_runs_for_present_and_later_participants(human, room_name) -> None:
    async with human(room_name, "ivan") as ivan:
        job = launch(greet_each, room=room_name)
        await wait_until(lambda: ivan.data, what="ivan's greeting")
        async with human(room_name, "judy") as judy:
            await wait_until(lambda: judy.data, what="judy's greeting")
            result = await job
    assert ivan.data[0][2] == b"hi ivan" and judy.data[0][2] == b"hi judy"
    assert result.persisted == {"who": ["ivan", "judy"]}


async def test_subscribers_see_every_event_on_the_launching_loop(human, room_name) -> None:
    seen: list[ev.Event] = []
    threads: set[int] = set()
    job = launch(hold_the_room, room=room_name)

    def on_event(j, event: ev.Event) -> None:
        assert j is job
        seen.append(event)
        threads.add(threading.get_ident())

    job.subscribe(on_event)
    async with human(room_name, "kim"):
        await wait_until(lambda: "kim" in job.participants, what="kim in the model")
        await job.stop(reason="observed")
    await wait_until(lambda: any(isinstance(e, ev.StateChanged) and e.state == "succeeded" for e in seen), what="final state")
    assert threads == {threading.get_ident()}  # the test's event loop thread, as the kernel's would be
    states = [e.state for e in seen if isinstance(e, ev.StateChanged)]
    assert states[-2:] == ["shutting_down", "succeeded"]
    assert any(isinstance(e, ev.ParticipantChanged) and e.change == "joined" and e.participant.identity == "kim" for e in seen)
    local = [p for p in job.participants.values() if p.local]
    assert [p.identity for p in local] == [f"agent-{job.id}"] and local[0].kind == "agent"
    assert list(job.events)[-1].state == "succeeded"
    assert job.connected is not None and job.connected.room_sid.startswith("RM_")
    assert job.engine_url == job.connected.url


async def shut_down_at_once(ctx: JobContext) -> None:
    async def mark() -> str:
        return "done"

    ctx.add_shutdown_callback(mark)
    await ctx.connect()
    ctx.shutdown(reason="sync caller")


def test_launch_from_plain_synchronous_code(server, room_name) -> None:
    job = launch(shut_down_at_once, room=room_name)
    result = job.result(timeout=WAIT)
    assert result.state == "succeeded" and result.persisted == {"mark": "done"}
    assert job in __import__("nbagents").jobs()


async def handler_that_raises(ctx: JobContext) -> None:
    @ctx.room.on("participant_connected")
    def on_participant_connected(participant: rtc.RemoteParticipant) -> None:
        raise KeyError(f"no profile for {participant.identity}")

    await ctx.connect()


async def test_an_exception_in_a_room_event_handler_is_reported_and_the_job_keeps_running(human, room_name) -> None:
    job = launch(handler_that_raises, room=room_name)
    await wait_connected(job)
    async with human(room_name, "lou"):
        await wait_until(lambda: job.errors, what="the handler's error")
        assert "KeyError: 'no profile for lou'" in job.errors[0].message
        assert "on_participant_connected" in job.errors[0].traceback
        assert job.state == "running"
        result = await job.stop()
    assert result.state == "succeeded"


async def speak_and_end_in_the_first_step(ctx: JobContext) -> None:
    print("first line")  # before any await: the job emits it while the kernel may not know the job runs yet
    ctx.shutdown(reason="at once")


async def test_the_kernel_hears_the_start_before_anything_the_first_step_emits(server, room_name) -> None:
    """The entrypoint's first step runs before the job tells the kernel it started; what that step makes the job
    emit (a print, the shutdown) still follows the start, in the job's event log as in the kernel."""
    job = launch(speak_and_end_in_the_first_step, room=room_name)
    result = await asyncio.wait_for(job.wait(), WAIT)
    assert result.state == "succeeded" and result.shutdown_reason == "at once"
    order = [type(e).__name__ + (f":{e.state}" if isinstance(e, ev.StateChanged) else "")
             for e in job.events if isinstance(e, (ev.StateChanged, ev.EntrypointStarted, ev.LogRecord))
             and (not isinstance(e, ev.LogRecord) or e.message == "first line")]
    assert order[:4] == ["StateChanged:running", "EntrypointStarted", "LogRecord", "StateChanged:shutting_down"], order
    on_disk = [line for line in (job.log_dir / "events.jsonl").read_text().splitlines()
               if '"running"' in line or "first line" in line]
    assert '"running"' in on_disk[0] and "first line" in on_disk[1], on_disk


async def test_a_first_step_that_blocks_the_loop_is_still_seen_running(server, room_name, tmp_path) -> None:
    """The job's watchdog thread tells the kernel the entrypoint started when its first step holds the loop."""
    release = tmp_path / "release"

    async def block_the_first_step(ctx: JobContext) -> None:
        import time

        while not release.exists():  # the loop is held before the entrypoint's first await
            time.sleep(0.01)
        ctx.shutdown(reason="released")

    job = launch(block_the_first_step, room=room_name)
    await wait_until(lambda: job.entrypoint_started is not None, what="the entrypoint's start, while it blocks")
    assert job.state == "running"
    release.touch()
    result = await asyncio.wait_for(job.wait(), WAIT)
    assert result.state == "succeeded" and result.shutdown_reason == "released"
