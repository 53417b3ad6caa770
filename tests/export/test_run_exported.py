"""Exported notebooks run as real livekit-agents 1.8 workers: a LiveKit server dispatches a job to the
script (`python agent.py start`), a real participant (a plain ``livekit`` client) receives what the
entrypoint publishes, and the shutdown hooks run once the participant has left and the room closed.

Runs against every engine the session selects (both dispatch jobs over the worker protocol at /agent).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from livekit import api, rtc

from nbagents.export import ExportError, export_notebook

ROOT = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT = 90.0  # a loaded 2-core machine: the worker imports livekit-agents and starts its forkserver
EVENT_TIMEOUT = 60.0

# The exported script runs unchanged in livekit-agents' production mode (`start`), except for the load its
# worker reports: this suite keeps the machine's CPU busy on purpose, and a loaded worker is turned away
# (tests/unloaded_worker.py says how and why). A user running the exported script with `start` on a busy
# machine meets those rules: the README says so.
UNLOADED_WORKER = str(ROOT / "tests" / "unloaded_worker.py")


@dataclass(frozen=True)
class Expect:
    """What a notebook's agent does that a participant and the worker's output can observe."""

    data: str | None = None  # the payload the entrypoint publishes
    topic: str | None = None
    hook_line: str | None = None  # a line a shutdown hook prints
    hears_audio: bool = False  # the hook line reports "heard N audio frames" with N > 0
    attributes: dict[str, str] | None = None  # the participant's attributes when it joins
    then_set: dict[str, str] | None = None  # attributes it sets once the agent is in the room
    reply: str | None = None  # what it sends back after receiving the agent's data
    subscribes: bool = True  # the agent subscribes to the participant's microphone (auto_subscribe audio)


# Keyed by the notebook's path under the repository. A notebook not listed here still has to get a job
# dispatched, its agent has to join the room and its job has to end once the participant has left.
EXPECTATIONS = {
    "notebooks/quickstart.ipynb": Expect(data="hello world", hook_line="shutdown hook: heard", hears_audio=True),
    "tests/export/notebooks/greeter.ipynb": Expect(
        data="hello from greeter", topic="greeting", hook_line="shutdown hook: room"
    ),
    "tests/notebooks/serve.ipynb": Expect(data="hello alice", topic="greeting", subscribes=False),
    "tests/notebooks/quickstart.ipynb": Expect(
        data="hello world", attributes={"user.language": "en"}, then_set={"user.language": "fr"}, reply="thanks!"
    ),
}


def exportable_notebooks() -> list[Path]:
    """notebooks/*.ipynb and every notebook under tests/ that has an entrypoint."""
    found = sorted((ROOT / "notebooks").glob("*.ipynb"))
    for path in sorted((ROOT / "tests").rglob("*.ipynb")):
        if ".ipynb_checkpoints" in path.parts:
            continue
        try:
            export_notebook(path)
        except ExportError:
            continue  # fixtures without an entrypoint (or deliberately broken ones) are not agents
        found.append(path)
    return found


def dispatch_modes(path: Path) -> list[str]:
    """Automatic dispatch for agents without agent_name; token and API dispatch for named agents."""
    return ["token", "api"] if export_notebook(path).options["agent_name"] else ["automatic"]


CASES = [
    pytest.param(path, mode, id=f"{path.relative_to(ROOT)}-{mode}")
    for path in exportable_notebooks()
    for mode in dispatch_modes(path)
]


class WorkerOutput:
    """The worker's combined stdout/stderr, read line by line while the test waits for particular lines."""

    def __init__(self, stream: asyncio.StreamReader) -> None:
        self.lines: list[tuple[float, str]] = []
        self._changed = asyncio.Event()
        self._task = asyncio.create_task(self._read(stream))

    async def _read(self, stream: asyncio.StreamReader) -> None:
        async for raw in stream:
            self.lines.append((time.time(), raw.decode("utf-8", "replace").rstrip()))
            self._changed.set()
        self._changed.set()

    def find(self, pattern: str) -> tuple[float, str] | None:
        return next(((t, line) for t, line in self.lines if re.search(pattern, line)), None)

    async def wait_for(self, pattern: str, *, timeout: float, fail_on: str | None = None) -> tuple[float, str]:
        deadline = time.monotonic() + timeout
        while True:
            hit = self.find(pattern)
            if hit:
                return hit
            if fail_on and (bad := self.find(fail_on)):
                raise AssertionError(f"the worker reported {bad[1]!r} while the test waited for /{pattern}/:\n{self.tail()}")
            if self._task.done():
                raise AssertionError(f"the worker exited before printing /{pattern}/:\n{self.tail()}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no line matching /{pattern}/ within {timeout:.0f} s:\n{self.tail()}")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), min(remaining, 1.0))
            except asyncio.TimeoutError:
                pass

    def tail(self, n: int = 40) -> str:
        return "\n".join(line[:400] for _, line in self.lines[-n:])

    def message(self, line: str) -> str:
        try:
            return json.loads(line).get("message", line)
        except ValueError:
            return line


async def _play_tone(source: rtc.AudioSource, stop: asyncio.Event) -> None:
    """A 440 Hz tone in 10 ms frames, paced by the source's own queue, until ``stop`` is set."""
    n = 0
    while not stop.is_set():
        t = (np.arange(480) + n * 480) / 48000
        samples = (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16)
        await source.capture_frame(rtc.AudioFrame(samples.tobytes(), 48000, 1, 480))
        n += 1


def _participant_token(server, room: str, identity: str, agent_name: str, mode: str, attributes: dict | None) -> str:
    config = api.RoomConfiguration(departure_timeout=1, empty_timeout=10)
    if mode == "token":
        config.agents.append(api.RoomAgentDispatch(agent_name=agent_name, metadata="from the token"))
    return (
        api.AccessToken(server.api_key, server.api_secret)
        .with_identity(identity)
        .with_grants(api.VideoGrants(room_join=True, room=room, can_update_own_metadata=True))
        .with_room_config(config)
        .with_attributes(attributes or {})
        .to_jwt()
    )


@pytest.mark.timeout(300)
@pytest.mark.parametrize(("notebook", "mode"), CASES)
async def test_exported_script_runs_as_a_livekit_agents_worker(lk_server, notebook: Path, mode: str, tmp_path, capsys):
    exported = export_notebook(notebook)
    expect = EXPECTATIONS.get(str(notebook.relative_to(ROOT)), Expect())
    agent_name = exported.options["agent_name"]
    script = tmp_path / "agent.py"
    script.write_text(exported.source)
    assert lk_server.api_secret not in exported.source

    env = dict(
        os.environ,
        LIVEKIT_URL=lk_server.url,
        LIVEKIT_API_KEY=lk_server.api_key,
        LIVEKIT_API_SECRET=lk_server.api_secret,
        PYTHONUNBUFFERED="1",
    )
    started = time.time()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, UNLOADED_WORKER, str(script), "start",
        cwd=tmp_path, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
    )
    out = WorkerOutput(proc.stdout)
    room_name = f"export-{uuid.uuid4().hex[:8]}"
    room = rtc.Room()
    try:
        registered_at, _ = await out.wait_for(
            r'"registered worker"', timeout=STARTUP_TIMEOUT, fail_on=r"failed to connect to livekit"
        )
        if agent_name:
            assert f'"agent_name": "{agent_name}"' in out.find(r'"registered worker"')[1]

        received: asyncio.Queue[rtc.DataPacket] = asyncio.Queue()
        room.on("data_received", received.put_nowait)
        agent_joined = asyncio.get_running_loop().create_future()

        def on_participant_connected(participant: rtc.RemoteParticipant) -> None:
            if participant.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT and not agent_joined.done():
                agent_joined.set_result(participant)

        room.on("participant_connected", on_participant_connected)
        track_subscribed = asyncio.Event()  # an agent subscribed to the participant's microphone
        room.on("local_track_subscribed", lambda *_: track_subscribed.set())
        joined_at = time.time()
        token = _participant_token(lk_server, room_name, "alice", agent_name, mode, expect.attributes)
        await room.connect(lk_server.url, token)
        if mode == "api":
            async with api.LiveKitAPI(lk_server.http_url, lk_server.api_key, lk_server.api_secret) as lkapi:
                dispatch = await lkapi.agent_dispatch.create_dispatch(
                    api.CreateAgentDispatchRequest(agent_name=agent_name, room=room_name, metadata="from the API")
                )
                listed = await lkapi.agent_dispatch.list_dispatch(room_name=room_name)
                assert dispatch.id in [d.id for d in listed]

        stop_tone = asyncio.Event()
        source = rtc.AudioSource(48000, 1)
        await room.local_participant.publish_track(rtc.LocalAudioTrack.create_audio_track("microphone", source))
        tone = asyncio.create_task(_play_tone(source, stop_tone))

        request_at, request_line = await out.wait_for(rf'"received job request".*"room": "{room_name}"', timeout=EVENT_TIMEOUT)
        agent = await asyncio.wait_for(agent_joined, EVENT_TIMEOUT)  # the entrypoint ran ctx.connect()
        if expect.data is None and expect.subscribes:
            # The agent being announced does not mean its connect() has returned: leaving now could leave it
            # waiting for a participant that is already gone. Its subscription to the microphone says it is in.
            await asyncio.wait_for(track_subscribed.wait(), EVENT_TIMEOUT)
        if expect.then_set:  # once the agent listens (its handlers are registered by the time it subscribes)
            await asyncio.wait_for(track_subscribed.wait(), EVENT_TIMEOUT)
            await room.local_participant.set_attributes(expect.then_set)
        if expect.data is not None:
            packet = await asyncio.wait_for(received.get(), EVENT_TIMEOUT)
            assert packet.data.decode() == expect.data
            if expect.topic is not None:
                assert packet.topic == expect.topic
        if expect.reply is not None:
            await room.local_participant.publish_data(expect.reply, reliable=True, destination_identities=[agent.identity])
        hello_at = time.time()
        entry = out.find(r"entrypoint started at")
        entry_at = float(re.search(r"at ([\d.]+)", entry[1]).group(1)) if entry else None
        if expect.hears_audio:  # keep talking for a second after the greeting: the agent is listening by now
            await asyncio.sleep(1.0)
        stop_tone.set()
        await tone
        await room.disconnect()
        left_at = time.time()

        if expect.hook_line:
            _, hook = await out.wait_for(re.escape(expect.hook_line), timeout=EVENT_TIMEOUT)
            if expect.hears_audio:
                frames = int(re.search(r"heard (\d+) audio frames", hook).group(1))
                assert frames > 0, hook
                assert "alice" in hook
            if "room" in expect.hook_line:
                assert room_name in hook
        _, exiting = await out.wait_for(rf'"process exiting".*"room": "{room_name}"', timeout=EVENT_TIMEOUT)

        timings = {
            "notebook": str(notebook.relative_to(ROOT)),
            "dispatch": mode,
            "engine": lk_server.engine,
            "start_to_registered_s": round(registered_at - started, 3),
            "join_to_job_request_s": round(request_at - joined_at, 3),
            "start_to_first_entrypoint_s": round((entry_at or hello_at) - started, 3),
            "entrypoint_measured_by": "its first line" if entry_at else (
                "the participant receiving its data (upper bound)" if expect.data else "the agent joining the room (upper bound)"
            ),
            "participant_left_to_hook_s": round(time.time() - left_at, 3),
        }
        with capsys.disabled():
            print(f"\nexported worker timings: {json.dumps(timings)}")
    finally:
        if room.isconnected():
            await room.disconnect()
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)  # the worker drains (no jobs left) and exits
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except asyncio.TimeoutError:
                os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
    assert proc.returncode == 0, out.tail()
    assert out.find(r"Traceback") is None, out.tail()
