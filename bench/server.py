"""Benchmark LiveKit servers through the real SDK; prints one JSON object.

Run inside the project's network namespace:

    scripts/netns .venv/bin/python bench/server.py [--engines embedded,livekit-server]

Per engine it measures
- connect latency: ``rtc.Room.connect`` until it returns, p50/p90 over ``--connects`` fresh participants;
- audio end-to-end latency: the time from handing the first frame of a tone to ``AudioSource.capture_frame``
  until a frame carrying it comes out of another participant's ``AudioStream`` (one process, one clock);
- server CPU per forwarded audio stream with 1, 2, 4 and 8 subscribers, from the server process's
  /proc/<pid>/stat, minus the baseline with the publisher alone, divided by the number of subscribers
  (the kernel counts CPU time in 10 ms ticks: over a 6 s window one tick is ~0.17 % of a core);
- server RSS.
With two engines it adds the ratios embedded / livekit-server. The whole run is bounded (``--budget``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from livekit import api, rtc

from nbagents.engines import make_engine

SAMPLE_RATE = 48000
FRAME_SAMPLES = SAMPLE_RATE // 100  # 10 ms frames, the SDK's default
TONE_THRESHOLD = 3000  # int16 peak that only the tone reaches (silence is zeros)
LIVEKIT_SERVER_CONFIG = Path(__file__).resolve().parents[1] / "tests" / "livekit-server.yaml"
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
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


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

    async def connect_latency(self, count: int) -> dict[str, Any]:
        samples = []
        for _ in range(count):
            room, ms = await self.connect("bench-connect")
            samples.append(ms)
            await room.disconnect()
        return summary(samples)


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


async def audio_latency(bench: Bench, bursts: int) -> dict[str, Any]:
    publisher_room, _ = await bench.connect("bench-latency")
    publisher = TonePublisher(publisher_room)
    await publisher.start()
    listener, _ = await bench.connect("bench-latency")
    track = await subscribed_track(listener)
    detections: list[float] = []
    stop = asyncio.Event()
    listening = asyncio.ensure_future(first_tone_frames(track, detections, stop))
    await asyncio.sleep(1.0)  # let the jitter buffers settle on silence
    latencies = []
    for _ in range(bursts):
        before = len(detections)
        publisher.burst(0.2)
        deadline = time.perf_counter() + 2.0
        while len(detections) == before and time.perf_counter() < deadline:
            await asyncio.sleep(0.005)
        if len(detections) > before:
            latencies.append((detections[-1] - publisher.onsets[-1]) * 1000)
        await asyncio.sleep(0.4)
    stop.set()
    await publisher.stop()
    listening.cancel()
    await listener.disconnect()
    await publisher_room.disconnect()
    result = summary(latencies)
    result["missed"] = bursts - len(latencies)
    return result


async def forwarding_cpu(bench: Bench, counts: list[int], window: float) -> dict[str, Any]:
    if bench.pid is None:
        return {"error": "the engine does not expose its server process id"}
    publisher_room, _ = await bench.connect("bench-cpu")
    publisher = TonePublisher(publisher_room)
    await publisher.start()

    async def measure() -> float:
        await asyncio.sleep(1.0)
        start_cpu, start = cpu_seconds(bench.pid), time.perf_counter()
        await asyncio.sleep(window)
        return (cpu_seconds(bench.pid) - start_cpu) / (time.perf_counter() - start) * 100

    publisher.burst(10**6)  # a continuous tone: every packet carries audio (no DTX)
    baseline = await measure()
    subscribers: list[rtc.Room] = []
    result: dict[str, Any] = {"baseline_pct": round(baseline, 2), "window_s": window, "per_stream_pct": {},
                              "total_pct": {}}
    for count in counts:
        while len(subscribers) < count:
            room, _ = await bench.connect("bench-cpu")
            await subscribed_track(room)
            subscribers.append(room)
        total = await measure()
        result["total_pct"][str(count)] = round(total, 2)
        result["per_stream_pct"][str(count)] = round((total - baseline) / count, 2)
    result["rss_mb_with_subscribers"] = rss_mb(bench.pid)
    await publisher.stop()
    for room in subscribers:
        await room.disconnect()
    await publisher_room.disconnect()
    return result


def engine_options(name: str) -> dict[str, Any]:
    if name == "livekit-server" and LIVEKIT_SERVER_CONFIG.exists():
        return {"config_file": str(LIVEKIT_SERVER_CONFIG)}
    return {}


async def bench_engine(name: str, args: argparse.Namespace) -> dict[str, Any]:
    engine = make_engine(name, **engine_options(name))
    url, key, secret = engine.start()
    pid = getattr(engine, "pid", None)
    try:
        bench = Bench(url, key, secret, pid)
        await bench.connect_latency(2)  # warm-up: first-use costs on both sides
        out: dict[str, Any] = {"rss_mb_idle": rss_mb(pid) if pid else None}
        out["connect"] = await bench.connect_latency(args.connects)
        out["audio_e2e"] = await audio_latency(bench, args.bursts)
        out["cpu"] = await forwarding_cpu(bench, args.subscribers, args.window)
        out["rss_mb_end"] = rss_mb(pid) if pid else None
        return out
    finally:
        engine.stop()


def ratios(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    def ratio(x: float | None, y: float | None) -> float | None:
        return round(x / y, 2) if x is not None and y else None

    out = {"connect_p50": ratio(a["connect"]["p50_ms"], b["connect"]["p50_ms"]),
           "audio_e2e_p50": ratio(a["audio_e2e"]["p50_ms"], b["audio_e2e"]["p50_ms"]),
           "rss_mb_end": ratio(a.get("rss_mb_end"), b.get("rss_mb_end"))}
    per_a, per_b = a["cpu"].get("per_stream_pct", {}), b["cpu"].get("per_stream_pct", {})
    out["cpu_per_stream"] = {n: ratio(per_a.get(n), per_b.get(n)) for n in per_a}
    return out


async def run(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {"sdk": rtc.__version__, "engines": {}}
    for name in args.engines:
        try:
            result["engines"][name] = await asyncio.wait_for(bench_engine(name, args), args.budget)
        except Exception as exc:  # report and go on with the next engine
            result["engines"][name] = {"error": f"{type(exc).__name__}: {exc}"}
    engines = result["engines"]
    if "embedded" in engines and "livekit-server" in engines and \
            "error" not in engines["embedded"] and "error" not in engines["livekit-server"]:
        result["ratio_embedded_over_livekit_server"] = ratios(engines["embedded"], engines["livekit-server"])
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engines", default="embedded", type=lambda s: [e for e in s.split(",") if e],
                        help="comma-separated engines (embedded, livekit-server)")
    parser.add_argument("--connects", type=int, default=20)
    parser.add_argument("--bursts", type=int, default=15)
    parser.add_argument("--subscribers", default="1,2,4,8", type=lambda s: [int(n) for n in s.split(",")])
    parser.add_argument("--window", type=float, default=6.0, help="seconds of CPU measurement per step")
    parser.add_argument("--budget", type=float, default=150.0, help="seconds allowed per engine")
    args = parser.parse_args()
    if os.environ.get("NBAGENTS_NETNS") != "1":
        print("bench/server.py opens WebRTC connections: run it as scripts/netns .venv/bin/python bench/server.py",
              file=sys.stderr)
        return 2
    print(json.dumps(asyncio.run(run(args)), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
