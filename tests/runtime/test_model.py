"""The kernel-side Job model, driven with typed events directly (no process, no server, no widgets)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from nbagents.runtime import events as ev
from nbagents.runtime.ipc import JobFinished
from nbagents.runtime.job import AUDIO_HISTORY_LIMIT, HISTORY_LIMIT, Job


def make_job(tmp_path: Path) -> Job:
    return Job("AJ_model", "room", shutdown_process_timeout=5.0, log_dir=tmp_path / "AJ_model", loop=None)


def person(identity: str, **attributes: str) -> ev.ParticipantInfo:
    return ev.ParticipantInfo(identity, "PA_1", identity, "standard", dict(attributes), "")


def audio(rms: float) -> ev.AudioStats:
    return ev.AudioStats(track_sid="TR_1", participant_identity="ann", frames=1, sample_rate=48000, channels=1,
                         samples_per_frame=480, rms=rms, peak=rms * 1.4, waveform=(0.1, -0.1))


def test_participants_follow_joins_attribute_changes_and_departures(tmp_path: Path) -> None:
    job = make_job(tmp_path)
    job._on_event(ev.ParticipantChanged(change="joined", participant=person("ann", lang="en")))
    job._on_event(ev.ParticipantChanged(change="attributes", participant=person("ann", lang="fr"), changed={"lang": "fr"}))
    assert job.participants["ann"].attributes == {"lang": "fr"}
    job._on_event(ev.ParticipantChanged(change="left", participant=person("ann", lang="fr")))
    assert job.participants == {}


def test_audio_statistics_never_push_other_events_out_of_the_history(tmp_path: Path) -> None:
    job = make_job(tmp_path)
    job._on_event(ev.StateChanged(state="running"))
    for i in range(AUDIO_HISTORY_LIMIT + 100):
        job._on_event(audio(0.01 * (i % 50)))
    history = job.events
    assert history[0] == ev.StateChanged(state="running", time=history[0].time)
    assert sum(isinstance(e, ev.AudioStats) for e in history) == AUDIO_HISTORY_LIMIT
    assert len(job.audio_tracks["TR_1"].levels) == job.audio_tracks["TR_1"].levels.maxlen
    for i in range(HISTORY_LIMIT + 1):
        job._on_event(ev.LogRecord(level="INFO", logger="x", message=str(i)))
    assert not any(isinstance(e, ev.StateChanged) for e in job.events)  # bounded: the oldest go first


def test_subscribers_get_every_event_and_can_unsubscribe(tmp_path: Path) -> None:
    job = make_job(tmp_path)
    seen: list[str] = []
    unsubscribe = job.subscribe(lambda j, e: seen.append(e.kind))
    job._on_event(ev.StateChanged(state="running"))
    job._on_event(ev.DataReceived(sender="ann", topic="t", size=2, text="hi"))
    unsubscribe()
    job._on_event(ev.StateChanged(state="shutting_down", detail="bye"))
    assert seen == ["state", "data"]
    assert job.data_messages[0].text == "hi" and job.shutdown_reason == "bye"


def test_a_broken_subscriber_does_not_break_the_model(tmp_path: Path) -> None:
    job = make_job(tmp_path)
    job.subscribe(lambda j, e: 1 / 0)
    job._on_event(ev.StateChanged(state="running"))
    assert job.state == "running"


def test_reported_result_wins(tmp_path: Path) -> None:
    job = make_job(tmp_path)
    job._on_finished_message(JobFinished(state="succeeded", shutdown_reason="done", error=None, persisted={"a": 1}))
    job._on_process_gone(0)
    result = job.result(0)
    assert (result.state, result.shutdown_reason, result.persisted, result.exit_code) == ("succeeded", "done", {"a": 1}, 0)
    assert job.done and job.state == "succeeded"


def test_a_process_that_died_unreported_is_crashed_and_keeps_what_reached_disk(tmp_path: Path) -> None:
    job = make_job(tmp_path)
    job.log_dir.mkdir(parents=True)
    (job.log_dir / "result.json").write_text(json.dumps({"persisted": {"saved": [1, 2]}, "pending_callbacks": ["slow"]}))
    job._on_event(ev.CallbackOutcome(name="quick", status="finished", value="ok"))
    job._on_process_gone(-9)
    result = job.result(0)
    assert result.state == "crashed" and "SIGKILL" in result.error
    assert result.persisted == {"saved": [1, 2], "quick": "ok"}
    assert {c.name: c.status for c in result.callbacks} == {"quick": "finished", "slow": "cut_off"}
    assert job.events[-1] == ev.StateChanged(state="crashed", detail=result.error, time=job.events[-1].time)


def test_events_round_trip_through_json() -> None:
    events = [
        ev.ParticipantChanged(change="joined", participant=ev.ParticipantInfo(
            "ann", "PA_1", "Ann", "standard", {"k": "v"}, "", (ev.TrackInfo("TR_1", "mic", "audio", "microphone", False, True),))),
        ev.TrackChanged(change="subscribed", participant_identity="ann", track=ev.TrackInfo("TR_1", "mic", "audio", "microphone", False, True)),
        audio(0.3),
        ev.VideoStats(track_sid="TR_2", participant_identity="ann", frames=30, width=640, height=360, fps=15.0,
                      bitrate_kbps=480.5, thumbnail_jpeg="/9j/4AAQ"),
        ev.ShutdownStarted(reason="r", deadline=1.0, callbacks=("a", "b")),
        ev.CallbackOutcome(name="a", status="finished", value={"x": [1]}),
    ]
    for event in events:
        assert ev.from_json(json.loads(json.dumps(event.to_json()))) == event


def test_the_model_never_imports_widgets() -> None:
    import subprocess

    code = "import sys, nbagents.runtime.job, nbagents.runtime.launch; print('ipywidgets' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_voice_events_build_sessions_and_the_transcript_even_when_the_process_dies(tmp_path: Path) -> None:
    job = make_job(tmp_path)
    voice = [
        ev.SessionStarted(session=1, agent="Greeter", primary=True),
        ev.AgentStateChanged(session=1, old_state="initializing", new_state="listening"),
        ev.UserStateChanged(session=1, old_state="listening", new_state="speaking"),
        ev.UserTranscribed(session=1, text="hel", is_final=False),
        ev.UserTranscribed(session=1, text="hello", is_final=True, language="en"),
        ev.ConversationItemAdded(session=1, item_id="item_1", role="user", text="hello", created_at=10.0),
        ev.TurnMetrics(session=1, item_id="item_1", role="user", end_of_turn_delay=0.4),
        ev.ConversationItemAdded(session=1, item_id="item_2", role="system", text="be brief", created_at=10.5),
        ev.FunctionToolsExecuted(session=1, calls=(ev.ToolCall("weather", "call_1", '{"city": "Oslo"}', "rain", False),)),
        ev.ConversationItemAdded(session=1, item_id="item_3", role="assistant", text="Rain in Oslo.", created_at=11.0),
        ev.AgentStateChanged(session=1, old_state="thinking", new_state="speaking"),
        ev.SessionClosed(session=1, reason="job_shutdown"),
    ]
    for event in voice:
        job._on_event(event)
        assert ev.from_json(json.loads(json.dumps(event.to_json()))) == event  # the on-disk form round-trips
    session = job.sessions[1]
    assert (session.agent, session.primary, session.agent_state, session.user_state) == ("Greeter", True, "speaking", "speaking")
    assert session.interim == "" and [i.item_id for i in session.items] == ["item_1", "item_2", "item_3"]
    assert session.tool_calls[0].output == "rain" and session.metrics[0].end_of_turn_delay == 0.4
    assert session.closed is not None and session.closed.reason == "job_shutdown"
    expected = [{"role": "user", "text": "hello", "time": 10.0}, {"role": "assistant", "text": "Rain in Oslo.", "time": 11.0}]
    assert job.transcript == expected
    job._on_process_gone(-9)
    assert job.result(0).state == "crashed" and job.result(0).transcript == expected
