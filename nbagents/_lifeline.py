"""Every process nbagents starts ends with the process that started it, even when that one is SIGKILLed.

A process killed with SIGKILL runs no cleanup, so its children must notice its death themselves. Three
mechanisms, each used where it is reliable (docs/process-lifetime.md has the whole picture):

- **A pidfd watch** (``watch_parent``/``parent_gone``): ``os.pidfd_open(pid)`` gives a descriptor that
  becomes readable when that process exits, however it exits. The embedded server, simulated
  participants and the job-process zygote watch the process that started them this way. Where pidfds are
  missing (not Linux, or a kernel older than 5.3) the watch polls ``os.getppid()`` instead.
- **PR_SET_PDEATHSIG** (``die_with_parent``): the kernel signals a child when its parent *thread* exits.
  That is only safe when the forking thread lives exactly as long as its process — the zygote's and the
  supervisor's main threads. It is never used from a kernel, whose engines start from background threads
  that end long before the kernel does.
- **A supervisor** (``python -I -S nbagents/_lifeline.py --parent-pid P -- program args...``; see
  :func:`supervisor_command`): for programs nbagents
  cannot change (the Go ``livekit-server``). It watches P with a pidfd, runs the program as its own child
  with PR_SET_PDEATHSIG=SIGKILL set from its single thread, forwards SIGTERM/SIGINT/SIGHUP to it and exits
  with its status (dying of the same signal when the program was killed). When P dies it stops the program
  as ``--stop-signals`` says (default SIGTERM, then SIGTERM again after 0.5 s, then SIGKILL after 5 s); when
  the supervisor itself is SIGKILLed the program gets SIGKILL from the kernel.

This module uses only the standard library and runs as a script without ``site`` (``-I -S``), so the supervisor
starts in a few tens of milliseconds.
"""

from __future__ import annotations

import argparse
import errno
import os
import select
import signal
import sys
import threading
import time
from typing import Callable

__all__ = ["ParentGone", "die_with_parent", "open_pidfd", "parent_gone", "supervisor_command", "watch_parent"]

POLL_SECONDS = 0.5  # the getppid() fallback's period
PR_SET_PDEATHSIG = 1
DEFAULT_STOP_PLAN = "TERM:0.5,TERM:5,KILL"


class ParentGone(RuntimeError):
    """The process to watch had already exited when the watch began."""


def open_pidfd(pid: int) -> int | None:
    """A pidfd for ``pid`` (readable once it exits), None where pidfds are unavailable.

    Raises :class:`ParentGone` if ``pid`` no longer exists. When ``pid`` is this process's parent, the
    parent is checked again after opening, so a pid reused by another process is never watched instead.
    """
    pidfd_open = getattr(os, "pidfd_open", None)
    if pidfd_open is None:
        return None
    was_parent = os.getppid() == pid
    try:
        fd = pidfd_open(pid)
    except ProcessLookupError:
        raise ParentGone(f"process {pid} has already exited") from None
    except OSError as exc:
        if exc.errno in (errno.ENOSYS, errno.EPERM, errno.EINVAL):
            return None
        raise
    if was_parent and os.getppid() != pid:
        os.close(fd)
        raise ParentGone(f"process {pid} exited while the watch began")
    return fd


def _alive(pid: int, pidfd: int | None, was_parent: bool) -> bool:
    if pidfd is not None:
        readable, _, _ = select.select([pidfd], [], [], 0)
        return not readable
    if was_parent:
        return os.getppid() == pid
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def watch_parent(pid: int, on_gone: Callable[[], None], *, name: str = "nbagents-lifeline") -> threading.Thread:
    """Call ``on_gone()`` from a daemon thread once process ``pid`` has exited (at once if it already has)."""
    was_parent = os.getppid() == pid
    try:
        pidfd = open_pidfd(pid)
    except ParentGone:
        pidfd, gone_already = None, True
    else:
        gone_already = False

    def run() -> None:
        if not gone_already:
            if pidfd is not None:
                while True:
                    try:
                        select.select([pidfd], [], [])
                        break
                    except InterruptedError:
                        continue
            else:
                while _alive(pid, None, was_parent):
                    time.sleep(POLL_SECONDS)
        on_gone()

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    return thread


async def parent_gone(pid: int) -> None:
    """Return once process ``pid`` has exited (an asyncio version of :func:`watch_parent`)."""
    was_parent = os.getppid() == pid
    try:
        pidfd = open_pidfd(pid)
    except ParentGone:
        return
    import asyncio

    if pidfd is None:
        while _alive(pid, None, was_parent):
            await asyncio.sleep(POLL_SECONDS)
        return
    loop = asyncio.get_running_loop()
    gone = loop.create_future()
    loop.add_reader(pidfd, lambda: gone.done() or gone.set_result(None))
    try:
        await gone
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)


_PRCTL: list = []


def _prctl():
    """libc's prctl (loaded once; load it before forking so the child only calls it), or None."""
    if not _PRCTL:
        try:
            import ctypes

            _PRCTL.append(ctypes.CDLL(None, use_errno=True).prctl)
        except (OSError, AttributeError):
            _PRCTL.append(None)
    return _PRCTL[0]


