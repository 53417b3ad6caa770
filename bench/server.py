"""Benchmark LiveKit servers through the real SDK; prints one JSON object.

Run inside the project's network namespace:

    scripts/netns .venv/bin/python bench/server.py [--engines embedded,livekit-server]

Per engine it measures
- connect latency: ``rtc.Room.connect`` until it returns, p50/p90 over ``--connects`` fresh participants;
- audio end-to-end latency: the time from handing the first frame of a tone to ``AudioSource.capture_frame``
  until a frame carrying it comes out of another participant's ``AudioStream`` (one process, one clock);
- server CPU per forwarded audio stream with 1, 2, 4 and 8 subscribers: the server process's CPU time (its
  threads' run time in /proc/<pid>/task/*/schedstat, in nanoseconds) over a window, minus the baseline with
  the publisher alone, divided by the number of subscribers;
- server CPU per subscriber of a video stream: a 640x360, 30 frame/s camera (VP8 with two simulcast layers,
  as the SDK publishes it) and 1 and 2 subscribers (each decodes it: more would load the benchmark's own
  process), measured like the audio figure; the subscribers' decoded
  frame rate and received bitrate are reported beside it;
- the scale figure: the largest number of rooms, each with a caller speaking (a continuous tone) and a
  livekit-agents job listening to it (a worker in its own process, dispatched automatically, as in
  production; see bench/scale_agent.py), whose audio all arrives: in every room the job decoded the tone in
  at least ``--scale-arrival`` of the 10 ms frames of a ``--scale-window`` second window. Rooms are added in
  steps (``--scale-steps``) until one fails; the server's CPU, the machine's CPU and the first failing step
  (with what failed) are reported;
- server RSS, and the machine's load average before and after.
With two engines it adds the ratios embedded / livekit-server. The machine is shared and its load swings,
so the engines run side by side and are measured alike: connect samples and audio bursts alternate between
them, and the CPU figures read every server's process over the same windows. Only the scale figure, which
loads the machine to its limit, runs one engine after the other. Each part is bounded in time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from livekit import api, rtc

from nbagents.engines import make_engine

SAMPLE_RATE = 48000
FRAME_SAMPLES = SAMPLE_RATE // 100  # 10 ms frames, the SDK's default
TONE_THRESHOLD = 3000  # int16 peak that only the tone reaches (silence is zeros)
HERE = Path(__file__).resolve().parent
LIVEKIT_SERVER_CONFIG = HERE.parent / "tests" / "livekit-server.yaml"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return round(ordered[index], 2)


def summary(values_ms: list[float]) -> dict[str, Any]:
    return {"p50_ms": percentile(values_ms, 50), "p90_ms": percentile(values_ms, 90), "n": len(values_ms),
            "mean_ms": round(statistics.fmean(values_ms), 2) if values_ms else None}


def cpu_seconds(pid: int) -> float:
    """CPU time of a process, in seconds: the nanosecond run time of each of its threads (/proc/PID/task/*/schedstat).

    /proc/PID/stat counts in 10 ms ticks, too coarse for a stream that costs a tenth of a percent of a core."""
    total = 0
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{task}/schedstat") as f:
                total += int(f.read().split()[0])
    except OSError:
        total = 0
    if total:
        return total / 1e9
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


def machine_busy_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, all cores (from /proc/stat)."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values) - idle) / CLOCK_TICKS, sum(values) / CLOCK_TICKS


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    return 0.0


class Bench:
    def __init__(self, url: str, key: str, secret: str, pid: int | None) -> None:
        self.url, self.key, self.secret, self.pid = url, key, secret, pid
        self._counter = 0

    def token(self, room: str, identity: str | None = None) -> str:
        self._counter += 1
        identity = identity or f"p{self._counter}"
        return (api.AccessToken(self.key, self.secret).with_identity(identity)
                .with_grants(api.VideoGrants(room_join=True, room=room)).to_jwt())

    async def connect(self, room_name: str, **options: Any) -> tuple[rtc.Room, float]:
        room = rtc.Room()
        token = self.token(room_name)
        start = time.perf_counter()
        await room.connect(self.url, token, rtc.RoomOptions(**options))
        return room, (time.perf_counter() - start) * 1000


class TonePublisher:
    """Publishes silence paced by the wall clock, with tone bursts on demand; records each burst's hand-over time."""

    def __init__(self, room: rtc.Room) -> None:
        self.room = room
        self.source = rtc.AudioSource(SAMPLE_RATE, 1, queue_size_ms=50)
        self.tone_until = 0.0
        self.onsets: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        track = rtc.LocalAudioTrack.create_audio_track("bench-tone", self.source)
        await self.room.local_participant.publish_track(
            track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE))
        self._task = asyncio.ensure_future(self._run())

    def burst(self, seconds: float) -> None:
        self.tone_until = -seconds  # the pacing loop starts the burst on its next frame and stamps it

    async def _run(self) -> None:
        silence = rtc.AudioFrame.create(SAMPLE_RATE, 1, FRAME_SAMPLES)
        t = np.arange(FRAME_SAMPLES) / SAMPLE_RATE
        tone = rtc.AudioFrame.create(SAMPLE_RATE, 1, FRAME_SAMPLES)
        np.copyto(np.frombuffer(tone.data, dtype=np.int16), (20000 * np.sin(2 * np.pi * 1000 * t)).astype(np.int16))
        next_at = time.perf_counter()
        while True:
            now = time.perf_counter()
            if self.tone_until < 0:
                self.tone_until = now - self.tone_until
                self.onsets.append(now)
            await self.source.capture_frame(tone if now < self.tone_until else silence)
            next_at += 0.01
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()


async def first_tone_frames(track: rtc.Track, detections: list[float], stop: asyncio.Event) -> None:
    """Append the arrival time of the first loud frame of each burst to ``detections``."""
    stream = rtc.AudioStream(track, sample_rate=SAMPLE_RATE, num_channels=1)
    in_tone = False
    try:
        async for event in stream:
            now = time.perf_counter()
            loud = int(np.abs(np.frombuffer(event.frame.data, dtype=np.int16)).max()) > TONE_THRESHOLD
            if loud and not in_tone:
                detections.append(now)
            in_tone = loud
            if stop.is_set():
                break
    finally:
        await stream.aclose()


async def subscribed_track(room: rtc.Room, timeout: float = 20.0) -> rtc.Track:
    for _ in range(int(timeout / 0.05)):
        for participant in room.remote_participants.values():
            for publication in participant.track_publications.values():
                if publication.track is not None and publication.kind == rtc.TrackKind.KIND_AUDIO:
                    return publication.track
        await asyncio.sleep(0.05)
    raise TimeoutError("no audio track was subscribed")


async def connect_latency(benches: dict[str, Bench], count: int) -> dict[str, dict[str, Any]]:
    """Connect latency, one engine after the other for each sample (the machine's load hits both alike)."""
    samples: dict[str, list[float]] = {name: [] for name in benches}
    for _ in range(count):
        for name, bench in benches.items():
            room, ms = await bench.connect("bench-connect")
            samples[name].append(ms)
            await room.disconnect()
    return {name: summary(values) for name, values in samples.items()}


async def audio_latency(benches: dict[str, Bench], bursts: int) -> dict[str, dict[str, Any]]:
    """End-to-end audio latency; each round plays one burst through every engine in turn."""
    pairs: dict[str, tuple[rtc.Room, TonePublisher, rtc.Room, rtc.Track, list[float], asyncio.Future[None]]] = {}
    stop = asyncio.Event()
    for name, bench in benches.items():
        publisher_room, _ = await bench.connect("bench-latency")
        publisher = TonePublisher(publisher_room)
        await publisher.start()
        listener, _ = await bench.connect("bench-latency")
        track = await subscribed_track(listener)
        detections: list[float] = []
        listening = asyncio.ensure_future(first_tone_frames(track, detections, stop))
        pairs[name] = (publisher_room, publisher, listener, track, detections, listening)
    await asyncio.sleep(1.0)  # let the jitter buffers settle on silence
    latencies: dict[str, list[float]] = {name: [] for name in benches}
    for _ in range(bursts):
        for name, (_, publisher, _, _, detections, _) in pairs.items():
            before = len(detections)
            publisher.burst(0.2)
            deadline = time.perf_counter() + 2.0
            while len(detections) == before and time.perf_counter() < deadline:
                await asyncio.sleep(0.005)
            if len(detections) > before:
                latencies[name].append((detections[-1] - publisher.onsets[-1]) * 1000)
            await asyncio.sleep(0.4)
    stop.set()
    results = {}
    for name, (publisher_room, publisher, listener, track, _, listening) in pairs.items():
        buffer = await jitter_buffer(track)
        await publisher.stop()
        listening.cancel()
        await listener.disconnect()
        await publisher_room.disconnect()
        results[name] = {**summary(latencies[name]), "missed": bursts - len(latencies[name]), **buffer}
    return results


async def jitter_buffer(track: rtc.Track) -> dict[str, Any]:
    """The listener's jitter buffer over the test (WebRTC statistics): how much of the latency waits there.

    ``jitter_buffer_ms`` is the mean time a sample spent in it, ``jitter_buffer_target_ms`` the mean delay it
    aimed at; both grow with how irregularly packets arrive, which is what a relay adds besides its own time.
    """
    for stats in await track.get_stats():
        if stats.WhichOneof("stats") == "inbound_rtp":
            inbound = stats.inbound_rtp.inbound
            emitted = inbound.jitter_buffer_emitted_count
            if emitted:
                return {"jitter_buffer_ms": round(inbound.jitter_buffer_delay / emitted * 1000, 1),
                        "jitter_buffer_target_ms": round(inbound.jitter_buffer_target_delay / emitted * 1000, 1),
                        "concealed_pct": round(100 * inbound.concealed_samples / max(1, inbound.total_samples_received), 2)}
    return {}


class CpuMeter:
    """Server CPU of every engine over the same window (each from its own process): one load for all."""

    def __init__(self, benches: dict[str, Bench]) -> None:
        self.pids = {name: bench.pid for name, bench in benches.items() if bench.pid is not None}

    async def measure(self, window: float, settle: float = 1.0) -> dict[str, float]:
        await asyncio.sleep(settle)
        start = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        started = time.perf_counter()
        await asyncio.sleep(window)
        elapsed = time.perf_counter() - started
        return {name: (cpu_seconds(pid) - start[name]) / elapsed * 100 for name, pid in self.pids.items()}


async def forwarding_cpu(benches: dict[str, Bench], counts: list[int], window: float) -> dict[str, dict[str, Any]]:
    """Server CPU per forwarded audio stream: one publisher per engine, subscribers added in steps, all engines
    measured over the same windows."""
    meter = CpuMeter(benches)
    publishers: dict[str, tuple[rtc.Room, TonePublisher]] = {}
    for name in meter.pids:
        room, _ = await benches[name].connect("bench-cpu")
        publisher = TonePublisher(room)
        await publisher.start()
        publisher.burst(10**6)  # a continuous tone: every packet carries audio (no DTX)
        publishers[name] = (room, publisher)
    baseline = await meter.measure(window)
    results: dict[str, dict[str, Any]] = {
        name: {"baseline_pct": round(baseline[name], 2), "window_s": window, "per_stream_pct": {}, "total_pct": {}}
        for name in meter.pids}
    subscribers: dict[str, list[rtc.Room]] = {name: [] for name in meter.pids}
    for count in counts:
        for name in meter.pids:
            while len(subscribers[name]) < count:
                room, _ = await benches[name].connect("bench-cpu")
                await subscribed_track(room)
                subscribers[name].append(room)
        total = await meter.measure(window)
        for name in meter.pids:
            results[name]["total_pct"][str(count)] = round(total[name], 2)
            results[name]["per_stream_pct"][str(count)] = round((total[name] - baseline[name]) / count, 3)
    for name, (room, publisher) in publishers.items():
        results[name]["rss_mb_with_subscribers"] = rss_mb(meter.pids[name])
        await publisher.stop()
        for subscriber in subscribers[name]:
            await subscriber.disconnect()
        await room.disconnect()
    return results


# --- video


def camera_frames(width: int, height: int, count: int = 30) -> list[rtc.VideoFrame]:
    """A moving picture (a gradient sliding across, a bright bar and a little noise): encoders spend real bits on it."""
    rng = np.random.default_rng(1)
    x = np.arange(width, dtype=np.int32)
    frames = []
    for i in range(count):
        rgba = np.zeros((height, width, 4), dtype=np.uint8)
        rgba[:, :, 0] = ((x + 8 * i) % 256)[None, :]
        rgba[:, :, 1] = (np.arange(height)[:, None] * 255 // height)
        rgba[:, :, 2] = 128
        bar = (i * width // count)
        rgba[:, bar:bar + width // 10, :3] = 240
        rgba[: height // 4, : width // 4, :3] = rng.integers(0, 256, (height // 4, width // 4, 3), dtype=np.uint8)
        rgba[:, :, 3] = 255
        frames.append(rtc.VideoFrame(width, height, rtc.VideoBufferType.RGBA, rgba.tobytes()))
    return frames


class CameraPublisher:
    """Publishes a 30 frame/s moving picture, paced by the wall clock."""

    def __init__(self, room: rtc.Room, width: int = 640, height: int = 360, fps: int = 30) -> None:
        self.room, self.fps = room, fps
        self.source = rtc.VideoSource(width, height)
        self.frames = camera_frames(width, height)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        track = rtc.LocalVideoTrack.create_video_track("bench-camera", self.source)
        await self.room.local_participant.publish_track(
            track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_CAMERA))
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        next_at = time.perf_counter()
        for i in range(1 << 62):
            self.source.capture_frame(self.frames[i % len(self.frames)])
            next_at += 1 / self.fps
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()


async def subscribed_video(room: rtc.Room, timeout: float = 20.0) -> rtc.Track:
    for _ in range(int(timeout / 0.05)):
        for participant in room.remote_participants.values():
            for publication in participant.track_publications.values():
                if publication.track is not None and publication.kind == rtc.TrackKind.KIND_VIDEO:
                    return publication.track
        await asyncio.sleep(0.05)
    raise TimeoutError("no video track was subscribed")


async def inbound_video(track: rtc.Track) -> tuple[int, int]:
    """(frames decoded, bytes received) of a subscribed video track, from the SDK's WebRTC statistics."""
    for stats in await track.get_stats():
        if stats.WhichOneof("stats") == "inbound_rtp":
            return stats.inbound_rtp.inbound.frames_decoded, stats.inbound_rtp.inbound.bytes_received
    return 0, 0


async def video_cpu(benches: dict[str, Bench], counts: list[int], window: float) -> dict[str, dict[str, Any]]:
    """Server CPU per subscriber of one video stream, all engines measured over the same windows."""
    meter = CpuMeter(benches)
    cameras: dict[str, tuple[rtc.Room, CameraPublisher]] = {}
    for name in meter.pids:
        room, _ = await benches[name].connect("bench-video")
        camera = CameraPublisher(room)
        await camera.start()
        cameras[name] = (room, camera)
    settle = 2.0  # encoders ramp up, subscribers start on a keyframe
    baseline = await meter.measure(window, settle)
    results: dict[str, dict[str, Any]] = {
        name: {"publisher": "640x360 VP8, 30 frame/s, simulcast (the SDK's default layers)",
               "baseline_pct": round(baseline[name], 2), "window_s": window, "per_subscriber_pct": {},
               "total_pct": {}, "subscriber_fps": {}, "subscriber_kbps": {}}
        for name in meter.pids}
    subscribers: dict[str, list[tuple[rtc.Room, rtc.Track]]] = {name: [] for name in meter.pids}
    for count in counts:
        for name in meter.pids:
            while len(subscribers[name]) < count:
                room, _ = await benches[name].connect("bench-video")
                subscribers[name].append((room, await subscribed_video(room)))
        await asyncio.sleep(settle)
        before = {name: [await inbound_video(track) for _, track in subs] for name, subs in subscribers.items()}
        start = time.perf_counter()
        total = await meter.measure(window, 0.0)
        elapsed = time.perf_counter() - start
        for name, subs in subscribers.items():
            after = [await inbound_video(track) for _, track in subs]
            out = results[name]
            out["total_pct"][str(count)] = round(total[name], 2)
            out["per_subscriber_pct"][str(count)] = round((total[name] - baseline[name]) / count, 3)
            out["subscriber_fps"][str(count)] = round(statistics.fmean(
                (a[0] - b[0]) / elapsed for a, b in zip(after, before[name])), 1)
            out["subscriber_kbps"][str(count)] = round(statistics.fmean(
                (a[1] - b[1]) * 8 / 1000 / elapsed for a, b in zip(after, before[name])), 0)
    for name, (room, camera) in cameras.items():
        await camera.stop()
        for subscriber, _ in subscribers[name]:
            await subscriber.disconnect()
        await room.disconnect()
    return results


# --- scale


class Caller:
    """A caller in its own room: publishes a continuous tone in 100 ms frames (few calls: many callers share a process)."""

    FRAME = SAMPLE_RATE // 10

    def __init__(self, bench: Bench, room_name: str) -> None:
        self.bench, self.room_name = bench, room_name
        self.room: rtc.Room | None = None
        self.source = rtc.AudioSource(SAMPLE_RATE, 1, queue_size_ms=300)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.room, _ = await self.bench.connect(self.room_name)
        track = rtc.LocalAudioTrack.create_audio_track("caller", self.source)
        await self.room.local_participant.publish_track(
            track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE))
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        frame = rtc.AudioFrame.create(SAMPLE_RATE, 1, self.FRAME)
        t = np.arange(self.FRAME) / SAMPLE_RATE
        np.copyto(np.frombuffer(frame.data, dtype=np.int16), (12000 * np.sin(2 * np.pi * 500 * t)).astype(np.int16))
        while True:
            await self.source.capture_frame(frame)  # returns as the source drains in real time

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self.room is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.room.disconnect(), 10)


def read_reports(out: Path, rooms: list[str]) -> dict[str, dict[str, Any]]:
    reports = {}
    for room in rooms:
        with contextlib.suppress(OSError, ValueError):
            reports[room] = json.loads((out / f"{room}.json").read_text())
    return reports


async def scale(bench: Bench, url: str, args: argparse.Namespace) -> dict[str, Any]:
    """Add rooms (caller + agent job) step by step; the largest step at which every room's audio arrives."""
    if bench.pid is None:
        return {"error": "the engine does not expose its server process id"}
    out = Path(tempfile.mkdtemp(prefix="nbagents-scale-"))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
               LIVEKIT_AGENTS_PRELOAD_LOCAL_INFERENCE="0")
    worker = subprocess.Popen([sys.executable, str(HERE / "scale_agent.py"), url, bench.key, bench.secret, str(out)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=open(os.environ.get("NBAGENTS_SCALE_WORKER_LOG", os.devnull), "w"), env=env,
                              text=True)
    callers: list[Caller] = []
    steps: list[dict[str, Any]] = []
    result: dict[str, Any] = {"criterion": f"every room's job decoded the caller's tone in >= {args.scale_arrival:.0%} "
                                           f"of the 10 ms frames of a {args.scale_window:.0f} s window",
                              "steps": steps}
    try:
        line = await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(None, worker.stdout.readline), 120)
        if line.strip() != "ready":
            return {"error": f"the agent worker did not start ({line!r})"}
        for target in args.scale_steps:
            step: dict[str, Any] = {"rooms": target}
            steps.append(step)
            started = time.perf_counter()
            deadline = started + args.scale_setup
            try:
                while len(callers) < target:
                    caller = Caller(bench, f"scale-{len(callers)}")
                    callers.append(caller)
                    await asyncio.wait_for(caller.start(), max(1.0, deadline - time.perf_counter()))
            except asyncio.TimeoutError:
                step["ok"] = False
                step["failed"] = f"{target - len(callers) + 1} caller(s) could not join within {args.scale_setup:.0f} s"
                break
            rooms = [c.room_name for c in callers]
            while len(read_reports(out, rooms)) < len(rooms) and time.perf_counter() < deadline:
                await asyncio.sleep(0.5)
            listening = read_reports(out, rooms)
            step["setup_s"] = round(time.perf_counter() - started, 1)
            if len(listening) < len(rooms):
                step["ok"] = False
                step["failed"] = f"{len(rooms) - len(listening)} job(s) not listening {args.scale_setup:.0f} s after " \
                                 "the step began"
                break
            await asyncio.sleep(2.0)  # let every room settle
            before, cpu0, machine0, t0 = read_reports(out, rooms), cpu_seconds(bench.pid), machine_busy_seconds(), \
                time.perf_counter()
            await asyncio.sleep(args.scale_window)
            after, cpu1, machine1, t1 = read_reports(out, rooms), cpu_seconds(bench.pid), machine_busy_seconds(), \
                time.perf_counter()
            arrived = {}
            for room in rooms:
                a, b = after.get(room), before.get(room)
                if a is None or b is None or a["t"] <= b["t"]:
                    arrived[room] = 0.0
                    continue
                arrived[room] = (a["loud"] - b["loud"]) / ((a["t"] - b["t"]) * 100)
            worst = min(arrived, key=arrived.get)
            step["server_cpu_pct"] = round((cpu1 - cpu0) / (t1 - t0) * 100, 1)
            step["machine_cpu_pct"] = round((machine1[0] - machine0[0]) / (machine1[1] - machine0[1]) * 100, 1)
            step["worst_room_arrival"] = round(arrived[worst], 3)
            step["rooms_below_criterion"] = sum(1 for v in arrived.values() if v < args.scale_arrival)
            step["ok"] = step["rooms_below_criterion"] == 0
            if not step["ok"]:
                break
        passing = [s for s in steps if s.get("ok")]
        result["max_rooms"] = passing[-1]["rooms"] if passing else 0
        result["server_cpu_pct_at_max"] = passing[-1]["server_cpu_pct"] if passing else None
        result["machine_cpu_pct_at_max"] = passing[-1]["machine_cpu_pct"] if passing else None
        failing = [s for s in steps if not s.get("ok")]
        result["first_failing_step"] = failing[0] if failing else "none: every step passed (raise --scale-steps)"
        result["rss_mb"] = rss_mb(bench.pid)
        return result
    finally:
        for caller in callers:
            await caller.stop()
        with contextlib.suppress(Exception):
            worker.stdin.close()
        try:
            await asyncio.get_running_loop().run_in_executor(None, worker.wait, 30)
        except subprocess.TimeoutExpired:
            worker.kill()
        if not os.environ.get("NBAGENTS_SCALE_KEEP"):
            shutil.rmtree(out, ignore_errors=True)
        else:
            print("scale reports kept in", out, file=sys.stderr)


def engine_options(name: str) -> dict[str, Any]:
    if name == "livekit-server" and LIVEKIT_SERVER_CONFIG.exists():
        return {"config_file": str(LIVEKIT_SERVER_CONFIG)}
    return {}


async def part(name: str, coro: Any, budget: float) -> Any:
    """One part of the benchmark, bounded in time; a failure is reported in its place, and the run goes on."""
    try:
        return await asyncio.wait_for(coro, budget)
    except asyncio.TimeoutError:
        return {"error": f"{name}: over its budget of {budget:.0f} s"}
    except Exception as exc:
        return {"error": f"{name}: {type(exc).__name__}: {exc}"}


async def run_engines(args: argparse.Namespace, engines: dict[str, Any]) -> dict[str, dict[str, Any]]:
    benches: dict[str, Bench] = {}
    out: dict[str, dict[str, Any]] = {}
    for name, engine in engines.items():
        url, key, secret = engine.credentials
        benches[name] = Bench(url, key, secret, getattr(engine, "pid", None))
        out[name] = {"rss_mb_idle": rss_mb(benches[name].pid) if benches[name].pid else None}
    await part("warm-up", connect_latency(benches, 2), args.budget)  # first-use costs on both sides

    def spread(name: str, results: Any) -> None:
        for engine in engines:
            out[engine][name] = results.get(engine, results) if isinstance(results, dict) and "error" not in results \
                else results

    spread("connect", await part("connect", connect_latency(benches, args.connects), args.budget))
    spread("audio_e2e", await part("audio_e2e", audio_latency(benches, args.bursts), args.budget))
    spread("cpu", await part("cpu", forwarding_cpu(benches, args.subscribers, args.window), args.budget))
    if args.video_subscribers:
        spread("video", await part("video", video_cpu(benches, args.video_subscribers, args.window), args.budget))
    for name, bench in benches.items():
        out[name]["rss_mb_end"] = rss_mb(bench.pid) if bench.pid else None
    if args.scale_steps:  # one engine at a time: each step loads the machine to its limit
        for name, bench in benches.items():
            out[name]["scale"] = await part(f"scale ({name})", scale(bench, bench.url, args), args.scale_budget)
    return out


def ratios(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    def ratio(x: float | None, y: float | None) -> float | None:
        return round(x / y, 2) if x is not None and y else None

    out = {"connect_p50": ratio(a.get("connect", {}).get("p50_ms"), b.get("connect", {}).get("p50_ms")),
           "audio_e2e_p50": ratio(a.get("audio_e2e", {}).get("p50_ms"), b.get("audio_e2e", {}).get("p50_ms")),
           "audio_e2e_mean": ratio(a.get("audio_e2e", {}).get("mean_ms"), b.get("audio_e2e", {}).get("mean_ms")),
           "rss_mb_end": ratio(a.get("rss_mb_end"), b.get("rss_mb_end"))}
    per_a, per_b = a.get("cpu", {}).get("per_stream_pct", {}), b.get("cpu", {}).get("per_stream_pct", {})
    out["cpu_per_stream"] = {n: ratio(per_a.get(n), per_b.get(n)) for n in per_a}
    video_a, video_b = a.get("video", {}).get("per_subscriber_pct", {}), b.get("video", {}).get("per_subscriber_pct", {})
    if video_a and video_b:
        out["video_cpu_per_subscriber"] = {n: ratio(video_a.get(n), video_b.get(n)) for n in video_a}
    if "max_rooms" in a.get("scale", {}) and "max_rooms" in b.get("scale", {}):
        out["scale_max_rooms"] = ratio(a["scale"]["max_rooms"], b["scale"]["max_rooms"])
    return out


async def run(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {"sdk": rtc.__version__, "cores": os.cpu_count(),
                              "load_average_before": [round(v, 2) for v in os.getloadavg()], "engines": {}}
    engines: dict[str, Any] = {}
    try:
        for name in args.engines:
            try:
                engine = make_engine(name, **engine_options(name))
                engine.start()
                engines[name] = engine
            except Exception as exc:  # report it and go on with the others
                result["engines"][name] = {"error": f"{type(exc).__name__}: {exc}"}
        result["engines"].update(await run_engines(args, engines))
    finally:
        for engine in engines.values():
            engine.stop()
    found = result["engines"]
    if all(name in found and "error" not in found[name] for name in ("embedded", "livekit-server")):
        result["ratio_embedded_over_livekit_server"] = ratios(found["embedded"], found["livekit-server"])
    result["load_average_after"] = [round(v, 2) for v in os.getloadavg()]
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engines", default="embedded", type=lambda s: [e for e in s.split(",") if e],
                        help="comma-separated engines (embedded, livekit-server)")
    parser.add_argument("--connects", type=int, default=20)
    parser.add_argument("--bursts", type=int, default=15)
    parser.add_argument("--subscribers", default="1,2,4,8", type=lambda s: [int(n) for n in s.split(",")])
    parser.add_argument("--window", type=float, default=6.0, help="seconds of CPU measurement per step")
    parser.add_argument("--video-subscribers", default="1,2", type=lambda s: [int(n) for n in s.split(",") if n],
                        help="subscriber counts for the video figure ('' skips it)")
    parser.add_argument("--budget", type=float, default=300.0, help="seconds allowed for each part (connect, audio, ...)")
    parser.add_argument("--scale-steps", default="4,6,8,10,12,14,16,20,24,28,32,40,48,64",
                        type=lambda s: [int(n) for n in s.split(",") if n],
                        help="room counts tried in turn for the scale figure ('' skips it)")
    parser.add_argument("--scale-window", type=float, default=5.0, help="seconds of listening per step")
    parser.add_argument("--scale-arrival", type=float, default=0.95,
                        help="share of 10 ms frames that must carry the tone in every room")
    parser.add_argument("--scale-setup", type=float, default=120.0,
                        help="seconds for a step's new callers to join and its new jobs to start listening")
    parser.add_argument("--scale-budget", type=float, default=900.0, help="seconds allowed for each engine's scale figure")
    args = parser.parse_args()
    if os.environ.get("NBAGENTS_NETNS") != "1":
        print("bench/server.py opens WebRTC connections: run it as scripts/netns .venv/bin/python bench/server.py",
              file=sys.stderr)
        return 2
    print(json.dumps(asyncio.run(run(args)), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
