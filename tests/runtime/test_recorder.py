"""Recording a job's audio: bounded files that decode to what was said, and the SDK's expected complaints kept quiet.

Jobs run for real against the session's server; a simulated participant (a real livekit client in its
own process) speaks tones; the agent publishes one of its own.
"""

from __future__ import annotations

import logging
import time

import pytest
from waiting import wait_until

from nbagents import JobContext, launch, sim
from nbagents.runtime import sdk_logs
from nbagents.runtime.recorder import RecordingOptions, load_index

from ui._audio import decode, dominant_hz


async def agent_that_speaks(ctx: JobContext) -> None:
    """Publishes a 660 Hz tone for 1.5 s, then stays in the room."""
    import asyncio

    import numpy as np
    from livekit import rtc

    await ctx.connect()
    source = rtc.AudioSource(48000, 1)
    track = rtc.LocalAudioTrack.create_audio_track("agent-voice", source)
    await ctx.room.local_participant.publish_track(track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE))
    t = np.arange(480) / 48000
    for n in range(150):
        tone = 0.3 * np.sin(2 * np.pi * 660 * (t + n * 0.01))
        await source.capture_frame(rtc.AudioFrame((tone * 32767).astype(np.int16).tobytes(), 48000, 1, 480))
    await asyncio.sleep(60)


async def test_a_job_records_what_it_hears_and_what_it_says(server, room_name, jobs_dir) -> None:
    job = launch(agent_that_speaks, room=room_name, shutdown_process_timeout=10, jobs_dir=jobs_dir)
    await wait_until(lambda: job.connected is not None, what="the agent to connect")
    async with sim.join(room_name, "carol") as carol:
        await carol.play_tone(523, seconds=1.5)
        await wait_until(lambda: any(r.direction == "received" for r in job.recordings.values()), what="a recording")
    result = await job.stop("heard enough")

    by_direction = {r.direction: r for r in result.recordings}
    heard, said = by_direction["received"], by_direction["published"]
    assert heard.participant_identity == "carol" and said.participant_identity == job.connected.identity
    for recording in (heard, said):
        assert recording.status == "finished" and recording.path.parent == job.log_dir / "audio"
        assert recording.path.suffix == ".ogg" and recording.bytes == recording.path.stat().st_size > 0
    assert dominant_hz(decode(heard.path)) == pytest.approx(523, abs=5)
    assert dominant_hz(decode(said.path)) == pytest.approx(660, abs=5)
    index = {entry["file"]: entry for entry in load_index(job.log_dir)}
    entry = index[str(heard.path.relative_to(job.log_dir))]
    assert max(entry["levels"]) > 0.1 and entry["level_interval"] == 0.1  # the envelope viewers use


async def test_a_recording_stops_at_its_bound_and_says_so(server, room_name, jobs_dir) -> None:
    options = RecordingOptions(max_seconds=1.0, published=False)
    job = launch(agent_that_speaks, room=room_name, shutdown_process_timeout=10, jobs_dir=jobs_dir, recording=options)
    await wait_until(lambda: job.connected is not None, what="the agent to connect")
    async with sim.join(room_name, "dave") as dave:
        await dave.play_tone(440, seconds=2.0)
        await wait_until(lambda: any(r.status == "truncated" for r in job.recordings.values()), what="the bound")
    result = await job.stop()
    (recording,) = result.recordings  # the agent's own track was not recorded (published=False)
    assert recording.status == "truncated" and "max_seconds=1" in recording.note
    assert recording.seconds == pytest.approx(1.0, abs=0.02)
    samples, rate = decode(recording.path)
    assert samples.size / rate == pytest.approx(1.0, abs=0.05)


async def test_recording_off_writes_nothing(server, room_name, jobs_dir) -> None:
    job = launch(agent_that_speaks, room=room_name, shutdown_process_timeout=10, jobs_dir=jobs_dir, recording=False)
    await wait_until(lambda: job.connected is not None, what="the agent to connect")
    async with sim.join(room_name, "erin") as erin:
        await erin.play_tone(440, seconds=0.5)
        await wait_until(lambda: any(t.frames > 20 for t in job.audio_tracks.values()), what="audio to arrive")
    result = await job.stop()
    assert result.recordings == () and not (job.log_dir / "audio").exists()


def test_bad_recording_options_are_refused_with_the_reason() -> None:
    with pytest.raises(ValueError, match="max_seconds"):
        RecordingOptions(max_seconds=0)
    with pytest.raises(ValueError, match="bitrate"):
        RecordingOptions(bitrate=1000)
    with pytest.raises(TypeError, match="recording must be"):
        launch(agent_that_speaks, room="never", recording="yes")  # type: ignore[arg-type]


def test_the_sdk_notes_about_normal_operation_are_not_warnings(caplog) -> None:
    """The v1 -> v0 signaling fallback is INFO; a data channel closing is INFO when the room closes, else an ERROR."""
    closing = {"now": False}
    installed = sdk_logs.install(lambda: closing["now"])
    logger = logging.getLogger("livekit")
    try:
        with caplog.at_level(logging.INFO, logger="livekit"):
            logger.warning("livekit_signaling - v1 path not found (404), falling back to v0 path")
            logger.error("livekit::rtc_engine - publisher data channel '_reliable' closed unexpectedly")  # held
            closing["now"] = True
            installed.flush()
            logger.error("publisher data channel '_lossy' closed unexpectedly")
            logger.warning("something else went wrong")
        levels = [(r.levelname, r.getMessage()) for r in caplog.records]
        assert levels[0][0] == "INFO" and "v1 path" in levels[0][1]
        assert [lv for lv, m in levels if "data channel" in m] == ["INFO", "INFO"]
        assert levels[-1][0] == "WARNING"  # anything else keeps its level

        closing["now"] = False
        sdk_logs.HOLD_SECONDS, held_for = 0.05, sdk_logs.HOLD_SECONDS
        try:
            caplog.clear()
            logger.error("publisher data channel '_reliable' closed unexpectedly")
            wait = time.monotonic() + 5
            while not caplog.records and time.monotonic() < wait:
                time.sleep(0.01)
            assert [r.levelname for r in caplog.records] == ["ERROR"]  # the room did not close: a real error
        finally:
            sdk_logs.HOLD_SECONDS = held_for
    finally:
        logger.removeFilter(installed)
