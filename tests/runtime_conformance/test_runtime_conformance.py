"""Each scenario runs as an nbagents job and as a job of a real livekit-agents 1.8 worker on the same server
(both engines); the humans in the room and the job's own reports must observe the same things.

Each test also states what that common observation is, so two frameworks failing the same way fail the test.
"""

from __future__ import annotations

import json

import pytest

from .conftest import Run
from .lk_worker import AGENT_NAME

STATE = "lk.agent.state"

pytestmark = pytest.mark.timeout(400)  # two jobs per test, each waited for with a generous deadline on a loaded machine


async def _chat(run: Run, person, text: str) -> None:
    """Type into the agent's chat (RoomIO's text input) and wait for the agent's answer, and for it to listen again."""
    await person.wait_for("the agent to listen", lambda: (a := person.agent()) is not None and a.attributes.get(STATE) == "listening")
    run.record_agent(person)
    await person.room.local_participant.send_text(text, topic="lk.chat")
    await person.wait_for_text(f"You said: {text}")
    await person.wait_for("the agent to listen again", lambda: person.agent().attributes.get(STATE) == "listening")


async def test_agent_session_without_connect(run_both) -> None:
    async def script(run: Run) -> None:
        alice = await run.join("alice")
        await run.start_job()
        await _chat(run, alice, "hello")
        await alice.leave()

    nb, lk = await run_both("session_without_connect", script)
    seen = nb.observation
    assert seen.received["alice"] == [("lk.transcription", "You said: hello")]
    assert seen.agent["attributes"][STATE] == "listening" and seen.agent["identity"] == f"agent-{nb.job_id()}"
    assert seen.report[-1] == ("shutdown callback", "room disconnected")


async def test_agent_session_after_connect(run_both) -> None:
    async def script(run: Run) -> None:
        alice = await run.join("alice")
        await run.start_job()
        await _chat(run, alice, "hi there")
        await alice.leave()

    nb, _ = await run_both("session_after_connect", script)
    assert nb.observation.received["alice"] == [("lk.transcription", "You said: hi there")]
    assert nb.observation.report[-1] == ("shutdown callback", "room disconnected")


async def test_two_sessions_one_per_participant(run_both) -> None:
    async def script(run: Run) -> None:
        alice = await run.join("alice")
        bob = await run.join("bob")
        await run.start_job()
        for person in (alice, bob):  # an agent's transcriptions go to everyone in the room
            await person.wait_for_text("You said: I am alice")
            await person.wait_for_text("You said: I am bob")
        await alice.wait_for("the agent to listen", lambda: alice.agent().attributes.get(STATE) == "listening")
        run.record_agent(alice)
        await alice.leave()
        await bob.leave()

    nb, _ = await run_both("two_sessions", script)
    both = [("lk.transcription", "You said: I am alice"), ("lk.transcription", "You said: I am bob")]
    assert nb.observation.received == {"alice": both, "bob": both}
    assert dict(nb.observation.report)["primary"] == [True, False]
    assert nb.observation.report[-1] == ("shutdown callback", "room disconnected") or \
        ("shutdown callback", "room disconnected") in nb.observation.report


async def test_job_context_and_get_job_context(run_both) -> None:
    async def script(run: Run) -> None:
        carol = await run.join("carol")
        await run.start_job()
        await carol.wait_for("the job's description", lambda: carol.received)
        await run.job_ended()

    nb, _ = await run_both("job_context", script)
    described = {"job": "<job>", "room": "<room>", "metadata": {"scenario": "job_context"}, "agent_name": AGENT_NAME,
                 "type": "livekit.agents.job.JobContext"}
    seen = nb.normalized()
    [(topic, text)] = seen["received"]["carol"]
    assert topic == "job" and json.loads(text) == {**described, "identity": "agent-<job>"}
    report = dict(map(tuple, seen["report"]))
    assert report["before connect"] == {**described, "connected": False}  # the room's name is known before connecting
    assert report["in a shutdown callback"] is True and report["shutdown callback"] == "described"


