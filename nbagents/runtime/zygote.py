"""The zygote: a process that has imported livekit and nbagents' job code, forks job processes and supervises them.

Forking from it costs milliseconds, where starting Python and importing livekit costs most of a second.
It never starts the livekit FFI (whose threads would not survive a fork); each child does.

Protocol on its control socket (kernel -> zygote, fixed-size records):

- ``F`` with a job socket attached (SCM_RIGHTS): fork; the child runs ``worker.process_main`` on that
  socket; the zygote answers ``("forked", pid)``. The pid field carries flags: :data:`KERNEL_SIGNS`, the
  kernel mints the job's token and creates its room (an idle child's rehearsal then signs nothing).
- ``T`` + pid (4 bytes) + seconds (8-byte float): that child now runs a job whose
  ``shutdown_process_timeout`` is ``seconds``.

When a child exits it sends ``("exited", pid, returncode)``.

Lifetime (docs/process-lifetime.md): the zygote is the supervisor of its children. It watches the kernel
with a pidfd. When the kernel dies — however it dies, SIGKILL included — the children notice their own
sockets closing and shut down, running their shutdown callbacks; the zygote kills, with SIGKILL, every
child still there ``shutdown_process_timeout`` + :data:`KILL_GRACE_SECONDS` later (idle children get
:data:`IDLE_GRACE_SECONDS`), which catches jobs that cannot act: stopped (SIGSTOP), hung in native code
holding the GIL, or with a blocked event loop. It exits once its last child is gone. Its children get
SIGKILL from the kernel if the zygote itself dies (PR_SET_PDEATHSIG, set from the zygote's only forking
thread, its main thread), so no job process outlives both.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import struct
import sys
import time

from nbagents import _lifeline

RECORD = struct.Struct("<cId")  # opcode, pid, seconds: 13 bytes; "F" records carry flags and 0.0 instead
KERNEL_SIGNS = 1  # an "F" record's flag
KILL_GRACE_SECONDS = 1.5  # past a job's own deadline (it writes its result and exits in that time)
IDLE_GRACE_SECONDS = 2.0  # an idle process exits at once when its channel closes


def main(control_fd: int, kernel_pid: int) -> int:
    # Preload everything a job needs before the first fork.
    import asyncio  # noqa: F401

    import aiohttp  # noqa: F401
    import av  # noqa: F401  (the audio recorder's encoder; ~0.5 s to import, paid here once)
    import cloudpickle  # noqa: F401
    import numpy  # noqa: F401
    from livekit import api, rtc  # noqa: F401

    # livekit-agents runs every job (its JobContext, AgentSession, ...): import it once here so that forks
    # share it; its own warm-up follows as soon as no job is waiting (_agents.preload_warm_up), without the
    # local inference models (~250 MB for the turn detector) unless the kernel's environment asks for them
    os.environ.setdefault("LIVEKIT_AGENTS_PRELOAD_LOCAL_INFERENCE", "0")
    from nbagents.runtime import _agents

    _agents.preload()

    from nbagents.runtime import context, ipc, tokens, worker  # noqa: F401

    # a job signs tokens (its room's creation; its own unless the kernel minted it): signing once here does
    # the first-use work (PyJWT's, the dataclasses and JSON encoders') once for every job
    tokens.agent_token("zygote", "zygote-secret-zygote-secret-zygote", "AJ_zygote", "zygote", "")
    worker.set_log_levels()

    import gc

    # children share the preloaded objects; frozen, the collector will not touch (copy) them. Importing
    # leaves a few dozen unreachable objects, and collecting them would walk all ~150,000 (~80 ms before
    # the first job could fork): they are frozen too, and the warm-up collects only what it creates
    gc.freeze()
    _release_free_memory()
    warm_up_pending = True

    def warm_up() -> None:
        nonlocal warm_up_pending
        warm_up_pending = False
        try:
            _agents.preload_warm_up()
        except Exception:  # a speed-up only (each job does what it uses itself): never a reason to stop forking
            pass
        gc.collect()  # the objects created since the freeze
        gc.freeze()
        _release_free_memory()

    try:
        kernel_fd = _lifeline.open_pidfd(kernel_pid)
    except _lifeline.ParentGone:
        return 0
    kernel_was_parent = os.getppid() == kernel_pid
    _lifeline._prctl()  # loaded before any fork: a child only calls it
    me = os.getpid()

    control: socket.socket | None = socket.socket(fileno=control_fd)
    channel = ipc.Channel(control)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    children: dict[int, float | None] = {}  # pid -> the job's shutdown_process_timeout (None: idle)
    kill_at: dict[int, float] = {}  # once the kernel is gone: pid -> when to SIGKILL it
    kernel_gone_at: float | None = None
    channel.send(("ready", os.getpid()))
    while True:
        now = time.monotonic()
        if kernel_gone_at is None and not _lifeline._alive(kernel_pid, kernel_fd, kernel_was_parent):
            kernel_gone_at = now
            for pid, timeout in children.items():
                kill_at[pid] = now + (IDLE_GRACE_SECONDS if timeout is None else timeout + KILL_GRACE_SECONDS)
            if control is not None:  # a process the kernel forked may still hold the other end open
                channel.close()
                control = None
        for pid, when in list(kill_at.items()):
            if now >= when:
                _kill(pid)
                del kill_at[pid]
        if control is None and not children:
            return 0  # the kernel closed us (or is gone) and every child has ended
        watched = [wake_r] + ([control] if control is not None else [])
        if kernel_gone_at is None and kernel_fd is not None:
            watched.append(kernel_fd)
        timeout = min([0.2 if warm_up_pending else 1.0, *(max(0.0, when - now) for when in kill_at.values())])
        try:
            readable, _, _ = select.select(watched, [], [], timeout)
        except InterruptedError:
            readable = []
        if wake_r in readable:
            os.read(wake_r, 512)
        _reap(channel if control is not None else None, children, kill_at)
        if control is None or control not in readable:
            if warm_up_pending and control is not None and not readable:
                warm_up()  # idle: nobody waits for a fork now
            continue
        try:
            data, fds, _, _ = socket.recv_fds(control, 1, 4)
        except OSError:
            data, fds = b"", []
        if not data:  # the kernel closed its end (it exited, or closed the pool): fork nothing more
            channel.close()
            control = None
            continue
        if data == b"T":
            rest = _recv_exact(control, RECORD.size - 1)
            if rest is None:
                continue
            _, pid, seconds = RECORD.unpack(data + rest)
            if pid in children:
                children[pid] = seconds
            continue
        rest = _recv_exact(control, RECORD.size - 1)  # the rest of an "F" record
        flags = RECORD.unpack(data + rest)[1] if rest is not None else 0
        for fd in fds:
            if warm_up_pending and not select.select([fd], [], [], 0)[0]:
                warm_up()  # an idle process for the pool (no job queued on its socket): it gets the warm-up too
            pid = os.fork()
            if pid == 0:
                signal.set_wakeup_fd(-1)
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                os.close(wake_r)
                os.close(wake_w)
                if kernel_fd is not None:
                    os.close(kernel_fd)
                control.close()
                _lifeline.die_with_parent(me)
                code = 1
                try:
                    code = worker.process_main(fd, kernel_signs=bool(flags & KERNEL_SIGNS))
                finally:
                    os._exit(code)
            os.close(fd)
            children[pid] = None
            if kernel_gone_at is not None:
                kill_at[pid] = time.monotonic() + IDLE_GRACE_SECONDS
            channel.send(("forked", pid))


def _release_free_memory() -> None:
    """Hand the heap's free pages back to the system (glibc's malloc_trim): every page the zygote holds is
    counted in each job's memory (PSS: shared pages split among the processes that map them)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim this way
        pass


def _recv_exact(sock: socket.socket, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        try:
            chunk = sock.recv(size - len(data))
        except OSError:
            return None
        if not chunk:
            return None
        data += chunk
    return data


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _reap(channel, children: dict[int, float | None], kill_at: dict[int, float]) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        children.pop(pid, None)
        kill_at.pop(pid, None)
        if channel is not None:
            channel.send(("exited", pid, os.waitstatus_to_exitcode(status)))


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]), int(sys.argv[2])))
