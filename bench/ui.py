"""Benchmark the notebook UI in a real kernel; prints one JSON object.

Run inside the project's network namespace:

    scripts/netns .venv/bin/python bench/ui.py [--streams 1,2] [--rates 15] [--window 10]

A real ipykernel (started with jupyter_client, as a notebook server does) launches a job on the
embedded server; simulated participants speak tones, so the job's monitor streams audio statistics
to the kernel. For each number of streams the kernel's own CPU (all its threads, ``time.process_time``
inside the kernel) is measured over ``--window`` seconds twice: with the job merely running (baseline:
events applied to the model, simulated participants driven) and with the inspector displayed, its
live plots at ``--rates`` updates a second. The difference divided by the streams is the UI's cost per
live-monitored audio stream. Widget traffic is measured where it leaves the kernel: the session's
serialized ``comm_msg`` frames plus their binary buffers (the PNG plots), per second.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import sys
import textwrap
import time
from typing import Any

from jupyter_client.manager import KernelManager

TARGET_PCT_PER_STREAM = 10.0

COUNTER = textwrap.dedent(
    """
    import json, time, asyncio
    _kernel = get_ipython().kernel
    _session = _kernel.session
    comm_traffic = {"bytes": 0, "messages": 0}
    _serialize, _send = _session.serialize, _session.send

    def _counting_serialize(msg, ident=None):
        frames = _serialize(msg, ident)
        if msg["header"]["msg_type"] == "comm_msg":
            comm_traffic["messages"] += 1
            comm_traffic["bytes"] += sum(len(f) for f in frames)
        return frames

    def _counting_send(stream, msg_or_type, content=None, parent=None, ident=None, buffers=None, *args, **kwargs):
        kind = msg_or_type if isinstance(msg_or_type, str) else msg_or_type["header"]["msg_type"]
        if kind == "comm_msg" and buffers:
            comm_traffic["bytes"] += sum(len(memoryview(b).cast("B")) for b in buffers)
        return _send(stream, msg_or_type, content, parent, ident, buffers, *args, **kwargs)

    _session.serialize, _session.send = _counting_serialize, _counting_send

    async def measure(seconds, inspector=None):
        await asyncio.sleep(1.0)  # settle
        frames0 = sum(v.plot.frames_rendered for v in inspector._tracks.values() if v.plot) if inspector else 0
        flushes0 = inspector._ui.flushes if inspector else 0
        b0, m0, c0, w0 = comm_traffic["bytes"], comm_traffic["messages"], time.process_time(), time.perf_counter()
        await asyncio.sleep(seconds)
        wall = time.perf_counter() - w0
        frames = sum(v.plot.frames_rendered for v in inspector._tracks.values() if v.plot) if inspector else 0
        return {
            "kernel_cpu_pct": round(100 * (time.process_time() - c0) / wall, 2),
            "widget_bytes_per_s": round((comm_traffic["bytes"] - b0) / wall),
            "widget_messages_per_s": round((comm_traffic["messages"] - m0) / wall, 1),
            "plot_updates_per_s": round((frames - frames0) / wall, 1),
            "view_redraws_per_s": round(((inspector._ui.flushes if inspector else 0) - flushes0) / wall, 1),
            "window_s": round(wall, 2),
        }
    """
)


class Kernel:
    """A real ipykernel driven over ZeroMQ like a notebook frontend drives it."""

    def __init__(self) -> None:
        env = {k: v for k, v in os.environ.items() if k != "LIVEKIT_URL"}
        env["NBAGENTS_ENGINE"] = "embedded"
        self.manager = KernelManager(kernel_name="python3")
        self.manager.start_kernel(env=env)
        self.client = self.manager.client()
        self.client.start_channels()
        self.client.wait_for_ready(timeout=120)

    def run(self, code: str, timeout: float = 180) -> list[str]:
        """Execute ``code``; return its stdout lines; raise with the traceback on error."""
        msg_id = self.client.execute(code)
        out: list[str] = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                msg = self.client.get_iopub_msg(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError(f"kernel did not finish within {timeout} s: {code[:200]}") from None
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream" and content["name"] == "stdout":
                out.append(content["text"])
            elif kind == "error":
                raise RuntimeError("\n".join(content["traceback"]))
            elif kind == "status" and content["execution_state"] == "idle":
                return "".join(out).splitlines()

    def close(self) -> None:
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=False)


def bench_streams(kernel: Kernel, streams: int, rate: float, window: float) -> dict[str, Any]:
    room = f"bench-ui-{streams}-{int(rate)}-{time.monotonic_ns() % 100000}"
    kernel.run(
        textwrap.dedent(
            f"""
            import nbagents, nbagents.ui
            from nbagents import sim

            async def entrypoint(ctx):
                await ctx.connect()

            job = nbagents.launch(entrypoint, room={room!r}, shutdown_process_timeout=10)
            sims = [await sim.join({room!r}, f"speaker-{{i}}") for i in range({streams})]
            tones = [asyncio.ensure_future(p.play_tone(300 + 110 * i, seconds=600)) for i, p in enumerate(sims)]
            while sum(1 for t in job.audio_tracks.values() if t.frames > 20) < {streams}:
                await asyncio.sleep(0.05)
            """
        )
    )
    baseline = json.loads(kernel.run(f"print(json.dumps(await measure({window})))")[-1])
    live = json.loads(
        kernel.run(
            f"inspector = nbagents.ui.inspect(job, plot_rate={rate})\ndisplay(inspector)\n"
            f"print(json.dumps(await measure({window}, inspector)))"
        )[-1]
    )
    kernel.run("for t in tones: t.cancel()\nawait job.stop('benchmark done')\nfor p in sims: await p.leave()")
    per_stream = (live["kernel_cpu_pct"] - baseline["kernel_cpu_pct"]) / streams
    return {
        "streams": streams,
        "plot_rate": rate,
        "kernel_cpu_pct_job_only": baseline["kernel_cpu_pct"],
        "kernel_cpu_pct_with_inspector": live["kernel_cpu_pct"],
        "ui_cpu_pct_per_stream": round(per_stream, 2),
        "kernel_cpu_pct_per_stream_total": round(live["kernel_cpu_pct"] / streams, 2),
        "plot_updates_per_s": live["plot_updates_per_s"],
        "view_redraws_per_s": live["view_redraws_per_s"],
        "widget_bytes_per_s": live["widget_bytes_per_s"],
        "widget_bytes_per_s_per_stream": round(live["widget_bytes_per_s"] / streams),
        "widget_messages_per_s": live["widget_messages_per_s"],
        "window_s": live["window_s"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", default="1,2", help="numbers of live audio streams to measure, comma separated")
    parser.add_argument("--rates", default="15", help="plot update rates (per second), comma separated")
    parser.add_argument("--window", type=float, default=10.0, help="seconds per measurement")
    args = parser.parse_args()
    if os.environ.get("NBAGENTS_NETNS") != "1":
        sys.exit("bench/ui.py opens WebRTC connections: run it inside scripts/netns")
    kernel = Kernel()
    try:
        kernel.run("%load_ext nbagents\n" + COUNTER)
        runs = [
            bench_streams(kernel, int(n), float(rate), args.window)
            for rate in args.rates.split(",")
            for n in args.streams.split(",")
        ]
    finally:
        kernel.close()
    worst = max(r["kernel_cpu_pct_per_stream_total"] for r in runs)
    print(
        json.dumps(
            {
                "benchmark": "notebook UI in a real ipykernel",
                "cpu_count": os.cpu_count(),
                "target_pct_per_stream": TARGET_PCT_PER_STREAM,
                "worst_kernel_cpu_pct_per_stream_total": worst,
                "meets_target": worst <= TARGET_PCT_PER_STREAM,
                "runs": runs,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
