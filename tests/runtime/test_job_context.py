"""Jobs run under livekit-agents' own JobContext: the inputs that failed with nbagents' earlier look-alike
context (issue 9), each a test against both engines. (A whole example file pasted into ``%%agent`` is in
tests/test_magics.py.)

No ``from __future__ import annotations`` here: livekit-agents reads function-tool annotations at run
time, and code shipped by value keeps only the globals its code uses.
"""

import asyncio
import json
import os
import signal

import livekit.agents
from livekit import rtc
from livekit.agents import Agent, AgentSession, get_job_context, room_io

from nbagents import JobContext, JobProcess, launch
from nbagents.runtime import events as ev
from scripted_llm import EchoLLM
from waiting import WAIT, wait_until

from .conftest import wait_connected

AGENT_STATE = "lk.agent.state"


# 1. An AgentSession started without ctx.connect(): livekit-agents connects for it.


async def session_only(ctx: JobContext) -> None:
    session = AgentSession()
    await session.start(agent=Agent(instructions="hi"), room=ctx.room)


async def test_agent_session_without_connect_joins_the_room_and_sets_its_state(human, room_name) -> None:
    async with human(room_name, "alice") as alice:
        job = launch(session_only, room=room_name)
        agent_identity = f"agent-{job.id}"
        await wait_until(lambda: AGENT_STATE in _attributes(alice.room, agent_identity), what="the agent's lk.agent.state")
        assert _attributes(alice.room, agent_identity)[AGENT_STATE] in ("initializing", "listening", "idle")
        agent = alice.room.remote_participants[agent_identity]
        assert agent.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT
        result = await job.stop(reason="seen")
    assert result.state == "succeeded", result.error
    # livekit-agents closes the primary session itself first (AgentSession.aclose(): "user_initiated")
    assert [(e.session, e.reason) for e in job.events if isinstance(e, ev.SessionClosed)] == [(1, "user_initiated")]
    assert job.sessions[1].primary


def _attributes(room: rtc.Room, identity: str) -> dict[str, str]:
    participant = room.remote_participants.get(identity)
    return dict(participant.attributes) if participant is not None else {}


# 2. get_job_context() from code the entrypoint calls.


def describe_job() -> dict:
    ctx = get_job_context()
    return {"job": ctx.job.id, "room": ctx.room.name, "type": f"{type(ctx).__module__}.{type(ctx).__qualname__}"}


async def uses_get_job_context(ctx: JobContext) -> None:
    seen = describe_job()
    seen["same_object"] = get_job_context() is ctx

    async def from_a_hook() -> dict:
        return {**describe_job(), "same_object": get_job_context() is ctx}

    ctx.add_shutdown_callback(from_a_hook)
    await ctx.connect()
    await ctx.room.local_participant.publish_data(json.dumps(seen), topic="job")
    ctx.shutdown(reason="described")


async def test_get_job_context_returns_the_running_jobs_livekit_agents_context(human, room_name) -> None:
    async with human(room_name, "bob") as bob:
        job = launch(uses_get_job_context, room=room_name)
        result = await job
        await wait_until(lambda: bob.data, what="the description")
    expected = {"job": job.id, "room": room_name, "type": "livekit.agents.job.JobContext", "same_object": True}
    assert json.loads(bob.data[0][2]) == expected
    assert result.state == "succeeded", result.error
    assert result.persisted == {"from_a_hook": expected}


# 3. Two AgentSessions in one job, one per participant.


async def one_session_each(ctx: JobContext) -> None:
    await ctx.connect()
    sessions = []
    for identity in ("alice", "bob"):
        session = AgentSession(llm=EchoLLM())
        options = room_io.RoomOptions(participant_identity=identity, audio_output=False)
        await session.start(agent=Agent(instructions=f"talk to {identity}"), room=ctx.room, room_options=options)
        sessions.append(session)

    async def which_is_primary() -> list:
        return [ctx.primary_session is session for session in sessions]

    ctx.add_shutdown_callback(which_is_primary)
    for identity, session in zip(("alice", "bob"), sessions):
        await session.generate_reply(user_input=f"I am {identity}")
    ctx.shutdown(reason="both answered")


