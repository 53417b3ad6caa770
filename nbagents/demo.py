"""``nbagents demo``: the documentation's example, run headless end to end, narrated step by step.

An agent joins a room; a simulated participant with a ``user.language`` attribute joins and speaks a
tone; the agent hears it, sees the attribute change, says "hello world" on the data channel and, once
the participant has replied, shuts itself down; its shutdown hook's return value is persisted. Exit status 0 means every step was seen.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

TONE_HZ = 440.0
TONE_SECONDS = 1.0
STEP_TIMEOUT = 60.0
GREETING = "hello world"
REPLY = "thanks!"


# -- the agent: the documentation's example, as a user would write it in a notebook cell ---------------------


async def entrypoint(ctx: Any) -> None:
    """Listen to the first participant, notice their language change, greet them, shut down."""
    import logging

    import numpy as np
    from livekit import rtc

    from nbagents import AutoSubscribe

    logger = logging.getLogger("demo-agent")
    heard: dict[str, Any] = {"frames": 0, "samples": [], "language": None, "reply": None}
    listeners: list[asyncio.Task[None]] = []
    language_changed = asyncio.Event()
    replied = asyncio.Event()

    async def listen(track: rtc.Track, participant: rtc.RemoteParticipant) -> None:
        async for event in rtc.AudioStream(track, sample_rate=48000, num_channels=1):
            heard["frames"] += 1
            if len(heard["samples"]) < 200:  # keep 2 s to find the tone's pitch
                heard["samples"].append(np.frombuffer(event.frame.data, dtype=np.int16).copy())

    def loudest_frequency() -> float | None:
        if not heard["samples"]:
            return None
        samples = np.concatenate(heard["samples"]).astype(np.float64)
        spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
        return round(float(np.argmax(spectrum)) * 48000 / len(samples), 1)

    async def save_state() -> dict[str, Any]:
        for task in listeners:
            task.cancel()
        return {
            "participant": heard.get("participant"),
            "first_language": heard.get("first_language"),
            "language": heard["language"],
            "audio_frames": heard["frames"],
            "loudest_hz": loudest_frequency(),
            "reply": heard["reply"],
        }

    ctx.add_shutdown_callback(save_state)
    await ctx.connect(auto_subscribe=AutoSubscribe.AUDIO_ONLY)

    @ctx.room.on("track_subscribed")
    def on_track_subscribed(track: rtc.Track, publication: Any, participant: rtc.RemoteParticipant) -> None:
        if track.kind == rtc.TrackKind.KIND_AUDIO:
            logger.info("subscribed to %s's audio track %s", participant.identity, track.sid)
            listeners.append(asyncio.create_task(listen(track, participant)))

    @ctx.room.on("participant_attributes_changed")
    def on_attributes_changed(changed: dict[str, str], participant: rtc.Participant) -> None:
        if "user.language" in changed:
            logger.info("%s now speaks %s", participant.identity, changed["user.language"])
            heard["language"] = changed["user.language"]
            language_changed.set()

    @ctx.room.on("data_received")
    def on_data_received(packet: rtc.DataPacket) -> None:
        heard["reply"] = packet.data.decode()
        replied.set()

    participant = await ctx.wait_for_participant()
    heard["participant"] = participant.identity
    heard["first_language"] = participant.attributes.get("user.language")
    for remote in ctx.room.remote_participants.values():
        logger.info("in the room: %s %s", remote.identity, dict(remote.attributes))

    while heard["language"] in (None, heard["first_language"]):
        language_changed.clear()
        await language_changed.wait()
    await ctx.room.local_participant.publish_data(GREETING)
    await replied.wait()  # leave only once the greeting has surely arrived
    ctx.shutdown(reason="greeted the participant")


# -- the narrator ---------------------------------------------------------------------------------------------------


@dataclass
class Narrator:
    """Prints each step with the seconds since the demo began."""

    out: TextIO = sys.stdout
    started: float = field(default_factory=time.perf_counter)

    def say(self, text: str) -> None:
        print(f"{time.perf_counter() - self.started:7.3f} s  {text}", file=self.out, flush=True)


class DemoFailed(RuntimeError):
    """A step of the demo did not happen; the message says which and what was seen instead."""


class _JobWatcher:
    """Narrates a job's events as they arrive and lets the demo wait for particular ones."""

    def __init__(self, job: Any, narrator: Narrator) -> None:
        self.job = job
        self.narrator = narrator
        self._changed = asyncio.Event()
        self._audio_reported: set[str] = set()
        job.subscribe(self._on_event)

    def _on_event(self, job: Any, event: Any) -> None:
        line = self._describe(event)
        if line:
            self.narrator.say(line)
        self._changed.set()

    def _describe(self, event: Any) -> str | None:
        kind = event.kind
        if kind == "state":
            return f"job {self.job.id} is {event.state}" + (f" ({event.detail.splitlines()[0]})" if event.detail else "")
        if kind == "entrypoint_started":
            return f"entrypoint started in process {event.pid} ({'warm' if event.warm else 'cold'} process)"
        if kind == "room_connected":
            return f"agent {event.identity!r} connected to room {event.room!r} at {event.url} in {event.seconds * 1000:.0f} ms"
        if kind == "participant" and not event.participant.local:
            p = event.participant
            if event.change == "joined":
                return f"agent sees {p.identity!r} join (kind {p.kind}, attributes {p.attributes})"
            if event.change == "attributes":
                return f"agent sees {p.identity!r} change attributes: {event.changed}"
            if event.change == "left":
                return f"agent sees {p.identity!r} leave"
        if kind == "track" and event.change == "subscribed":
            return f"agent subscribed to the {event.track.kind} track {event.track.sid} of {event.participant_identity!r}"
        if kind == "audio" and event.track_sid not in self._audio_reported and event.frames:
            self._audio_reported.add(event.track_sid)
            return (
                f"agent receives audio from {event.participant_identity!r}: {event.sample_rate} Hz, "
                f"{event.channels} channel(s), {event.samples_per_frame} samples per frame, RMS {event.rms:.2f}"
            )
        if kind == "data":
            return f"agent receives data from {event.sender!r}: {event.text!r}"
        if kind == "log" and event.logger == "demo-agent":
            return f"agent log: {event.message}"
        if kind == "shutdown_started":
            return f"agent shutting down: {event.reason!r}; hooks: {', '.join(event.callbacks) or 'none'}"
        if kind == "callback":
            value = json.dumps(event.value) if event.status == "finished" else (event.error or "").strip().splitlines()[-1:]
            return f"shutdown hook {event.name} {event.status}: {value}"
        if kind == "error":
            return f"error in {event.where}: {event.message}"
        return None

    async def until(self, what: str, condition: Callable[[], bool], timeout: float = STEP_TIMEOUT) -> None:
        """Wait until ``condition()`` holds (checked after every event); fail with ``what`` after ``timeout``."""
        deadline = time.monotonic() + timeout
        while not condition():
            if self.job.done and not condition():
                why = f": {self.job.errors[-1].message}" if self.job.errors else ""
                raise DemoFailed(f"the job ended ({self.job.state}) before {what}{why}")
            self._changed.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DemoFailed(f"timed out after {timeout:g} s waiting until {what} (job state {self.job.state})")
            try:
                await asyncio.wait_for(self._changed.wait(), min(remaining, 1.0))
            except asyncio.TimeoutError:
                pass


