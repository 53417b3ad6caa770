"""Nothing nbagents starts outlives the kernel, even a kernel killed with SIGKILL.

A real ipykernel (started with jupyter_client, as Jupyter starts one) loads nbagents, starts its own engine
(the embedded server, or livekit-server under its supervisor), launches three jobs and a simulated
participant. From outside, one job is stopped with SIGSTOP, one hangs in native code holding its GIL and one
runs normally; the kernel is interrupted (SIGINT to its process group, as Jupyter does), which must leave
all of them alone; then the kernel process alone is killed with SIGKILL. Within 10 s no process of that kernel
may be left (found by an environment marker every process inherits, so nothing forked later escapes), and
the running job must have run its shutdown callback.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import sys
import textwrap
import time
from pathlib import Path

import psutil
from jupyter_client.manager import KernelManager

from nbagents.engines.livekit_server import find_binary

from waiting import WAIT, wait_until

MARKER = "NBAGENTS_LIFETIME_TEST"
JOB_TIMEOUT = 3.0  # shutdown_process_timeout of the kernel's jobs
GONE_WITHIN = 10.0  # the bound: every process gone this long after the kernel's SIGKILL

KERNEL_CODE = textwrap.dedent(
    """
    %load_ext nbagents
    import asyncio, json, os
    from nbagents import launch, sim

    async def stopped(ctx):
        await ctx.connect()
        await asyncio.Event().wait()

    async def hung_in_native_code(ctx):
        import ctypes
        await ctx.connect()
        await asyncio.sleep(0.5)
        ctypes.PyDLL(None).sleep(3600)  # libc's sleep(), GIL held

    async def running(ctx):
        async def on_kernel_gone(reason):
            return reason
        ctx.add_shutdown_callback(on_kernel_gone)
        await ctx.connect()
        await asyncio.Event().wait()

    jobs = {f.__name__: launch(f, room=f"__ROOM__-{f.__name__}", shutdown_process_timeout=__TIMEOUT__,
                               jobs_dir="__JOBS__")
            for f in (stopped, hung_in_native_code, running)}
    while not all(j.connected or j.done for j in jobs.values()):
        await asyncio.sleep(0.05)
    alice = await sim.join("__ROOM__-running", "alice")
    print(json.dumps({"jobs": {name: j.pid for name, j in jobs.items()},
                      "states": [j.state for j in jobs.values()],
                      "log_dir": str(jobs["running"].log_dir)}))
    """
)


INTERRUPT_CHECK = textwrap.dedent(
    """
    print(*[j.state for j in jobs.values()])
    print((await alice.set_attributes({"after": "interrupt"}))["after"] + "ed")
    """
)


def _marked_processes(token: str) -> list[psutil.Process]:
    """Every live (non-zombie) process whose environment holds the marker."""
    found = []
    for process in psutil.process_iter(["pid"]):
        try:
            if process.environ().get(MARKER) == token and process.status() != psutil.STATUS_ZOMBIE:
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def _describe(processes: list[psutil.Process]) -> str:
    lines = []
    for p in processes:
        try:
            lines.append(f"{p.pid} {p.status()} {' '.join(p.cmdline())[:160]}")
        except psutil.Error:
            pass
    return "\n".join(lines)


def _kernel_env(engine: str, token: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVEKIT_")}
    env[MARKER] = token
    env["NBAGENTS_ENGINE"] = engine
    if engine == "livekit-server":
        env["NBAGENTS_LIVEKIT_SERVER"] = str(find_binary())
    return env


def _execute(client, code: str) -> str:
    """Run code in the kernel; its stdout (an error, if the cell raised)."""
    out: list[str] = []
    errors: list[str] = []

    def on_output(msg) -> None:
        kind, content = msg["msg_type"], msg["content"]
        if kind == "stream" and content["name"] == "stdout":
            out.append(content["text"])
        elif kind == "error":
            errors.append("\n".join(content["traceback"]))

    client.execute_interactive(code, timeout=WAIT * 2, output_hook=on_output)
    if errors:
        raise AssertionError("the kernel cell failed:\n" + "\n".join(errors))
    return "".join(out)


async def test_kernel_sigkill_leaves_no_process_behind(lk_server, tmp_path: Path) -> None:
    token = secrets.token_hex(8)
    room = "life-" + secrets.token_hex(3)
    manager = KernelManager(kernel_name="python3")
    manager.kernel_spec.argv[0] = sys.executable  # this environment's ipykernel
    await asyncio.to_thread(manager.start_kernel, env=_kernel_env(lk_server.engine, token), cwd=str(tmp_path))
    client = manager.client()
    client.start_channels()
    kernel = psutil.Process(manager.provisioner.pid)
    try:
        await asyncio.to_thread(client.wait_for_ready, WAIT)
        code = (KERNEL_CODE.replace("__ROOM__", room).replace("__TIMEOUT__", str(JOB_TIMEOUT))
                .replace("__JOBS__", str(tmp_path / "jobs")))
        output = await asyncio.to_thread(_execute, client, code)
        report = json.loads(output.strip().splitlines()[-1])
        assert report["states"] == ["running"] * 3, report
        pids = report["jobs"]

        # the faults, from outside: one job stopped, one already hung holding its GIL, one running
        os.kill(pids["stopped"], signal.SIGSTOP)
        await wait_until(lambda: psutil.Process(pids["stopped"]).status() == psutil.STATUS_STOPPED,
                         what="the job to stop")
        before = _marked_processes(token)
        names = " ".join(" ".join(p.cmdline()) for p in before)
        assert {pids["stopped"], pids["hung_in_native_code"], pids["running"]} <= {p.pid for p in before}
        assert "nbagents.runtime.zygote" in names and "nbagents.sim._worker" in names
        assert ("nbagents.server" in names) if lk_server.engine == "embedded" else ("livekit-server" in names)

        # Jupyter's "interrupt kernel" signals the kernel's whole process group: nbagents' processes ignore it
        await asyncio.to_thread(manager.interrupt_kernel)
        checked = await asyncio.to_thread(_execute, client, INTERRUPT_CHECK)
        assert checked.split() == ["running", "running", "running", "interrupted"], checked
        assert all(p.is_running() for p in before)

        kernel.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        left = _marked_processes(token)
        while left and time.monotonic() - killed_at < GONE_WITHIN:
            await asyncio.sleep(0.1)
            left = [p for p in _marked_processes(token) if p.pid != kernel.pid]
        assert not left, f"left {GONE_WITHIN:g} s after the kernel's SIGKILL:\n{_describe(left)}"
        print(f"\n{lk_server.engine}: all {len(before)} processes gone {time.monotonic() - killed_at:.2f} s "
              "after the kernel's SIGKILL")

        result = json.loads((Path(report["log_dir"]) / "result.json").read_text())
        assert result["state"] == "succeeded", result  # its shutdown callback ran
        assert list(result["persisted"]) == ["on_kernel_gone"], result
    finally:
        client.stop_channels()
        for process in _marked_processes(token):
            with contextlib.suppress(psutil.Error):
                process.kill()
        await asyncio.to_thread(manager.cleanup_resources)
