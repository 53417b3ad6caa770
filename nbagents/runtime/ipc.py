"""Length-framed typed messages between the kernel and a job process (a Unix socket pair).

Each frame is a 4-byte big-endian length followed by a pickled message: either an
:mod:`nbagents.runtime.events` event (job -> kernel) or one of the control messages below. Both ends
are nbagents code in the same interpreter build, so pickle is safe here; user code travels inside
``StartJob`` as cloudpickle bytes and is only unpickled in the job process.
"""

from __future__ import annotations

import dataclasses
import pickle
import socket
import struct
import threading
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
    session_end_blob: bytes | None = None  # an AgentServer's on_session_end(ctx), shipped like the entrypoint
    token: str | None = None  # the agent's token when the kernel minted it at launch (tokens.token_at_launch)
    token_follows: bool = False  # the kernel mints it after sending this: an AgentToken is the next message


@dataclasses.dataclass(frozen=True)
class AgentToken:
    """The agent's token, minted in the kernel while the job sets itself up (``StartJob.token_follows``)."""

    token: str


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

    def send(self, message: Any) -> bool:
        """Send one message; False when the other end is gone (never raises for a closed peer)."""
        data = frame(message)
        with self._send_lock:
            if self._closed:
                return False
            try:
                self.sock.sendall(data)
                return True
            except OSError:
                return False

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

    def close(self) -> None:
        with self._send_lock:
            self._closed = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