async def run_demo(out: TextIO = sys.stdout, room: str | None = None) -> dict[str, Any]:
    """Run the example end to end, narrating to ``out``; returns the job's persisted state or raises DemoFailed."""
    from nbagents import launch, sim

    narrator = Narrator(out)
    room = room or f"nbagents-demo-{secrets.token_hex(3)}"
    job = launch(entrypoint, room=room, shutdown_process_timeout=10.0)
    narrator.say(f"launched job {job.id} in room {room!r}: the documentation's example entrypoint")
    watcher = _JobWatcher(job, narrator)
    try:
        await watcher.until("the agent connected to the room", lambda: job.connected is not None)
        identity = "alice"
        async with sim.join(room, identity, attributes={"user.language": "en"}) as alice:
            narrator.say(f"simulated participant {identity!r} joined with user.language=en")
            await watcher.until(f"the agent saw {identity!r} join", lambda: identity in job.participants)
            played = await alice.play_tone(TONE_HZ, TONE_SECONDS)
            narrator.say(f"{identity!r} spoke a {TONE_HZ:g} Hz tone for {played['seconds']:.2f} s ({played['frames']} frames of 10 ms)")
            await watcher.until(
                f"the agent received audio from {identity!r}",
                lambda: any(t.participant_identity == identity and t.frames for t in job.audio_tracks.values()),
            )
            await alice.set_attributes({"user.language": "fr"})
            narrator.say(f"{identity!r} set user.language=fr")
            packet = await alice.wait_for_data(timeout=STEP_TIMEOUT)
            narrator.say(f"{identity!r} received {packet.text!r} from {packet.sender!r} (topic {packet.topic!r})")
            if packet.text != GREETING:
                raise DemoFailed(f"{identity!r} expected {GREETING!r} from the agent but received {packet.text!r}")
            narrator.say(f"{identity!r} replies {REPLY!r}")
            await alice.send_data(REPLY)
        narrator.say(f"{identity!r} left the room")
        result = await asyncio.wait_for(job.wait(), STEP_TIMEOUT)
    except BaseException:
        if not job.done:
            job.request_stop("the demo failed")
        raise
    narrator.say(f"job ended: {result.state}, shutdown reason {result.shutdown_reason!r}")
    if result.state != "succeeded":
        raise DemoFailed(f"the job ended {result.state}, not succeeded:\n{result.error or ''}")
    state = result.persisted.get("save_state")
    narrator.say(f"persisted by the shutdown hook: {json.dumps(state)}")
    _check_state(state)
    on_disk = Path(job.log_dir)
    files = sorted(p.name for p in on_disk.iterdir()) if on_disk.is_dir() else []
    narrator.say(f"job files in {on_disk}: {', '.join(files) or 'none'}")
    return state