async def test_two_agent_sessions_run_and_the_first_is_primary(human, room_name) -> None:
    async with human(room_name, "alice"), human(room_name, "bob"):
        job = launch(one_session_each, room=room_name, shutdown_process_timeout=30)
        result = await job
    assert result.state == "succeeded", result.error
    assert not job.errors, job.errors
    assert result.persisted == {"which_is_primary": [True, False]}
    assert {n: s.primary for n, s in job.sessions.items()} == {1: True, 2: False}
    assert [t["text"] for t in result.transcript] == ["I am alice", "You said: I am alice", "I am bob", "You said: I am bob"]
    closed = sorted((e.session, e.reason) for e in job.events if isinstance(e, ev.SessionClosed))
    assert closed == [(1, "user_initiated"), (2, "job_shutdown")]  # the primary first, by aclose(); the other by its callback


# 4. ctx.wait_for_participant() before ctx.connect(): it connects first.


async def wait_without_connecting(ctx: JobContext) -> None:
    participant = await ctx.wait_for_participant()
    await ctx.room.local_participant.publish_data(f"found {participant.identity}")
    ctx.shutdown(reason=f"found {participant.identity}")


async def test_wait_for_participant_connects_first(human, room_name) -> None:
    job = launch(wait_without_connecting, room=room_name)
    async with human(room_name, "carol") as carol:
        result = await asyncio.wait_for(job.wait(), WAIT)
        await wait_until(lambda: carol.data, what="carol to hear from the agent")
    assert carol.data[0][2] == b"found carol"
    assert result.state == "succeeded" and result.shutdown_reason == "found carol"


# 6. The job sees the kernel's environment as it is at launch (not when the process was forked).


async def read_the_environment(ctx: JobContext) -> None:
    async def environment() -> dict:
        return {name: os.environ.get(name) for name in ("NBAGENTS_TEST_SET_LATE", "NBAGENTS_NETNS")}

    ctx.add_shutdown_callback(environment)
    ctx.shutdown(reason="read")


def prewarm_reads_the_environment(proc: JobProcess) -> None:
    proc.userdata["seen"] = os.environ.get("NBAGENTS_TEST_SET_LATE")


async def report_prewarm(ctx: JobContext) -> None:
    async def prewarmed() -> object:
        return ctx.proc.userdata["seen"]

    ctx.add_shutdown_callback(prewarmed)
    ctx.shutdown(reason="read")


async def test_jobs_see_the_environment_at_launch(server, room_name, monkeypatch) -> None:
    from nbagents.runtime.pool import shared_pool

    shared_pool().start()
    await asyncio.to_thread(shared_pool().zygote.wait_ready)  # the job processes' zygote exists before the change
    assert os.environ["NBAGENTS_NETNS"] == "1"  # set by scripts/netns: in the zygote's environment too
    monkeypatch.setenv("NBAGENTS_TEST_SET_LATE", "1")
    monkeypatch.delenv("NBAGENTS_NETNS")
    result = await launch(read_the_environment, room=room_name)
    assert result.persisted == {"environment": {"NBAGENTS_TEST_SET_LATE": "1", "NBAGENTS_NETNS": None}}
    first = await launch(report_prewarm, room=room_name, prewarm=prewarm_reads_the_environment)
    monkeypatch.setenv("NBAGENTS_TEST_SET_LATE", "2")
    second = await launch(report_prewarm, room=room_name, prewarm=prewarm_reads_the_environment)
    assert (first.persisted, second.persisted) == ({"prewarmed": "1"}, {"prewarmed": "2"})