async def test_delete_room(run_both) -> None:
    async def script(run: Run) -> None:
        dan = await run.join("dan")
        await run.start_job()
        await dan.wait_for("to be disconnected", lambda: dan.disconnects)
        await run.job_ended()

    nb, _ = await run_both("delete_room", script)
    assert nb.observation.received["dan"] == [("", "deleting the room of dan")]
    assert nb.observation.disconnects["dan"] == ["ROOM_DELETED"]
    assert nb.observation.report[-1] == ("shutdown callback", "room disconnected")


async def test_participant_entrypoint_for_present_and_later_participants(run_both) -> None:
    async def script(run: Run) -> None:
        erin = await run.join("erin")
        await run.start_job()
        await erin.wait_for_text("hi erin")
        frank = await run.join("frank")
        await frank.wait_for_text("hi frank")
        await erin.leave()
        await frank.leave()

    nb, _ = await run_both("participant_entrypoint", script)
    assert nb.observation.received == {"erin": [("", "hi erin")], "frank": [("", "hi frank")]}
    assert nb.observation.report[-1] == ("shutdown callback", "room disconnected")


async def test_wait_for_participant_by_identity_and_kind(run_both) -> None:
    async def script(run: Run) -> None:
        alice = await run.join("alice")
        await run.start_job()
        await alice.wait_for("the agent", lambda: alice.agent() is not None)
        run.record_agent(alice)
        bob = await run.join("bob")
        await bob.wait_for_text("found bob")
        caller = await run.join("caller", kind="sip")
        await caller.wait_for_text("found caller")
        await caller.wait_for("the agent", lambda: caller.agent() is not None)
        await caller.room.local_participant.publish_data("thanks", topic="thanks",
                                                         destination_identities=[caller.agent().identity])
        await run.job_ended()

    nb, _ = await run_both("wait_for_participants", script)
    assert nb.observation.received == {"alice": [("identity", "found bob"), ("kind", "found caller")],
                                       "bob": [("identity", "found bob"), ("kind", "found caller")],
                                       "caller": [("kind", "found caller")]}
    assert nb.observation.report[-1] == ("shutdown callback", "found everyone")


async def test_shutdown_with_a_reason(run_both) -> None:
    async def script(run: Run) -> None:
        gina = await run.join("gina")
        await run.start_job()
        await gina.wait_for_text("bye gina")
        await run.job_ended()

    nb, _ = await run_both("shutdown_with_reason", script)
    assert nb.observation.report[-1] == ("shutdown callback", "said goodbye")
    assert nb.observation.disconnects["gina"] == []  # the agent left; the human stays until she leaves


async def test_an_exception_in_the_entrypoint(run_both) -> None:
    async def script(run: Run) -> None:
        await run.join("hank")
        await run.start_job()
        await run.job_ended()

    nb, _ = await run_both("entrypoint_raises", script)
    assert nb.observation.report[-1] == ("shutdown callback", "job crashed")
    assert nb.job.result(0).state == "failed" and "the entrypoint broke" in nb.job.result(0).error


async def test_the_room_closing_after_the_humans_left(run_both) -> None:
    async def script(run: Run) -> None:
        ivy = await run.join("ivy")
        await run.start_job()
        await ivy.wait_for("the agent", lambda: ivy.agent() is not None)
        run.record_agent(ivy)
        await ivy.leave()
        await run.job_ended()

    nb, _ = await run_both("room_closes", script)
    assert nb.observation.report[-1] == ("shutdown callback", "room disconnected")


async def test_the_entrypoint_may_finish_after_asking_to_shut_down(run_both) -> None:
    async def script(run: Run) -> None:
        await run.join("jack")
        await run.start_job()
        await run.job_ended()

    nb, _ = await run_both("entrypoint_outlives_shutdown", script)
    assert nb.observation.report[-2:] == [("entrypoint finished", True), ("shutdown callback", "finishing up")]
