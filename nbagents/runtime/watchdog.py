"""The kernel-side watchdog: a job whose heartbeat stops is unresponsive, whatever the cause.

A job process sends :class:`nbagents.runtime.ipc.Heartbeat` from its event loop every 0.2 s. A blocked
event loop, a process stopped with SIGSTOP and native code holding the GIL all stop the heartbeats; only
something outside the process can notice the last two (no thread of a stopped process runs, and none of a
process whose GIL is held runs Python). One thread per kernel checks every running job a few times a
second; a job silent for :data:`UNRESPONSIVE_AFTER_SECONDS` becomes unresponsive (``job.unresponsive``, a
``LoopHealth`` event and a warning in its log saying what the process is doing), and is responsive again
at its next heartbeat. ``job.stop()`` kills an unresponsive job with SIGKILL at its
``shutdown_process_timeout``.

When the kernel itself was not scheduled for a while (its own check came late), that round is skipped:
the heartbeats may be waiting unread in the socket, and the job is not to blame.
"""

from __future__ import annotations

import threading
import time
import weakref
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nbagents.runtime.job import Job

__all__ = ["UNRESPONSIVE_AFTER_SECONDS", "describe_process", "watch"]

UNRESPONSIVE_AFTER_SECONDS = 2.0
TICK_SECONDS = 0.25
LATE_TICK_SECONDS = 1.0  # a check this late means the kernel was stalled: skip the round

_jobs: weakref.WeakSet[Job] = weakref.WeakSet()
_lock = threading.Lock()
_thread: threading.Thread | None = None


def watch(job: Job) -> None:
    """Check ``job``'s heartbeats until it has ended (starts the watchdog thread on first use)."""
    global _thread
    with _lock:
        _jobs.add(job)
        if _thread is None or not _thread.is_alive():
            _thread = threading.Thread(target=_run, name="nbagents-watchdog", daemon=True)
            _thread.start()


def _run() -> None:
    last = time.monotonic()
    while True:
        time.sleep(TICK_SECONDS)
        now = time.monotonic()
        late = now - last > TICK_SECONDS + LATE_TICK_SECONDS
        last = now
        with _lock:
            jobs = list(_jobs)
        for job in jobs:
            if late:
                job._excuse_silence(now)
            elif not job._check_heartbeat(now, UNRESPONSIVE_AFTER_SECONDS):
                with _lock:
                    _jobs.discard(job)


def describe_process(pid: int | None) -> str:
    """What a process that sends no heartbeat is doing, from its state in ``/proc`` (Linux)."""
    if pid is None:
        return "its process is not known yet"
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            text = stat.read()
        state = text[text.rindex(")") + 2]
    except (OSError, ValueError, IndexError):
        return "its process state cannot be read"
    if state in "Tt":
        return f"process {pid} is stopped (SIGSTOP, or a debugger holds it)"
    if state == "R":
        return (f"process {pid} is running, but its event loop never gets control (a loop that does not await, "
                "or native code holding the GIL)")
    if state in "SD":
        return (f"process {pid} waits in a call that does not return to its event loop (time.sleep, a lock or "
                "blocking I/O in async code, or native code)")
    if state in "ZX":
        return f"process {pid} has exited"
    return f"process {pid} is in state {state!r}"