async def import_late_added_module(ctx: JobContext) -> None:
    import late_added_module  # noqa: F401  (found only through the entry the notebook added to sys.path)

    async def where() -> str:
        return late_added_module.__file__

    ctx.add_shutdown_callback(where)
    ctx.shutdown(reason="imported")


async def test_jobs_import_modules_from_the_kernels_sys_path_at_launch(server, room_name, tmp_path, monkeypatch) -> None:
    """A notebook appends a directory to sys.path after the job processes were preloaded; code in the job that
    imports a module from there finds it."""
    from nbagents.runtime.pool import shared_pool

    shared_pool().start()
    await asyncio.to_thread(shared_pool().zygote.wait_ready)  # the job processes' zygote exists before the change
    (tmp_path / "late_added_module.py").write_text("VALUE = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    result = await launch(import_late_added_module, room=room_name)
    assert result.state == "succeeded", result.error
    assert result.persisted == {"where": str(tmp_path / "late_added_module.py")}


# 7. ctx.job.metadata from launch(metadata=...); ctx.room.name before the entrypoint connects.


async def report_job(ctx: JobContext) -> None:
    before = {"room": ctx.room.name, "metadata": ctx.job.metadata, "job_room": ctx.job.room.name, "id": ctx.job.id}

    async def job_fields() -> dict:
        return before

    ctx.add_shutdown_callback(job_fields)
    ctx.shutdown(reason="reported")


async def test_metadata_and_room_name_are_known_before_connecting(server, room_name) -> None:
    metadata = json.dumps({"customer": "ann", "tier": 2})
    job = launch(report_job, room=room_name, metadata=metadata)
    result = await job
    assert result.persisted == {"job_fields": {"room": room_name, "metadata": metadata, "job_room": room_name, "id": job.id}}


def test_metadata_must_be_text() -> None:
    try:
        launch(report_job, room="r", metadata={"customer": "ann"})  # type: ignore[arg-type]
    except TypeError as exc:
        assert "metadata must be a string" in str(exc) and "json.dumps" in str(exc)
    else:
        raise AssertionError("launch accepted a dict as metadata")


# 8. Signals: SIGINT is ignored; SIGTERM is a normal shutdown (hooks run, the timeout holds).


async def keep_running(ctx: JobContext) -> None:
    async def on_the_way_out(reason: str) -> str:
        return reason

    ctx.add_shutdown_callback(on_the_way_out)
    await ctx.connect()


async def test_sigint_is_ignored_and_sigterm_shuts_down_with_hooks(human, room_name) -> None:
    job = launch(keep_running, room=room_name)
    await wait_connected(job)
    os.kill(job.pid, signal.SIGINT)
    async with human(room_name, "dave"):
        await wait_until(lambda: "dave" in job.participants, what="the job, after SIGINT, to still see dave join")
    assert not job.done
    os.kill(job.pid, signal.SIGTERM)
    result = await asyncio.wait_for(job.wait(), WAIT)
    assert result.state == "succeeded", result.error
    assert result.shutdown_reason == "SIGTERM" and result.persisted == {"on_the_way_out": "SIGTERM"}


async def hang_in_a_hook(ctx: JobContext) -> None:
    async def never_ends() -> None:
        await asyncio.Event().wait()

    ctx.add_shutdown_callback(never_ends)
    await ctx.connect()


async def test_sigterm_keeps_the_shutdown_timeout(server, room_name) -> None:
    job = launch(hang_in_a_hook, room=room_name, shutdown_process_timeout=2)
    await wait_connected(job)
    os.kill(job.pid, signal.SIGTERM)
    result = await asyncio.wait_for(job.wait(), WAIT)
    assert result.state == "killed" and "shutdown_process_timeout (2 s) exceeded" in result.error
    assert [(c.name, c.status) for c in result.callbacks] == [("never_ends", "cut_off")]


def test_the_context_class_is_livekit_agents_own() -> None:
    import nbagents

    assert nbagents.JobContext is livekit.agents.JobContext
