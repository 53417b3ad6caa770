"""Length-framed typed messages between the kernel and a job process (a Unix socket pair).

Each frame is a 4-byte big-endian length followed by a pickled message: either an
:mod:`nbagents.runtime.events` event (job -> kernel) or one of the control messages below. Both ends
are nbagents code in the same interpreter build, so pickle is safe here; user code travels inside
``StartJob`` as cloudpickle bytes and is only unpickled in the job process.
"""

from __future__ import annotations

import collections
import dataclasses
import pickle
import socket
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

_HEADER = struct.Struct(">I")
MAX_FRAME = 256 * 1024 * 1024


# kernel -> job process ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Prewarm:
    """Run this prewarm function now (an idle pool process), filling ``proc.userdata``."""

    blob: bytes
    digest: str
    environ: dict[str, str] | None = None  # the kernel's environment to run it in


@dataclasses.dataclass(frozen=True)
class EngineCredentials:
    """Where the LiveKit server is; may arrive after ``StartJob`` while the engine starts."""

    url: str
    api_key: str
    api_secret: str


@dataclasses.dataclass(frozen=True)
class EngineFailed:
    """The engine could not be started; the job fails with this message before its entrypoint runs."""

    message: str


@dataclasses.dataclass(frozen=True)
class Assignment:
    """A job a LiveKit server dispatched to the notebook (``%agent serve``): join with its token."""

    job_id: str
    job: bytes  # the serialized ``livekit.Job`` (room, metadata, dispatch id)
    token: str  # lets the job join its room as the accepted agent participant
    identity: str
    url: str  # where to connect; empty means the engine's URL


@dataclasses.dataclass(frozen=True)
class StartJob:
    """Run a job in this process.

    ``entrypoint_blob`` None: the code follows in a :class:`JobCode` (or an :class:`AbortJob`) message,
    which the kernel sends once it has shipped the entrypoint; the job sets itself up meanwhile.
    """

    job_id: str
    room: str
    entrypoint_blob: bytes | None
    prewarm_blob: bytes | None
    prewarm_digest: str | None
    shutdown_process_timeout: float
    departure_timeout: int
    log_dir: str
    credentials: EngineCredentials | None
    launched_at: float  # time.perf_counter() in the kernel (CLOCK_MONOTONIC: comparable across processes)
    assignment: Assignment | None = None  # a dispatched job: join with the server's token, create no room
    recording: Any = None  # recorder.RecordingOptions; None: the defaults (recording on)
    metadata: str = ""  # ctx.job.metadata of a launched job
    agent_name: str = ""  # ctx.job.agent_name, and the agent participant's lk.agent.name attribute
    environ: dict[str, str] | None = None  # the kernel's os.environ at launch: the job's environment
    sys_path: tuple[str, ...] = ()  # the kernel's sys.path at launch: entries the job lacks are added
    session_end_blob: bytes | None = None  # an AgentServer's on_session_end(ctx), shipped like the entrypoint
    token: str | None = None  # the agent's token when the kernel minted it at launch (tokens.token_at_launch)
    token_follows: bool = False  # the kernel mints it after sending this: an AgentToken is the next message
    room_follows: bool = False  # the kernel creates the room (nbagents.runtime.rooms): a RoomCreated follows


@dataclasses.dataclass(frozen=True)
class AgentToken:
    """The agent's token, minted in the kernel while the job sets itself up (``StartJob.token_follows``)."""

    token: str


@dataclasses.dataclass(frozen=True)
class RoomCreated:
    """The kernel created the job's room (``StartJob.room_follows``), or could not: ``error`` says why.

    Sent once the job's entrypoint has started (after its code and credentials), read by its reader thread.
    """

    error: str | None = None


@dataclasses.dataclass(frozen=True)
class JobCode:
    """The job's code, shipped (:func:`nbagents.runtime.shipping.ship`) after a ``StartJob`` without it."""

    entrypoint_blob: bytes
    session_end_blob: bytes | None = None


@dataclasses.dataclass(frozen=True)
class AbortJob:
    """The code could not be shipped (``launch()`` raised): end without running anything, leaving no result."""


@dataclasses.dataclass(frozen=True)
class StopJob:
    """Shut the job down (``job.stop()``), running its shutdown callbacks."""

    reason: str


# job process -> kernel ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ProcessReady:
    """An idle process is ready for a job (after its prewarm, if any)."""

    pid: int
    prewarm_digest: str | None
    error: str | None = None  # the prewarm function raised: this traceback


@dataclasses.dataclass(frozen=True)
class Heartbeat:
    """Sent by the job's event loop itself every few hundred milliseconds while it runs.

    The kernel marks a job unresponsive when they stop (``nbagents.runtime.watchdog``): a blocked event
    loop, a process stopped by SIGSTOP and native code holding the GIL all stop them.
    """


HEARTBEAT = Heartbeat()