def die_with_parent(expected_parent: int, sig: int = signal.SIGKILL) -> None:
    """In a freshly forked child: get ``sig`` when the forking thread ends; exit now if it already has.

    Only correct when the forking thread lives as long as its process (see the module docstring). A no-op
    where ``prctl`` does not exist.
    """
    prctl = _prctl()
    if prctl is None:
        return
    prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    if os.getppid() != expected_parent:  # the parent died before prctl took effect
        os._exit(1)


# ---- the supervisor ----------------------------------------------------------------------------------


def supervisor_command(command: list[str], *, parent_pid: int | None = None, pid_fd: int | None = None,
                       stop_signals: str = DEFAULT_STOP_PLAN) -> list[str]:
    """The command line that runs ``command`` under the supervisor, tied to ``parent_pid`` (default: this process).

    ``pid_fd``: a descriptor the caller passes to the supervisor (``pass_fds``) to learn the program's pid.
    """
    line = [sys.executable, "-I", "-S", os.path.abspath(__file__), "--parent-pid", str(parent_pid or os.getpid()),
            "--stop-signals", stop_signals]
    if pid_fd is not None:
        line += ["--pid-fd", str(pid_fd)]
    return [*line, "--", *command]



def _parse_stop_plan(text: str) -> list[tuple[int, float | None]]:
    """``"TERM:0.5,TERM:5,KILL"`` -> [(SIGTERM, 0.5), (SIGTERM, 5.0), (SIGKILL, None)]."""
    plan: list[tuple[int, float | None]] = []
    for step in text.split(","):
        name, _, grace = step.strip().partition(":")
        sig = signal.Signals["SIG" + name.upper().removeprefix("SIG")]
        plan.append((int(sig), float(grace) if grace else None))
    return plan


def _exit_like(status: int) -> None:
    """Exit the way a child with wait ``status`` did: same exit code, or death by the same signal."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        if sig not in (signal.SIGKILL, signal.SIGSTOP):
            signal.signal(sig, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, [sig])
        os.kill(os.getpid(), sig)
        time.sleep(1.0)  # the signal is delivered before this returns; a blocked one falls through
        os._exit(128 + sig)
    os._exit(os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 1)


def supervise(parent_pid: int, command: list[str], *, pid_fd: int | None = None,
              stop_plan: str = DEFAULT_STOP_PLAN) -> None:
    """Run ``command`` as a child tied to ``parent_pid``'s lifetime; never returns (see the module docstring)."""
    plan = _parse_stop_plan(stop_plan)
    _prctl()  # loaded before the fork
    try:
        parent_fd = open_pidfd(parent_pid)
    except ParentGone:
        os._exit(1)
    was_parent = os.getppid() == parent_pid
    me = os.getpid()
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    os.set_blocking(wake_r, False)
    signal.set_wakeup_fd(wake_w)
    pending: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda signum, _frame: pending.append(signum))
    signal.signal(signal.SIGCHLD, lambda *_: None)

    child = os.fork()
    if child == 0:
        try:
            os.close(wake_r)
            os.close(wake_w)
            if pid_fd is not None:
                os.close(pid_fd)
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
                signal.signal(sig, signal.SIG_DFL)
            die_with_parent(me, signal.SIGKILL)
            os.execvp(command[0], command)
        except BaseException as exc:  # noqa: BLE001 - report and leave without running the parent's code
            os.write(2, f"nbagents supervisor: cannot run {command[0]}: {exc}\n".encode())
        finally:
            os._exit(127)
    if pid_fd is not None:
        try:
            os.write(pid_fd, f"{child}\n".encode())
        finally:
            os.close(pid_fd)

    stopping: list[tuple[int, float | None]] | None = None
    next_step_at: float | None = None
    while True:
        pid, status = os.waitpid(child, os.WNOHANG)
        if pid == child:
            _exit_like(status)
        for sig in pending:
            try:
                os.kill(child, sig)
            except ProcessLookupError:
                pass
        pending.clear()
        now = time.monotonic()
        if stopping is None and not _alive(parent_pid, parent_fd, was_parent):
            stopping = list(plan)
            next_step_at = now
        if stopping and next_step_at is not None and now >= next_step_at:
            sig, grace = stopping.pop(0)
            try:
                os.kill(child, sig)
            except ProcessLookupError:
                pass
            next_step_at = now + grace if grace is not None else None
        timeout = POLL_SECONDS
        if next_step_at is not None:
            timeout = max(0.0, min(timeout, next_step_at - now))
        watched = [wake_r] + ([parent_fd] if parent_fd is not None and stopping is None else [])
        try:
            readable, _, _ = select.select(watched, [], [], timeout)
        except InterruptedError:
            readable = []
        if wake_r in readable:
            try:
                os.read(wake_r, 512)
            except BlockingIOError:
                pass


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m nbagents._lifeline",
        description="Run a program that ends when the process --parent-pid exits (even on SIGKILL).")
    parser.add_argument("--parent-pid", type=int, required=True)
    parser.add_argument("--pid-fd", type=int, help="write the program's pid to this inherited descriptor")
    parser.add_argument("--stop-signals", default=DEFAULT_STOP_PLAN,
                        help=f"how to stop the program when the parent is gone (default {DEFAULT_STOP_PLAN})")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the program to run after --")
    supervise(args.parent_pid, command, pid_fd=args.pid_fd, stop_plan=args.stop_signals)


if __name__ == "__main__":
    main(sys.argv[1:])
