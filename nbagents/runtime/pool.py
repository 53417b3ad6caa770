"""Kernel side of job processes: the zygote that forks them and a warm pool of idle ones.

- The zygote (``nbagents.runtime.zygote``) is started once per kernel, in its own session, so that a
  kernel restart that kills the kernel's process group does not kill jobs before their shutdown
  callbacks ran (they notice their channel closing instead). It also supervises them: when the kernel
  is gone it kills every job still running ``shutdown_process_timeout`` later (a stopped or hung one),
  which :meth:`ProcessHandle.expect_shutdown_within` tells it.
- Idle processes are forked ahead of time and have started the livekit FFI; with a ``prewarm``
  function they have also run it. A launch whose prewarm matches takes one at once.
"""

from __future__ import annotations

import atexit
import collections
import os
import socket
import subprocess
import sys
import threading
from concurrent.futures import Future

from nbagents.runtime import ipc
from nbagents.runtime.tokens import mints_at_launch
from nbagents.runtime.zygote import KERNEL_SIGNS, RECORD

__all__ = ["ProcessHandle", "ProcessPool", "shared_pool"]

ZYGOTE_START_TIMEOUT = 60.0


class ProcessHandle:
    """One job process (forked by the zygote) and the kernel's end of its channel."""

    def __init__(self, pid: int, channel: ipc.Channel, zygote: Zygote | None = None) -> None:
        self.pid = pid
        self.channel = channel
        self._zygote = zygote
        self.prewarm_digest: str | None = None
        self.exit_code: int | None = None
        self.exited = threading.Event()
        self.warm = False

    def _set_exit(self, code: int) -> None:
        self.exit_code = code
        self.exited.set()

    def alive(self) -> bool:
        return not self.exited.is_set()

    def retire(self) -> None:
        """Close an idle process's channel; it exits on its own."""
        self.channel.close()

    def expect_shutdown_within(self, seconds: float) -> None:
        """Tell the zygote this process runs a job with this ``shutdown_process_timeout``.

        Should the kernel die, the zygote kills the process if it is still there that long (plus a short
        grace) afterwards.
        """
        if self._zygote is not None:
            self._zygote.supervise(self.pid, seconds)