def _check_state(state: Any) -> None:
    if not isinstance(state, dict):
        raise DemoFailed(f"the shutdown hook's state was not persisted (got {state!r})")
    problems = []
    if state.get("first_language") != "en" or state.get("language") != "fr":
        problems.append(f"languages seen {state.get('first_language')!r} -> {state.get('language')!r}, expected 'en' -> 'fr'")
    if state.get("reply") != REPLY:
        problems.append(f"the agent got the reply {state.get('reply')!r}, expected {REPLY!r}")
    if not state.get("audio_frames"):
        problems.append("the agent counted no audio frames")
    hz = state.get("loudest_hz")
    if hz is None or abs(hz - TONE_HZ) > 10:
        problems.append(f"the agent heard {hz} Hz, expected about {TONE_HZ:g} Hz")
    if problems:
        raise DemoFailed("; ".join(problems))


def main(argv: list[str] | None = None) -> int:
    """``nbagents demo``: exit status 0 when every step happened, 1 with the reason otherwise."""
    import argparse

    parser = argparse.ArgumentParser(prog="nbagents demo", description=__doc__)
    parser.add_argument("--room", help="room name (default: a fresh random one)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    print("nbagents demo: an agent, a simulated participant and a room, headless", flush=True)
    try:
        asyncio.run(run_demo(room=args.room))
    except DemoFailed as exc:
        print(f"demo FAILED: {exc}", file=sys.stderr, flush=True)
        return 1
    except Exception as exc:  # noqa: BLE001 - any failure becomes a readable message and exit status 1
        print(f"demo FAILED: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        return 1
    print(f"demo OK in {time.perf_counter() - started:.1f} s", flush=True)
    return 0
