"""The LiveKit Agents documentation's JobContext examples, run as real jobs against a real server.

Each entrypoint below is written as the documentation writes it; a second participant (a plain
``rtc.Room``) checks what it sees, and the JobResult says how the job ended.
"""

from __future__ import annotations

import asyncio
import json

from livekit import api, rtc

import nbagents
from nbagents import AutoSubscribe, JobContext, JobProcess, launch
from nbagents.runtime import events as ev

from waiting import wait_until

from .conftest import wait_connected


async def listen_to_audio(ctx: JobContext) -> None:
    frames = {"count": 0, "sample_rate": 0}

    async def read_audio(track: rtc.Track) -> None:
        async for event in rtc.AudioStream(track):
            frames["count"] += 1
            frames["sample_rate"] = event.frame.sample_rate

    @ctx.room.on("track_subscribed")
    def on_track_subscribed(track: rtc.Track, publication: rtc.RemoteTrackPublication, participant: rtc.RemoteParticipant) -> None:
        if track.kind == rtc.TrackKind.KIND_AUDIO:
            asyncio.create_task(read_audio(track))

    async def audio_report() -> dict:
        return dict(frames)

    ctx.add_shutdown_callback(audio_report)
    await ctx.connect(auto_subscribe=AutoSubscribe.AUDIO_ONLY)


async def test_track_subscribed_audio_stream_hears_the_participant(human, room_name, jobs_dir) -> None:
    job = launch(listen_to_audio, room=room_name, shutdown_process_timeout=10)
    await wait_connected(job)
    async with human(room_name) as alice:
        await alice.play_tone(amplitude=0.5)
        await wait_until(
            lambda: any(t.frames > 100 and t.rms > 0.2 for t in job.audio_tracks.values()),
            what="the monitor to measure the tone",
        )
        stats = next(iter(job.audio_tracks.values()))
        assert stats.participant_identity == "alice"
        assert (stats.sample_rate, stats.channels, stats.samples_per_frame) == (48000, 1, 480)
        assert 0.25 < stats.rms < 0.45 and 0.4 < stats.peak <= 0.6  # a 0.5 sine: rms 0.35
        assert len(stats.waveform) > 10 and max(stats.waveform) > 0.3
        assert "mic" in [t.name for t in job.participants["alice"].tracks]
        result = await job.stop(reason="enough audio")
    assert result.state == "succeeded", result.error
    assert result.shutdown_reason == "enough audio"
    assert result.persisted["audio_report"]["count"] > 100  # the user's own stream got frames too
    assert result.persisted["audio_report"]["sample_rate"] == 48000


async def say_hello(ctx: JobContext) -> None:
    await ctx.connect()
    await ctx.wait_for_participant()
    await ctx.room.local_participant.publish_data("hello world")

    async def goodbye(reason: str) -> dict:
        return {"reason": reason}

    ctx.add_shutdown_callback(goodbye)
    ctx.shutdown(reason="said hello")


async def test_publish_data_hello_world_then_shutdown_with_a_reason(human, room_name) -> None:
    async with human(room_name, "bob") as bob:
        job = launch(say_hello, room=room_name)
        await wait_until(lambda: bob.data, what="bob to receive data")
        result = await job
    sender, topic, payload = bob.data[0]
    assert (topic, payload) == ("", b"hello world")
    # the SDK names the sender only once it has seen the agent join, which can race the first packet
    assert sender in (f"agent-{job.id}", "")
    assert result.state == "succeeded", result.error
    assert result.shutdown_reason == "said hello"
    assert result.persisted == {"goodbye": {"reason": "said hello"}}
    assert [c.status for c in result.callbacks] == ["finished"]


async def list_participants(ctx: JobContext) -> None:
    await ctx.connect()
    seen: dict[str, dict] = {}
    while len(ctx.room.remote_participants) < 2:
        await ctx.wait_for_participant()
        await asyncio.sleep(0.05)
    for identity, participant in ctx.room.remote_participants.items():
        seen[identity] = {"kind": participant.kind, "attributes": dict(participant.attributes)}

    async def participants() -> dict:
        return seen

    ctx.add_shutdown_callback(participants)
    ctx.shutdown(reason="counted")


async def test_iterating_remote_participants(human, room_name) -> None:
    async with human(room_name, "carol", {"role": "host"}), human(room_name, "dave"):
        result = await launch(list_participants, room=room_name)
    assert result.state == "succeeded", result.error
    standard = rtc.ParticipantKind.PARTICIPANT_KIND_STANDARD
    assert result.persisted["participants"] == {
        "carol": {"kind": standard, "attributes": {"role": "host"}},
        "dave": {"kind": standard, "attributes": {}},
    }


async def follow_language(ctx: JobContext) -> None:
    await ctx.connect()
    participant = await ctx.wait_for_participant()
    languages = [participant.attributes.get("user.language")]

    @ctx.room.on("participant_attributes_changed")
    def on_attributes_changed(changed: dict[str, str], who: rtc.Participant) -> None:
        if "user.language" in changed:
            languages.append(changed["user.language"])
            ctx.shutdown(reason="language changed")

    async def spoken_languages() -> list:
        return languages

    ctx.add_shutdown_callback(spoken_languages)


