"""The zygote: a process that has imported livekit and nbagents' job code, and forks job processes.

Forking from it costs milliseconds, where starting Python and importing livekit costs most of a second.
It never starts the livekit FFI (whose threads would not survive a fork); each child does.

Protocol on its control socket: the kernel sends one byte ``F`` with a job socket attached
(SCM_RIGHTS); the zygote forks, the child runs ``worker.process_main`` on that socket, and the zygote
answers ``("forked", pid)``. When a child exits it sends ``("exited", pid, returncode)``. When the
kernel's end closes, the zygote exits (its children notice their own sockets closing).
"""

from __future__ import annotations

import os
import select
import signal
import socket
import sys


def main(control_fd: int) -> int:
    # Preload everything a job needs before the first fork.
    import asyncio  # noqa: F401

    import aiohttp  # noqa: F401
    import cloudpickle  # noqa: F401
    import numpy  # noqa: F401
    from livekit import api, rtc  # noqa: F401

    from nbagents.runtime import ipc, worker

    import gc

    gc.collect()
    gc.freeze()  # children share the preloaded objects; the collector will not touch (copy) them

    control = socket.socket(fileno=control_fd)
    channel = ipc.Channel(control)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    channel.send(("ready", os.getpid()))
    while True:
        try:
            readable, _, _ = select.select([control, wake_r], [], [], 1.0)
        except InterruptedError:
            readable = []
        if wake_r in readable:
            os.read(wake_r, 512)
        _reap(channel)
        if control not in readable:
            continue
        try:
            data, fds, _, _ = socket.recv_fds(control, 1, 4)
        except OSError:
            return 0
        if not data:
            return 0  # the kernel is gone
        for fd in fds:
            pid = os.fork()
            if pid == 0:
                signal.set_wakeup_fd(-1)
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                os.close(wake_r)
                os.close(wake_w)
                control.close()
                code = 1
                try:
                    code = worker.process_main(fd)
                finally:
                    os._exit(code)
            os.close(fd)
            channel.send(("forked", pid))


def _reap(channel) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        channel.send(("exited", pid, os.waitstatus_to_exitcode(status)))


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1])))
