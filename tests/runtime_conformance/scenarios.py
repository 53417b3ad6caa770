"""The entrypoints of the runtime conformance suite: each runs unchanged as an nbagents job and as a job of a
real livekit-agents 1.8 worker. Which scenario a job runs comes from its metadata (``launch(metadata=...)``
for nbagents, the dispatch's metadata for livekit-agents), so one worker serves them all.

What an entrypoint observes that a participant cannot see (what a shutdown callback got, what the job
context said) it appends to ``$NBAGENTS_CONFORMANCE_DIR/<room>.jsonl``, the same way under both.

(No ``from __future__ import annotations``: livekit-agents reads function annotations at run time.)
"""

import asyncio
import json
import os
from pathlib import Path

from livekit import rtc
from livekit.agents import Agent, AgentSession, JobContext, get_job_context, room_io

from scripted_llm import EchoLLM

REPORT_DIR_ENV = "NBAGENTS_CONFORMANCE_DIR"


def report(key, value) -> None:
    """Append one observation of the running job to its room's report file."""
    ctx = get_job_context()
    path = Path(os.environ[REPORT_DIR_ENV]) / f"{ctx.job.room.name}.jsonl"
    with path.open("a") as out:
        out.write(json.dumps({"key": key, "value": value}) + "\n")


def report_reason_at_shutdown(ctx: JobContext) -> None:
    async def shutdown_reason(reason: str) -> None:
        report("shutdown callback", reason)

    ctx.add_shutdown_callback(shutdown_reason)


async def entrypoint(ctx: JobContext) -> None:
    report("pid", os.getpid())  # the harness waits for this process to exit: the job's end
    report("job id", ctx.job.id)  # each framework's job has its own: the harness writes it <job>
    scenario = json.loads(ctx.job.metadata)["scenario"]
    await SCENARIOS[scenario](ctx)


# ---- AgentSession -----------------------------------------------------------------------------------------


def _session() -> AgentSession:
    return AgentSession(llm=EchoLLM())


def _text_only() -> room_io.RoomOptions:
    return room_io.RoomOptions(audio_output=False)


async def session_without_connect(ctx: JobContext) -> None:
    report_reason_at_shutdown(ctx)
    await _session().start(agent=Agent(instructions="echo"), room=ctx.room, room_options=_text_only())


async def session_after_connect(ctx: JobContext) -> None:
    report_reason_at_shutdown(ctx)
    await ctx.connect()
    await _session().start(agent=Agent(instructions="echo"), room=ctx.room, room_options=_text_only())


async def two_sessions(ctx: JobContext) -> None:
    await ctx.connect()  # livekit-agents needs the room connected to link a session to a given participant
    sessions = []
    for identity in ("alice", "bob"):
        session = _session()
        options = room_io.RoomOptions(participant_identity=identity, audio_output=False)
        await session.start(agent=Agent(instructions=f"echo {identity}"), room=ctx.room, room_options=options)
        sessions.append(session)

    async def primary() -> None:
        report("primary", [ctx.primary_session is session for session in sessions])

    ctx.add_shutdown_callback(primary)
    report_reason_at_shutdown(ctx)
    # only the first session can take chat text (livekit-agents: "text stream handler for topic 'lk.chat'
    # already set, ignoring"), so each session answers a turn the entrypoint gives it
    for identity, session in zip(("alice", "bob"), sessions):
        await session.generate_reply(user_input=f"I am {identity}")


# ---- the job context ----------------------------------------------------------------------------------------


def _describe() -> dict:
    ctx = get_job_context()
    return {"job": ctx.job.id, "room": ctx.room.name, "metadata": json.loads(ctx.job.metadata),
            "agent_name": ctx.job.agent_name, "type": f"{type(ctx).__module__}.{type(ctx).__qualname__}"}


async def job_context(ctx: JobContext) -> None:
    report("before connect", {**_describe(), "connected": ctx.room.isconnected()})
    await ctx.connect()
    identity = ctx.local_participant_identity
    await ctx.room.local_participant.publish_data(json.dumps({**_describe(), "identity": identity}), topic="job")

    async def from_a_callback() -> None:  # no parameter: livekit-agents wraps it
        report("in a shutdown callback", get_job_context() is ctx)

    ctx.add_shutdown_callback(from_a_callback)
    report_reason_at_shutdown(ctx)
    ctx.shutdown(reason="described")


async def delete_room(ctx: JobContext) -> None:
    report_reason_at_shutdown(ctx)
    participant = await ctx.wait_for_participant()
    await ctx.room.local_participant.publish_data(f"deleting the room of {participant.identity}")
    await ctx.delete_room()


async def participant_entrypoint(ctx: JobContext) -> None:
    report_reason_at_shutdown(ctx)

    async def greet(ctx: JobContext, participant: rtc.RemoteParticipant) -> None:
        await ctx.room.local_participant.publish_data(f"hi {participant.identity}",
                                                      destination_identities=[participant.identity])

    ctx.add_participant_entrypoint(greet)
    await ctx.connect()


async def wait_for_participants(ctx: JobContext) -> None:
    """wait_for_participant before connect, by identity, and by kind."""
    report_reason_at_shutdown(ctx)
    bob = await ctx.wait_for_participant(identity="bob")
    await ctx.room.local_participant.publish_data(f"found {bob.identity}", topic="identity")
    caller = await ctx.wait_for_participant(kind=rtc.ParticipantKind.PARTICIPANT_KIND_SIP)
    answered = asyncio.Event()
    ctx.room.on("data_received", lambda packet: packet.topic == "thanks" and answered.set())
    await ctx.room.local_participant.publish_data(f"found {caller.identity}", topic="kind")
    await answered.wait()  # leaving at once could take the packet with it, for someone who has just joined
    ctx.shutdown(reason="found everyone")


# ---- shutdown paths ------------------------------------------------------------------------------------------


async def shutdown_with_reason(ctx: JobContext) -> None:
    report_reason_at_shutdown(ctx)
    participant = await ctx.wait_for_participant()
    await ctx.room.local_participant.publish_data(f"bye {participant.identity}")
    ctx.shutdown(reason="said goodbye")


async def entrypoint_raises(ctx: JobContext) -> None:
    report_reason_at_shutdown(ctx)
    await ctx.wait_for_participant()
    raise RuntimeError("the entrypoint broke")


async def room_closes(ctx: JobContext) -> None:
    report_reason_at_shutdown(ctx)
    await ctx.connect()


async def entrypoint_outlives_shutdown(ctx: JobContext) -> None:
    """The entrypoint keeps running after asking to shut down: it may finish before the callbacks run."""
    report_reason_at_shutdown(ctx)
    await ctx.wait_for_participant()
    ctx.shutdown(reason="finishing up")
    await asyncio.sleep(0.5)
    report("entrypoint finished", True)


SCENARIOS = {fnc.__name__: fnc for fnc in (
    session_without_connect, session_after_connect, two_sessions, job_context, delete_room, participant_entrypoint,
    wait_for_participants, shutdown_with_reason, entrypoint_raises, room_closes, entrypoint_outlives_shutdown,
)}