@dataclasses.dataclass(frozen=True)
class JobFinished:
    """The job's final result, sent just before the process exits."""

    state: str
    shutdown_reason: str
    error: str | None
    persisted: dict[str, Any]


def frame(message: Any) -> bytes:
    """One message as it travels on the wire (length header + pickle)."""
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(data)) + data


class Channel:
    """One end of a job's socket pair: thread-safe framed ``send``, blocking ``recv``."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._send_lock = threading.Lock()
        self._closed = False

    def send(self, *messages: Any) -> bool:
        """Send messages (in one write), waiting for the socket; False when the other end is gone (never raises
        for a closed peer). A job process sends through an :class:`Outbox` instead, which never waits."""
        return self.send_bytes(b"".join(map(frame, messages)))

    def recv(self) -> Any:
        """The next message; raises EOFError when the other end closed."""
        header = self._recv_exact(_HEADER.size)
        (size,) = _HEADER.unpack(header)
        if size > MAX_FRAME:
            raise EOFError(f"frame of {size} bytes exceeds the limit; the peer is not an nbagents process")
        return pickle.loads(self._recv_exact(size))

    def _recv_exact(self, size: int) -> bytes:
        chunks = bytearray()
        while len(chunks) < size:
            try:
                chunk = self.sock.recv(size - len(chunks))
            except OSError as exc:
                raise EOFError(str(exc)) from exc
            if not chunk:
                raise EOFError("peer closed the channel")
            chunks += chunk
        return bytes(chunks)

    def send_nowait(self, data: bytes) -> int:
        """Write what the socket takes now without waiting (bytes written; 0 when its buffer is full).

        Raises OSError when the other end is gone. The caller keeps frames whole and in order (see Outbox)."""
        with self._send_lock:
            if self._closed:
                raise BrokenPipeError("channel closed")
            try:
                return self.sock.send(data, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return 0

    def send_bytes(self, data: bytes) -> bool:
        """Write framed bytes, waiting for the socket as long as it takes; False when the other end is gone."""
        with self._send_lock:
            if self._closed:
                return False
            try:
                self.sock.sendall(data)
                return True
            except OSError:
                return False

    def close(self) -> None:
        with self._send_lock:
            self._closed = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


class Outbox:
    """A job's messages to the kernel, sent without ever making the sender wait (safe from any thread).

    A message goes straight into the socket when it has room; when the kernel reads slowly (a cell holding
    the GIL, many busy jobs) the rest waits here and a thread of its own writes it, in order. A job's event
    loop therefore never stalls because its notebook is busy. Held bytes are bounded by ``limit``
    (bytes): past it, whole messages are dropped (the job's event log on disk keeps its events) and
    ``on_dropped(count)`` is called, on the writing thread, once the kernel has read the rest;
    ``send(..., keep=True)`` is never dropped.
    """

    def __init__(self, channel: Channel, *, limit: int = 32 * 1024 * 1024,
                 on_dropped: Callable[[int], None] | None = None) -> None:
        self._channel = channel
        self._limit = limit
        self._on_dropped = on_dropped
        self._held: collections.deque[bytes] = collections.deque()
        self._held_bytes = 0
        self._writing = False  # the thread holds a chunk it is writing: nothing may overtake it
        self._dropped = 0
        self._gone = False
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None

    def send(self, *messages: Any, keep: bool = False) -> bool:
        """Queue messages in order; False once the kernel is gone (never raises, never waits for the socket)."""
        data = b"".join(map(frame, messages))
        with self._wake:
            if self._gone:
                return False
            if not self._held and not self._writing:
                try:
                    written = self._channel.send_nowait(data)
                except OSError:
                    self._gone = True
                    self._wake.notify_all()
                    return False
                if written == len(data):
                    return True
                data = data[written:]  # the tail of a frame already begun: it must follow, whatever the limit
                keep = True
            if not keep and self._held_bytes + len(data) > self._limit:
                self._dropped += len(messages)
                return True
            self._held.append(data)
            self._held_bytes += len(data)
            if self._thread is None:
                self._thread = threading.Thread(target=self._write_held, name="nbagents-outbox", daemon=True)
                self._thread.start()
            self._wake.notify_all()
        return True

    def flush(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for everything held to be written; True when it was (or the kernel is gone)."""
        deadline = time.monotonic() + timeout
        with self._wake:
            while (self._held or self._writing) and not self._gone:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._wake.wait(remaining)
        return True

    def _write_held(self) -> None:
        while True:
            with self._wake:
                while not self._held and not self._gone:
                    self._wake.wait()
                if self._gone:
                    return
                data = self._held.popleft()
                self._held_bytes -= len(data)
                self._writing = True
            ok = self._channel.send_bytes(data)
            with self._wake:
                self._writing = False
                if not ok:
                    self._gone = True
                dropped = 0
                if not self._held and self._dropped:
                    dropped, self._dropped = self._dropped, 0
                self._wake.notify_all()
            if dropped and self._on_dropped is not None:
                self._on_dropped(dropped)