async def test_wait_for_participant_and_attribute_changes(human, room_name) -> None:
    job = launch(follow_language, room=room_name)
    await wait_connected(job)
    async with human(room_name, "erin", {"user.language": "en"}) as erin:
        await wait_until(lambda: "erin" in job.participants, what="the model to list erin")
        assert job.participants["erin"].attributes == {"user.language": "en"}
        assert job.participants["erin"].kind == "standard"
        await asyncio.sleep(0.5)  # let the entrypoint register its handler after wait_for_participant
        await erin.room.local_participant.set_attributes({"user.language": "fr"})
        result = await job
    assert result.state == "succeeded", result.error
    assert result.persisted == {"spoken_languages": ["en", "fr"]}
    changes = [e for e in job.events if isinstance(e, ev.ParticipantChanged) and e.change == "attributes"]
    assert any(e.changed == {"user.language": "fr"} and e.participant.identity == "erin" for e in changes)


async def delete_the_room(ctx: JobContext) -> None:
    await ctx.connect()
    await ctx.wait_for_participant()

    async def after_delete(reason: str) -> str:
        return reason

    ctx.add_shutdown_callback(after_delete)
    lkapi = api.LiveKitAPI()  # LIVEKIT_URL / _API_KEY / _API_SECRET are set in the job process
    await lkapi.room.delete_room(api.DeleteRoomRequest(room=ctx.job.room.name))
    await lkapi.aclose()


async def test_delete_room_through_the_api_ends_the_job_and_disconnects_everyone(human, room_name) -> None:
    async with human(room_name, "frank") as frank:
        result = await launch(delete_the_room, room=room_name)
        await wait_until(lambda: frank.disconnect_reasons, what="frank to be disconnected")
    assert frank.disconnect_reasons[0] == rtc.DisconnectReason.ROOM_DELETED
    assert result.state == "succeeded", result.error
    assert result.shutdown_reason == "room disconnected"  # the reason livekit-agents gives the hooks
    assert result.persisted == {"after_delete": "room disconnected"}
    job = nbagents.jobs()[-1]
    assert any("ROOM_DELETED" in record.message for record in job.logs)  # why, in the job's log


async def wait_for_everyone_to_leave(ctx: JobContext) -> None:
    async def leftover(reason: str) -> str:
        return reason

    ctx.add_shutdown_callback(leftover)
    await ctx.connect()


async def test_job_ends_when_the_humans_have_left(human, room_name) -> None:
    """The server closes the room departure_timeout after the last non-agent participant left (agents
    do not keep a room open), which disconnects the agent and ends the job."""
    job = launch(wait_for_everyone_to_leave, room=room_name, departure_timeout=1)
    await wait_connected(job)
    async with human(room_name, "gina") as gina:
        await wait_until(lambda: "gina" in job.participants, what="gina to be seen")
        await gina.leave()
    result = await asyncio.wait_for(job.wait(), 60)
    assert result.state == "succeeded", result.error
    assert result.shutdown_reason == "room disconnected"
    assert result.persisted == {"leftover": "room disconnected"}


def load_model(proc: JobProcess) -> None:
    import os

    proc.userdata["model"] = "loaded"
    proc.userdata["prewarm_pid"] = os.getpid()
    print(f"model loaded in process {os.getpid()}")


async def use_model(ctx: JobContext) -> None:
    import os

    async def model() -> dict:
        return {**ctx.proc.userdata, "pid": os.getpid()}

    ctx.add_shutdown_callback(model)
    ctx.shutdown(reason="checked")


async def test_prewarm_fills_userdata_and_warm_processes_are_prewarmed(server, room_name) -> None:
    first_job = launch(use_model, room=room_name, prewarm=load_model)
    first = await first_job
    assert first.persisted["model"]["model"] == "loaded"
    assert f"model loaded in process {first_job.pid}" in [r.message for r in first_job.logs]
    # the pool now refills with processes that ran load_model ahead of time
    from nbagents.runtime.pool import shared_pool

    await wait_until(lambda: shared_pool().acquire_peek(), what="a prewarmed idle process")
    job = launch(use_model, room=room_name, prewarm=load_model)
    result = await job
    assert result.persisted["model"]["model"] == "loaded"
    assert job.entrypoint_started is not None and job.entrypoint_started.warm
    assert result.persisted["model"]["prewarm_pid"] == result.persisted["model"]["pid"]
    # what the prewarm printed while the process waited for its job is in that job's log
    assert f"model loaded in process {job.pid}" in [r.message for r in job.logs]


async def test_event_log_and_result_are_on_disk(human, room_name, tmp_path) -> None:
    async with human(room_name, "hana"):
        job = launch(say_hello, room=room_name, jobs_dir=tmp_path)
        result = await job
    assert job.log_dir == tmp_path.resolve() / job.id
    on_disk = json.loads((job.log_dir / "result.json").read_text())
    assert on_disk["state"] == "succeeded" and on_disk["persisted"] == result.persisted
    kinds = [json.loads(line)["kind"] for line in (job.log_dir / "events.jsonl").read_text().splitlines()]
    assert kinds[0] == "state" and "room_connected" in kinds and "callback" in kinds and kinds[-1] == "state"
    restored = [ev.from_json(json.loads(line)) for line in (job.log_dir / "events.jsonl").read_text().splitlines()]
    assert isinstance(restored[-1], ev.StateChanged) and restored[-1].state == "succeeded"
