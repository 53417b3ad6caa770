"""The inspector and the final-state outputs, built on real jobs fed by a real server (no browser).

Each test launches a real job process, lets a simulated participant (a real livekit client) join, and
reads what the widgets would send to the browser: their values.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import re
import subprocess
import sys

import contextlib

import jwt
import numpy as np
import pytest
from livekit import api, rtc
from PIL import Image

from nbagents import JobContext, launch, sim
from nbagents.runtime import events as ev
from nbagents.ui import STATE_MIME, Inspector, join, join_page, join_token, overview
from nbagents.ui._final import audio_bundle, final_plot_png, plot_bundle, state_bundle

from ui._audio import decode, dominant_hz
from waiting import wait_until


async def agent_that_listens(ctx: JobContext) -> None:
    import logging

    async def save_state() -> dict:
        return {"participants_seen": sorted(ctx.room.remote_participants)}

    ctx.add_shutdown_callback(save_state)
    await ctx.connect()
    logging.getLogger("agent").info("agent is listening")
    logging.getLogger("agent").warning("a warning for the level filter")


async def agent_that_fails(ctx: JobContext) -> None:
    await ctx.connect()
    raise RuntimeError("the agent tripped over its own feet")


def png_size(png: bytes) -> tuple[int, int]:
    return Image.open(io.BytesIO(png)).size


async def test_inspector_shows_participants_attributes_audio_and_plots_live(server, room_name, tmp_path) -> None:
    job = launch(agent_that_listens, room=room_name, shutdown_process_timeout=10, jobs_dir=tmp_path)
    inspector = Inspector(job, plot_rate=15)
    await wait_until(lambda: "running" in inspector.header.value, what="the header to show the running state")
    async with sim.join(room_name, "alice", attributes={"user.language": "en"}) as alice:
        tone = asyncio.ensure_future(alice.play_tone(440, seconds=30))
        try:
            await wait_until(lambda: "alice" in inspector.participants.value and "en</b>" in inspector.participants.value,
                             what="alice's row with her attribute")
            await wait_until(lambda: inspector._tracks and next(iter(inspector._tracks.values())).rms.value > 0.05,
                             what="the RMS meter to move")
            track = next(iter(inspector._tracks.values()))
            assert "48000 Hz" in track.stats.value and "1 ch" in track.stats.value and "480 samples/frame" in track.stats.value
            assert track.peak.value >= track.rms.value
            await wait_until(lambda: len(track.image.value) > 0, what="the first plot")
            first_plot = track.image.value
            assert png_size(first_plot)[0] > 200
            await wait_until(lambda: track.image.value != first_plot, what="the plot to change")

            await alice.set_attributes({"user.language": "fr"})
            await wait_until(lambda: "fr</b>" in inspector.participants.value, what="the attribute change")
            assert "en</b>" not in inspector.participants.value

            inspector.payload.value, inspector.topic.value = "ping from the notebook", "notes"
            inspector.send_button.click()
            await wait_until(lambda: "ping from the notebook" in inspector.data.value, what="the data message")
            assert "notes" in inspector.data.value
            await alice.wait_for_data(topic="notes")  # the human got it too

            await wait_until(lambda: "agent is listening" in inspector.log.value, what="the agent's log line")
            inspector.log_level.value = "WARNING"
            await wait_until(lambda: "agent is listening" not in inspector.log.value, what="the level filter")
            assert "a warning for the level filter" in inspector.log.value
        finally:
            tone.cancel()

        inspector.reason.value = "seen enough"
        inspector.stop_button.click()
        result = await job
        await wait_until(lambda: inspector.finished, what="the inspector to finish")
    assert result.state == "succeeded" and result.shutdown_reason == "seen enough"
    assert "succeeded" in inspector.header.value
    assert inspector.stop_button.disabled
    assert inspector.final_png is not None and png_size(inspector.final_png)[1] >= 100
    assert inspector._ui.flushes < len(job.events)  # events were coalesced into fewer redraws


COLOUR = (200, 60, 30)


@contextlib.asynccontextmanager
async def camera(server, room: str, identity: str, width: int, height: int):
    """A participant publishing a moving picture: a uniform COLOUR with a white bar sliding along the bottom."""
    token = api.AccessToken(server.api_key, server.api_secret).with_identity(identity).with_grants(
        api.VideoGrants(room_join=True, room=room)).to_jwt()
    lk_room = rtc.Room()
    await lk_room.connect(server.url, token)
    source = rtc.VideoSource(width, height)
    await lk_room.local_participant.publish_track(rtc.LocalVideoTrack.create_video_track("camera", source),
                                                  rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_CAMERA))

    async def play() -> None:
        for i in range(1 << 30):
            pixels = np.empty((height, width, 4), dtype=np.uint8)
            pixels[:, :] = (*COLOUR, 255)
            bar = (4 * i) % width
            pixels[-height // 8:, bar:bar + width // 10, :3] = 255
            source.capture_frame(rtc.VideoFrame(width, height, rtc.VideoBufferType.RGBA, pixels.tobytes()))
            await asyncio.sleep(1 / 15)  # the frame rate of the test video

    player = asyncio.ensure_future(play())
    try:
        yield lk_room
    finally:
        player.cancel()
        await lk_room.disconnect()


async def test_inspector_shows_video_tracks_with_size_rate_bitrate_and_thumbnail(server, room_name, tmp_path) -> None:
    job = launch(agent_that_listens, room=room_name, shutdown_process_timeout=10, jobs_dir=tmp_path)
    inspector = Inspector(job)
    await wait_until(lambda: job.connected is not None, what="the agent to connect")
    assert "no video track" in inspector.no_videos.value
    async with camera(server, room_name, "vera", 320, 180):
        await wait_until(lambda: inspector._videos and "320x180" in next(iter(inspector._videos.values())).stats.value,
                         what="the video track's size")
        view = next(iter(inspector._videos.values()))
        assert "vera" in view.stats.value and inspector.no_videos.layout.display == "none"
        await wait_until(lambda: len(view.image.value) > 0, what="a thumbnail")
        first = view.image.value
        thumbnail = np.asarray(Image.open(io.BytesIO(first)).convert("RGB"))
        assert thumbnail.shape == (90, 160, 3)  # scaled to the thumbnail width, aspect kept
        mean = thumbnail[10:60, 10:150].reshape(-1, 3).mean(axis=0)
        assert np.all(np.abs(mean - COLOUR) < 30), f"thumbnail colour {mean.round()} is not {COLOUR}"
        await wait_until(lambda: view.image.value != first, what="the thumbnail to refresh (the bar moves)")
        video = next(iter(job.video_tracks.values()))
        await wait_until(lambda: video.fps > 5 and video.bitrate_kbps > 0, what="frame rate and bitrate")
    stats = [e for e in job.events if isinstance(e, ev.VideoStats)]
    gaps = [b.time - a.time for a, b in zip(stats, stats[1:])]
    assert gaps and min(gaps) > 0.8  # statistics and thumbnails: at most about one a second
    result = await job.stop("seen the video")
    state = state_bundle(job, result, None)
    (track,) = state[STATE_MIME]["video_tracks"].values()
    assert (track["width"], track["height"], track["participant"]) == (320, 180, "vera")
    assert "320x180" in state["text/markdown"]


async def test_final_state_bundle_holds_persisted_values_markdown_text_and_png(server, room_name, tmp_path) -> None:
    job = launch(agent_that_listens, room=room_name, shutdown_process_timeout=10, jobs_dir=tmp_path)
    with pytest.raises(ValueError, match="still"):
        from nbagents.ui import show_final

        show_final(job)
    async with sim.join(room_name, "bob") as bob:
        await bob.play_tone(300, seconds=1.0)
        await wait_until(lambda: any(t.frames > 50 for t in job.audio_tracks.values()), what="audio statistics")
        result = await job.stop("done here")
    png = final_plot_png(job)
    assert png is not None
    bundle = state_bundle(job, result, png)
    state = bundle[STATE_MIME]
    json.dumps(state)  # tools read it as JSON
    assert state["state"] == "succeeded" and state["shutdown_reason"] == "done here"
    assert state["persisted"] == {"save_state": {"participants_seen": ["bob"]}}
    assert next(iter(state["audio_tracks"].values()))["sample_rate"] == 48000
    assert "`save_state`" in bundle["text/markdown"] and "participants_seen" in bundle["text/markdown"]
    assert "persisted save_state" in bundle["text/plain"]
    assert base64.b64decode(plot_bundle(job, png)["image/png"]) == png
    assert "image/png" not in bundle  # the plot is stored once, in its own output

    # the job recorded bob's track; the notebook keeps a player with an excerpt of the tone
    (recording,) = [r for r in result.recordings if r.participant_identity == "bob"]
    assert recording.direction == "received" and recording.status == "finished" and recording.path.is_file()
    assert dominant_hz(decode(recording.path)) == pytest.approx(300, abs=5)
    (listed,) = [r for r in state["recordings"] if r["participant"] == "bob"]
    assert not os.path.isabs(listed["file"]) and listed["file"].endswith(recording.path.name)
    assert not any(os.path.isabs(str(v)) for v in (state["log_dir"],))
    audio = audio_bundle(job, result)
    (uri,) = re.findall(r"src='data:audio/mpeg;base64,([^']+)'", audio["text/html"])
    excerpt = base64.b64decode(uri)
    assert dominant_hz(decode(io.BytesIO(excerpt))) == pytest.approx(300, abs=5)
    assert "bob" in audio["text/plain"] and "excerpt" in audio["text/plain"]


async def test_errors_show_their_traceback(server, room_name, tmp_path) -> None:
    job = launch(agent_that_fails, room=room_name, shutdown_process_timeout=10, jobs_dir=tmp_path)
    inspector = Inspector(job)
    result = await job
    await wait_until(lambda: inspector.finished, what="the inspector to finish")
    assert result.state == "failed"
    assert "tripped over its own feet" in inspector.errors.value
    assert "Traceback" in inspector.errors.value and "agent_that_fails" in inspector.errors.value
    assert "failed" in inspector.header.value


async def test_delete_room_button_ends_the_job(server, room_name, tmp_path) -> None:
    job = launch(agent_that_listens, room=room_name, shutdown_process_timeout=10, jobs_dir=tmp_path)
    inspector = Inspector(job)
    await wait_until(lambda: job.connected is not None, what="the agent to connect")
    inspector.delete_button.click()
    result = await asyncio.wait_for(job.wait(), 60)
    assert result.state == "succeeded", result.error
    await wait_until(lambda: inspector.finished, what="the inspector to finish")


async def test_add_simulated_participant_button_joins_and_speaks(server, room_name, tmp_path) -> None:
    job = launch(agent_that_listens, room=room_name, shutdown_process_timeout=10, jobs_dir=tmp_path)
    inspector = Inspector(job)
    await wait_until(lambda: job.connected is not None, what="the agent to connect")
    inspector.sim_identity.value, inspector.sim_freq.value, inspector.sim_seconds.value = "carol", 660.0, 1.0
    inspector.sim_button.click()
    await wait_until(lambda: "carol" in inspector.participants.value, what="carol's row")
    await wait_until(lambda: "carol spoke a 660 Hz tone" in inspector.status.value, what="the tone to finish")
    assert any(t.participant_identity == "carol" and t.frames > 50 for t in job.audio_tracks.values())
    await job.stop()
    await wait_until(lambda: inspector.finished, what="the inspector to finish")
    assert "carol" in json.dumps(job.result(0).persisted)


async def test_overview_and_join_page(server, room_name, tmp_path) -> None:
    job = launch(agent_that_listens, room=room_name, shutdown_process_timeout=10, jobs_dir=tmp_path)
    await wait_until(lambda: job.connected is not None, what="the agent to connect")
    table = overview()
    assert job.id in table.widget.value and "running" in table.widget.value
    url, token = join_token(job, "dana")
    claims = jwt.decode(token, server.api_secret, algorithms=["HS256"])
    assert claims["sub"] == "dana" and claims["video"]["room"] == room_name and claims["video"]["roomJoin"]
    page = join_page(job, "dana")
    config = json.loads(page.split('<script id="nbj-config" type="application/json">', 1)[1].split("</script>", 1)[0])
    assert config["url"] == url and config["room"] == room_name and config["identity"] == "dana"
    assert jwt.decode(config["token"], server.api_secret, algorithms=["HS256"])["sub"] == "dana"
    assert "LivekitClient" in page and "<script src=" not in page  # livekit-client inlined: nothing to fetch
    widget = join(job, "dana")
    assert (widget.room, widget.identity, widget.job_id) == (room_name, "dana", job.id)
    assert config["token"] not in json.dumps(widget.get_state(), default=str)  # the token is never widget state
    await job.stop()
    await wait_until(lambda: "succeeded" in table.widget.value, what="the overview to show the end")
    with pytest.raises(ValueError, match="already ended"):
        join_token(job)
    with pytest.raises(ValueError, match="already ended"):
        join(job)


def test_the_runtime_never_imports_widgets_or_plotting() -> None:
    code = (
        "import sys, nbagents, nbagents.runtime.job, nbagents.runtime.launch, nbagents.runtime.events, nbagents.magics\n"
        "bad = [m for m in ('ipywidgets', 'matplotlib', 'nbagents.ui') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