class Zygote:
    """The preloaded process that forks job processes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: collections.deque[Future[int]] = collections.deque()
        self._handles: dict[int, ProcessHandle] = {}
        self._early_exits: dict[int, int] = {}
        self._ready: Future[int] = Future()
        kernel_end, zygote_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self._control = kernel_end
        self._channel = ipc.Channel(kernel_end)
        env = dict(os.environ)
        env.setdefault("PYTHONUNBUFFERED", "1")
        # the kernel's import path, so jobs import by reference exactly what the kernel can import
        paths = [os.path.abspath(p or os.curdir) for p in sys.path]
        env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(p for p in paths if os.path.isdir(p)))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "nbagents.runtime.zygote", str(zygote_end.fileno()), str(os.getpid())],
            pass_fds=[zygote_end.fileno()],
            start_new_session=True,
            env=env,
            stdin=subprocess.DEVNULL,
        )
        zygote_end.close()
        threading.Thread(target=self._read, name="nbagents-zygote", daemon=True).start()

    def wait_ready(self, timeout: float = ZYGOTE_START_TIMEOUT) -> None:
        self._ready.result(timeout)

    def fork(self, first_message: bytes | None = None) -> ProcessHandle:
        """Fork a new job process (blocking, a few milliseconds once the zygote is ready).

        ``first_message`` (a small framed message) is queued in the socket before the fork, so the
        child finds its job waiting instead of warming up as an idle process first. The request is
        queued at once, even while the zygote still starts: it forks as soon as it is ready.
        """
        kernel_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        if first_message is not None:
            kernel_end.sendall(first_message)
        answer: Future[int] = Future()
        with self._lock:
            self._pending.append(answer)
            try:
                flags = KERNEL_SIGNS if mints_at_launch() else 0  # see nbagents.runtime.rooms
                socket.send_fds(self._control, [RECORD.pack(b"F", flags, 0.0)], [child_end.fileno()])
            except OSError as exc:
                self._pending.remove(answer)
                raise RuntimeError(f"the nbagents zygote process is gone ({exc}); restart the kernel") from exc
        child_end.close()
        pid = answer.result(ZYGOTE_START_TIMEOUT + 30.0)  # the zygote's "exited" fails it at once
        handle = ProcessHandle(pid, ipc.Channel(kernel_end), self)
        with self._lock:
            self._handles[pid] = handle
            if pid in self._early_exits:
                handle._set_exit(self._early_exits.pop(pid))
        return handle

    def supervise(self, pid: int, seconds: float) -> None:
        """Tell the zygote that child ``pid`` runs a job with this ``shutdown_process_timeout``."""
        with self._lock:
            try:
                self._control.sendall(RECORD.pack(b"T", pid, float(seconds)))
            except OSError:
                pass  # the zygote is gone; its children went with it

    def _read(self) -> None:
        while True:
            try:
                message = self._channel.recv()
            except EOFError:
                break
            if message[0] == "ready":
                self._ready.set_result(message[1])
            elif message[0] == "forked":
                with self._lock:
                    answer = self._pending.popleft()
                answer.set_result(message[1])
            elif message[0] == "exited":
                _, pid, code = message
                with self._lock:
                    handle = self._handles.pop(pid, None)
                    if handle is None:
                        self._early_exits[pid] = code
                if handle is not None:
                    handle._set_exit(code)
        error = RuntimeError("the nbagents zygote process exited")
        if not self._ready.done():
            self._ready.set_exception(error)
        with self._lock:
            pending, self._pending = list(self._pending), collections.deque()
        for answer in pending:
            answer.set_exception(error)

    def close(self) -> None:
        """Fork nothing more. The zygote exits by itself once its last child (a running job) has ended."""
        self._channel.close()
        self.process.poll()


class ProcessPool:
    """Keeps ``num_idle`` idle job processes, prewarmed with the most recently used prewarm function."""

    def __init__(self, num_idle: int = 1) -> None:
        self.num_idle = num_idle
        self._lock = threading.Lock()
        self._zygote: Zygote | None = None
        self._idle: list[ProcessHandle] = []
        self._filling = 0
        self._prewarm: tuple[bytes, str] | None = None
        self._closed = False

    @property
    def zygote(self) -> Zygote:
        with self._lock:
            if self._zygote is None:
                self._zygote = Zygote()
            return self._zygote

    def start(self) -> None:
        """Start the zygote and fill the pool in the background (returns at once)."""
        self.zygote  # noqa: B018
        self._refill_soon()

    def acquire(self, prewarm_digest: str | None) -> ProcessHandle | None:
        """An idle process suited to this prewarm, if one is ready (never blocks)."""
        with self._lock:
            for handle in list(self._idle):
                if not handle.alive():
                    self._idle.remove(handle)
                    continue
                if handle.prewarm_digest == prewarm_digest or handle.prewarm_digest is None:
                    self._idle.remove(handle)
                    return handle
        return None

    def acquire_peek(self) -> int:
        """How many idle processes are ready (for tests and diagnostics)."""
        with self._lock:
            return sum(1 for h in self._idle if h.alive())

    def idle_pids(self) -> list[int]:
        """The process ids of the idle processes that are ready (for tests and diagnostics)."""
        with self._lock:
            return [h.pid for h in self._idle if h.alive()]

    def fork(self, first_message: bytes | None = None) -> ProcessHandle:
        """A brand-new process straight from the zygote (blocking; starts the zygote if needed)."""
        return self.zygote.fork(first_message)

    def use_prewarm(self, prewarm: tuple[bytes, str] | None) -> None:
        """Refill with processes prewarmed by this function from now on; retire idle ones of another."""
        with self._lock:
            if (prewarm and prewarm[1]) == (self._prewarm and self._prewarm[1]):
                return
            self._prewarm = prewarm
            digest = prewarm[1] if prewarm else None
            stale = [h for h in self._idle if h.prewarm_digest != digest]
            self._idle = [h for h in self._idle if h.prewarm_digest == digest]
        for handle in stale:
            handle.retire()

    def _refill_soon(self) -> None:
        with self._lock:
            missing = self.num_idle - len(self._idle) - self._filling
            if missing <= 0 or self._closed:
                return
            self._filling += missing
        for _ in range(missing):
            threading.Thread(target=self._fill_one, name="nbagents-pool-fill", daemon=True).start()

    def refill(self) -> None:
        self._refill_soon()

    def _fill_one(self) -> None:
        try:
            handle = self.zygote.fork()
            ready = handle.channel.recv()
            assert isinstance(ready, ipc.ProcessReady)
            with self._lock:
                prewarm = self._prewarm
            if prewarm is not None:
                handle.channel.send(ipc.Prewarm(*prewarm))
                ready = handle.channel.recv()
                if ready.error is None:
                    handle.prewarm_digest = prewarm[1]
            handle.warm = True
            with self._lock:
                wanted = self._prewarm[1] if self._prewarm else None
                if self._closed or handle.prewarm_digest != wanted:
                    handle.retire()
                else:
                    self._idle.append(handle)
        except Exception:
            pass  # an unusable idle process just means the next launch forks
        finally:
            with self._lock:
                self._filling -= 1

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
            zygote, self._zygote = self._zygote, None
        for handle in idle:
            handle.retire()
        if zygote is not None:
            zygote.close()


_shared: ProcessPool | None = None
_shared_lock = threading.Lock()


def shared_pool() -> ProcessPool:
    """The kernel's pool (one per process), closed at exit."""
    global _shared
    with _shared_lock:
        if _shared is None:
            num_idle = int(os.environ.get("NBAGENTS_IDLE_PROCESSES", "1"))
            _shared = ProcessPool(num_idle=num_idle)
            atexit.register(_shared.close)
        return _shared
