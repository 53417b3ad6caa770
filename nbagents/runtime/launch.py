"""``launch()``: start a job from a notebook without blocking it.

The entrypoint (and prewarm) are shipped by value during the call, so an unshippable global fails the
call itself. The job takes a warm idle process when one fits (milliseconds) or a process freshly forked
from the zygote (started on first use); the engine starts alongside, and its credentials reach the job
process whenever they are ready. A warm process is told of its job first and sets it up while the
entrypoint is being shipped (the code follows in a second message); when shipping fails, it is told to
abort and exits, and its directory is removed before ``launch()`` raises.

Rooms are created with ``departure_timeout`` (default 3 s, :data:`DEFAULT_DEPARTURE_TIMEOUT`): that many
seconds after the last human leaves, the server closes the room, which ends the job — the livekit way,
on every engine. Notebooks want a short one; production servers default to 20 s. The kernel creates the
room once the job's entrypoint has started, or the job does (:mod:`nbagents.runtime.rooms` says which).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import secrets
import shutil
import signal
import string
import sys
import threading
import time
from pathlib import Path
from typing import Any, Awaitable, Callable

from nbagents.engines.base import Credentials
from nbagents.runtime import events as ev
from nbagents.runtime import ipc
from nbagents.runtime.engine_session import EngineSession, shared_engine
from nbagents.runtime.job import Job
from nbagents.runtime.pool import ProcessHandle, ProcessPool, shared_pool
from nbagents.runtime.recorder import RecordingOptions
from nbagents.runtime.rooms import create_in_background, creates_at_launch
from nbagents.runtime.shipping import digest, ship
from nbagents.runtime.tokens import mints_at_launch, token_at_launch

__all__ = ["DEFAULT_DEPARTURE_TIMEOUT", "JOBS_DIR", "launch", "prepare"]

DEFAULT_DEPARTURE_TIMEOUT = 3
JOBS_DIR = Path(".nbagents") / "jobs"
PRESEND_LIMIT = 64 * 1024  # a StartJob this small is queued in the socket before the fork
EXIT_STATUS_WAIT = 2.0
ABORT_WAIT = 10.0  # how long an aborted job process may take to end before it is killed

logger = logging.getLogger("nbagents")


def launch(
    entrypoint: Callable[[Any], Awaitable[None]],
    room: str = "demo",
    prewarm: Callable[[Any], Any] | None = None,
    shutdown_process_timeout: float = 60.0,
    *,
    departure_timeout: int = DEFAULT_DEPARTURE_TIMEOUT,
    jobs_dir: str | Path | None = None,
    assignment: ipc.Assignment | None = None,
    recording: RecordingOptions | bool = True,
    metadata: str = "",
    agent_name: str = "",
    on_session_end: Callable[[Any], Awaitable[None]] | None = None,
) -> Job:
    """Run ``entrypoint(ctx)`` as a job in its own process, in ``room``; returns the :class:`Job` at once.

    ``ctx`` is livekit-agents' own ``JobContext``. ``prewarm(proc)`` runs in the process before the job (in
    a warm idle process ahead of time, once it has been used) and fills ``proc.userdata``.
    ``shutdown_process_timeout`` bounds the shutdown: after it the process is killed, whatever ended the
    job. Works from a running event loop (a notebook cell) and from plain synchronous code. The job sees
    this process's environment (``os.environ``) as it is now, and imports modules from its ``sys.path`` as it
    is now (entries added since the job processes were preloaded are added in the job).

    ``metadata`` is the job's ``ctx.job.metadata`` (what a dispatch's metadata would be); ``agent_name``
    its ``ctx.job.agent_name`` and the agent participant's ``lk.agent.name`` attribute, as a worker
    registered with that name would give it; ``on_session_end(ctx)`` runs when the job ends, after its
    primary ``AgentSession`` closed (livekit-agents' ``rtc_session(on_session_end=...)``).

    ``departure_timeout`` (whole seconds, default 3; 0 keeps the server's default) is set on the room
    when the job creates it; ``jobs_dir`` (default ``.nbagents/jobs``) holds each job's directory.
    ``assignment``: a job a server dispatched (see :mod:`nbagents.runtime.serve`); the job keeps the
    server's job id and joins with its token instead of creating the room.
    ``recording``: the job records the audio it receives and publishes into ``<job dir>/audio/``
    (Ogg/Opus, bounded; see :class:`~nbagents.runtime.recorder.RecordingOptions`); ``False`` turns it off.
    """
    _check_entrypoint(entrypoint)
    recording_options = RecordingOptions.coerce(recording)
    if prewarm is not None and not callable(prewarm):
        raise TypeError(f"prewarm must be a function taking the JobProcess, got {type(prewarm).__name__}")
    if not isinstance(room, str) or not room.strip():
        raise ValueError(f"room must be a non-empty string, got {room!r}")
    if not isinstance(shutdown_process_timeout, (int, float)) or shutdown_process_timeout <= 0:
        raise ValueError(f"shutdown_process_timeout must be a positive number of seconds, got {shutdown_process_timeout!r}")
    if not isinstance(departure_timeout, int) or departure_timeout < 0:
        raise ValueError(f"departure_timeout must be a non-negative whole number of seconds, got {departure_timeout!r}")
    if not isinstance(metadata, str):
        raise TypeError(f"metadata must be a string (ctx.job.metadata; use json.dumps for structures), got {type(metadata).__name__}")
    if not isinstance(agent_name, str):
        raise TypeError(f"agent_name must be a string, got {type(agent_name).__name__}")
    if on_session_end is not None and not callable(on_session_end):
        raise TypeError(f"on_session_end must be an async function taking the JobContext, got {type(on_session_end).__name__}")

    pool = shared_pool()
    # a fresh kernel's first job waits for the zygote (Python plus livekit-agents: seconds): start it before
    # shipping, creating the job's directory and starting the engine, which then happen while it imports
    pool.zygote  # noqa: B018
    environ = dict(os.environ)
    prewarm_spec = None
    if prewarm is not None:
        prewarm_blob = ship(prewarm, role="prewarm")
        # the environment is part of what a prewarmed process ran with: a changed one needs a fresh prewarm
        prewarm_spec = (prewarm_blob, digest(prewarm_blob + _environ_bytes(environ)), environ)

    job_id = assignment.job_id if assignment is not None else _new_job_id()
    log_dir = Path(os.path.abspath(jobs_dir if jobs_dir is not None else JOBS_DIR)) / job_id
    engine = shared_engine()
    engine.start()
    pool.use_prewarm(prewarm_spec)
    handle = pool.acquire(prewarm_spec[1] if prewarm_spec else None)
    code: ipc.JobCode | None = None
    if handle is None:  # a fresh process: its StartJob is queued before the fork, with the code in it
        code = _ship_code(entrypoint, on_session_end)
    created = _make_job_dir(log_dir, handle, pool)
    try:
        loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    launched_at = time.perf_counter()
    credentials = engine.credentials
    mint = credentials is not None and assignment is None
    # a warm process is told of its job first; the token (a quarter of a millisecond) follows
    token_follows = mint and handle is not None and mints_at_launch()
    room_follows = assignment is None and creates_at_launch()  # the kernel creates the room (_JobLink._create_room)
    start = ipc.StartJob(
        job_id=job_id,
        room=room,
        entrypoint_blob=code.entrypoint_blob if code is not None else None,
        prewarm_blob=prewarm_spec[0] if prewarm_spec else None,
        prewarm_digest=prewarm_spec[1] if prewarm_spec else None,
        shutdown_process_timeout=float(shutdown_process_timeout),
        departure_timeout=departure_timeout,
        log_dir=str(log_dir),
        credentials=_to_message(credentials) if credentials else None,
        launched_at=launched_at,
        assignment=assignment,
        recording=recording_options,
        metadata=metadata,
        agent_name=agent_name,
        environ=environ,
        sys_path=tuple(sys.path),
        session_end_blob=code.session_end_blob if code is not None else None,
        token=token_at_launch(credentials.api_key, credentials.api_secret, job_id, room, agent_name)
        if mint and not token_follows else None,
        token_follows=token_follows,
        room_follows=room_follows,
    )
    if handle is not None:
        # a warm process: it sets the job up (environment, log, JobContext, monitors) while its token is minted
        # and the entrypoint shipped here (cloudpickle walks sys.modules for each module the code uses:
        # milliseconds in a kernel that imported livekit-agents); they follow as further messages
        handle.channel.send(start)
        try:
            if token_follows:
                assert credentials is not None
                token = token_at_launch(credentials.api_key, credentials.api_secret, job_id, room, agent_name)
                handle.channel.send(ipc.AgentToken(token or ""))
            code = _ship_code(entrypoint, on_session_end)
        except BaseException:
            _abort(handle, created, log_dir, pool)
            raise
        handle.channel.send(code)
    job = Job(job_id, room, shutdown_process_timeout=float(shutdown_process_timeout), log_dir=log_dir, loop=loop,
              launched_perf=launched_at)
    job.engine_url = credentials.url if credentials else None
    if handle is not None:
        _JobLink(job, handle, start, engine, pool).begin(sent=True)
    else:
        threading.Thread(target=_fork_and_begin, args=(job, pool, start, engine), name=f"nbagents-launch-{job_id}", daemon=True).start()
    return job


_ID_ALPHABET = string.ascii_letters + string.digits


def _new_job_id() -> str:
    """``AJ_`` and 12 random letters or digits (one draw from the system's random source for all 12)."""
    n = secrets.randbelow(len(_ID_ALPHABET) ** 12)
    digits = []
    for _ in range(12):
        n, digit = divmod(n, len(_ID_ALPHABET))
        digits.append(_ID_ALPHABET[digit])
    return "AJ_" + "".join(digits)


def _ship_code(entrypoint: Callable[..., Any], on_session_end: Callable[..., Any] | None) -> ipc.JobCode:
    """The job's code, shipped by value; :class:`~nbagents.runtime.shipping.ShippingError` naming the culprit."""
    entrypoint_blob = ship(entrypoint, role="entrypoint")
    session_end_blob = ship(on_session_end, role="on_session_end") if on_session_end is not None else None
    return ipc.JobCode(entrypoint_blob, session_end_blob)


def _make_job_dir(log_dir: Path, handle: ProcessHandle | None, pool: ProcessPool) -> Path:
    """Create the job's directory (and its missing parents); returns the topmost directory it created."""
    created = log_dir
    while not created.parent.exists():
        created = created.parent
    try:
        log_dir.mkdir(parents=True)
    except OSError as exc:
        if handle is not None:
            handle.retire()  # told nothing yet: an idle process exits when its channel closes
            pool.refill()
        raise OSError(
            f"cannot create the job's directory {log_dir} ({exc.strerror or exc}); "
            f"run the notebook from a writable directory or pass jobs_dir=... to launch()"
        ) from exc
    return created


def _abort(handle: ProcessHandle, created: Path, log_dir: Path, pool: ProcessPool) -> None:
    """Undo a launch whose code could not be shipped: the process (told to abort) exits, its directory goes.

    Waits for the process to end (milliseconds: it has run no user code but a prewarm), reading and
    dropping what it sent meanwhile, so that nothing of the job is left when ``launch()`` raises.
    """
    channel = handle.channel
    if channel.send(ipc.AbortJob()):
        deadline = time.monotonic() + ABORT_WAIT
        try:
            while (remaining := deadline - time.monotonic()) > 0:
                channel.sock.settimeout(remaining)
                channel.recv()
        except EOFError:  # the process closed its end (it exits), or ABORT_WAIT passed
            pass
    if not handle.exited.wait(EXIT_STATUS_WAIT) and handle.alive():
        with contextlib.suppress(ProcessLookupError):
            os.kill(handle.pid, signal.SIGKILL)  # not reaped yet (no "exited" from the zygote): still ours
        handle.exited.wait(EXIT_STATUS_WAIT)
    channel.close()
    shutil.rmtree(log_dir, ignore_errors=True)
    for directory in [log_dir.parent, *log_dir.parent.parents]:
        if directory == created.parent:
            break
        try:
            directory.rmdir()  # a parent this launch created, unless another job's directory is in it now
        except OSError:
            break
    pool.refill()


def prepare() -> None:
    """Start the engine and the job-process zygote in the background, ahead of the first launch.

    Returns at once. ``%load_ext nbagents`` is a good moment: the first job then starts in
    milliseconds instead of the second a fresh zygote (Python plus ``import livekit``) takes.
    """
    shared_engine().start()
    shared_pool().start()


def _check_entrypoint(entrypoint: Any) -> None:
    if not callable(entrypoint):
        raise TypeError(f"the entrypoint must be an async function taking the JobContext, got {type(entrypoint).__name__}")
    target = getattr(entrypoint, "func", entrypoint)  # functools.partial
    if not (inspect.iscoroutinefunction(target) or inspect.iscoroutinefunction(getattr(target, "__call__", None))):
        name = getattr(entrypoint, "__name__", repr(entrypoint))
        raise TypeError(f"the entrypoint {name!r} must be an async function: write `async def {name}(ctx: JobContext):`")


def _environ_bytes(environ: dict[str, str]) -> bytes:
    return "\0".join(f"{name}={value}" for name, value in sorted(environ.items())).encode("utf-8", "surrogateescape")


def _to_message(credentials: Credentials) -> ipc.EngineCredentials:
    return ipc.EngineCredentials(*credentials)


def _fork_and_begin(job: Job, pool: ProcessPool, start: ipc.StartJob, engine: EngineSession) -> None:
    first = ipc.frame(start)
    presented = len(first) <= PRESEND_LIMIT
    try:
        handle = pool.fork(first if presented else None)
    except Exception as exc:
        job._on_event(ev.ErrorRaised(where="launch", message=f"could not start the job process: {exc}", traceback=""))
        job._on_process_gone(None)
        return
    _JobLink(job, handle, start, engine, pool).begin(sent=presented)


class _JobLink:
    """Connects a Job model to its process: sends StartJob/credentials/stop, reads events.

    The pool forks a replacement idle process once the job's entrypoint has started (or its process is
    gone): forking sooner would compete with the job's own start for the CPU.
    """

    def __init__(self, job: Job, handle: ProcessHandle, start: ipc.StartJob, engine: EngineSession,
                 pool: ProcessPool) -> None:
        self.job, self.handle, self.start, self.engine, self.pool = job, handle, start, engine, pool
        self._refilled = False
        self._credentials = start.credentials  # or those sent once the engine is ready

    def _refill(self) -> None:
        if not self._refilled:
            self._refilled = True
            self.pool.refill()

    def begin(self, *, sent: bool) -> None:
        """Follow the job; ``sent``: its StartJob (and code) are already on their way."""
        self.job.pid = self.handle.pid
        self.handle.expect_shutdown_within(self.start.shutdown_process_timeout)  # the zygote's kill, if the kernel dies
        if not sent:
            self.handle.channel.send(self.start)
        if self.start.credentials is None:
            self.engine.when_ready(self._engine_ready)
        threading.Thread(target=self._read, name=f"nbagents-job-{self.job.id}", daemon=True).start()
        self.job._attach(self)

    def _engine_ready(self, credentials: Credentials | None, error: str | None) -> None:
        if credentials is not None:
            self.job.engine_url = credentials.url
            self._credentials = _to_message(credentials)
            self.handle.channel.send(self._credentials)
        else:
            self.handle.channel.send(ipc.EngineFailed(error or "unknown error"))

    def _create_room(self) -> None:
        """The kernel creates the job's room (``StartJob.room_follows``) once the job's entrypoint has started
        (as the job itself would: the request's work stays off the job's start); the job hears the outcome
        (``RoomCreated``), and its room connects once the room exists."""
        credentials = self._credentials
        if not self.start.room_follows or credentials is None:
            return
        channel = self.handle.channel
        create_in_background(credentials.url, credentials.api_key, credentials.api_secret, self.start.room,
                             self.start.departure_timeout, lambda error: channel.send(ipc.RoomCreated(error)))

    def stop(self, reason: str) -> None:
        self.handle.channel.send(ipc.StopJob(reason))

    def _read(self) -> None:
        channel = self.handle.channel
        while True:
            try:
                message = channel.recv()
            except EOFError:
                break
            except Exception as exc:  # a corrupt frame: report it and treat the process as gone
                self.job._on_event(ev.ErrorRaised(where="ipc", message=f"unreadable message from the job: {exc}", traceback=""))
                break
            if isinstance(message, ipc.Heartbeat):
                self.job._on_heartbeat()
            elif isinstance(message, ev.Event):
                self.job._on_event(message)
                if isinstance(message, ev.EntrypointStarted):
                    self._create_room()
                    self._refill()
            elif isinstance(message, ipc.JobFinished):
                self.job._on_finished_message(message)
        self._refill()
        self.handle.exited.wait(EXIT_STATUS_WAIT)
        channel.close()
        self.job._on_process_gone(self.handle.exit_code)
