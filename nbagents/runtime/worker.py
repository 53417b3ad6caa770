"""The job process: receives a job over its IPC channel, runs the entrypoint, and ends it cleanly.

One process runs one job, under livekit-agents' own ``JobContext`` and ``JobProcess`` (built as
livekit-agents' job process builds them: :mod:`nbagents.runtime._agents`), so ``get_job_context()``,
``AgentSession`` and the rest of livekit-agents work as under a livekit-agents worker. What nbagents adds:

- the environment: the kernel's ``os.environ`` as it was at launch, then the engine's credentials
  (``LIVEKIT_URL``, ``LIVEKIT_API_KEY``, ``LIVEKIT_API_SECRET``, as livekit-agents exports them);
- the room: a launched job's is created with its ``departure_timeout`` (by the kernel, or by the job itself:
  :mod:`nbagents.runtime.rooms`) and its agent token minted (likewise by the kernel or the job); a
  dispatched job (``%agent serve``) joins with the server's token;
- the shutdown, in livekit-agents' order (the entrypoint's grace, the primary ``AgentSession`` closing, its
  ``on_session_end``, the room disconnecting, the shutdown callbacks), with each callback's outcome and
  JSON return value kept, and ``shutdown_process_timeout`` enforced from a thread on every ending path
  (``ctx.shutdown()``, ``job.stop()``, SIGTERM, the room closing or being deleted, the server going away,
  an exception in the entrypoint, the kernel going away): when the deadline passes, it records which
  shutdown callbacks were cut off and exits. The kernel kills it one second later if it has not;
- signals: SIGINT is ignored (as livekit-agents' job processes do: a Ctrl-C meant for a terminal or the
  kernel must not kill jobs); SIGTERM starts a normal shutdown (livekit-agents ignores it; here it is how
  a terminal asks a job to end);
- the events the kernel and the on-disk log receive (:mod:`nbagents.runtime.events`).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
import select
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterator

from livekit import rtc
from livekit.protocol import agent as agent_pb
from livekit.protocol import models as models_pb

from nbagents.runtime import _agents
from nbagents.runtime import events as ev
from nbagents.runtime import ipc
from nbagents.runtime.context import JobRoom
from nbagents.runtime.conversation import TRANSCRIPT_FILE, VoiceSession, transcript_document
from nbagents.runtime.monitor import RoomMonitor, SessionMonitor
from nbagents.runtime.persist import EventLog, jsonable, write_json_atomic
from nbagents.runtime.recorder import AudioRecorder, RecordingOptions
from nbagents.runtime.rooms import RoomNotCreated, create_room, describe_failure
from nbagents.runtime.shipping import unship
from nbagents.runtime.tokens import agent_identity, agent_token
from nbagents.runtime.tracebacks import format_current_exception, format_exception, format_frames

__all__ = ["JobRuntime", "process_main", "set_log_levels"]

HEARTBEAT_SECONDS = 0.2
UNRESPONSIVE_AFTER_SECONDS = 2.0
BLOCKED_STOP_GRACE_SECONDS = 3.0
# How long the entrypoint may still run once the job is shutting down, before it is cancelled. livekit-agents
# waits 15 s on every path; nbagents does too when the job itself asked (ctx.shutdown(), the entrypoint
# raising), and 1 s when the ending came from outside (a stop from the notebook, SIGTERM, the room closing,
# the kernel exiting), where the entrypoint is usually still waiting for something that will not come.
ENTRYPOINT_GRACE_SECONDS = 15.0
EXTERNAL_STOP_GRACE_SECONDS = 1.0
SESSION_CLOSE_TIMEOUT_SECONDS = 60.0  # livekit-agents' guard on the primary AgentSession's aclose()
SESSION_END_TIMEOUT_SECONDS = 300.0  # livekit-agents' default session_end_timeout (on_session_end)
DISCONNECT_TIMEOUT_SECONDS = 3.0
FINAL_FLUSH_SECONDS = 1.0  # at least this long for the kernel to read the last events, even past the deadline
NOT_CONNECTED_WARNING_SECONDS = 10.0  # as livekit-agents warns
AUDIO_LOG_EVERY = 20  # one AudioStats of 20 (about one a second per track) goes to the on-disk log

# the shutdown reasons livekit-agents passes to shutdown callbacks, for the paths it shares with nbagents
REASON_USER = "user requested"
REASON_ROOM_DISCONNECTED = "room disconnected"
REASON_CRASHED = "job crashed"
REASON_KERNEL_GONE = "the notebook kernel exited"
REASON_SIGTERM = "SIGTERM"

logger = logging.getLogger("nbagents.job")


def process_main(sock_fd: int, *, kernel_signs: bool = False) -> int:
    """Entry of a freshly forked job process: wait (idle) for a job, then run it.

    ``kernel_signs``: the kernel mints the job's token and creates its room (:mod:`nbagents.runtime.rooms`).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # as livekit-agents' job processes: Ctrl-C is not for jobs
    channel = ipc.Channel(_socket_from_fd(sock_fd))
    job_waiting = _readable(channel, 0)  # queued before the fork: no time to warm up, run it now
    host = _Host(channel)
    proc = current_process()
    warm = False
    if not job_waiting:
        host.warm_up(sign=not kernel_signs)  # nobody is waiting for this process yet: pay the one-off costs now
        warm = True
    runtime = JobRuntime(host, proc)  # what does not depend on the job is built before it comes
    channel.send(ipc.ProcessReady(os.getpid(), None))  # the pool offers idle processes only from now on
    while True:
        message = host.next_message()
        if message is None:
            return 0  # the kernel closed our channel before giving us a job
        if isinstance(message, ipc.Prewarm):
            _apply_environment(message.environ)
            with runtime.holding_output():  # what the prewarm prints goes to the log of the job that comes
                error = _run_prewarm(proc, message.blob)
            proc._nbagents_prewarm_digest = None if error else message.digest  # type: ignore[attr-defined]
            channel.send(ipc.ProcessReady(os.getpid(), message.digest, error))
            warm = True
        elif isinstance(message, ipc.StartJob):
            return runtime.run(message, warm=warm)


_process: Any = None


def current_process() -> Any:
    """livekit-agents' ``JobProcess`` of this process (one per process: prewarm fills its ``userdata``
    before the job, which then finds it in ``ctx.proc``)."""
    global _process
    if _process is None:
        _process = _agents.new_job_process()
    return _process


class _Host:
    """What a job process sets up once, before its job arrives: the event loop and the channel reader.

    While idle, the main thread reads the channel itself (one wake-up from ``send`` to running the
    job); once a runtime is attached, the reader thread (already started) takes over and hands it
    every message (``None`` when the kernel's end closed).
    """

    def __init__(self, channel: ipc.Channel) -> None:
        self.channel = channel
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        self._runtime: JobRuntime | None = None
        self._attached = threading.Event()
        threading.Thread(target=self._read, name="nbagents-ipc", daemon=True).start()
        # started now, while idle: starting a thread on a busy machine can take milliseconds of the launch
        threading.Thread(target=self._watch, name="nbagents-watchdog", daemon=True).start()

    def _watch(self) -> None:
        self._attached.wait()
        assert self._runtime is not None
        self._runtime._watchdog()

    def _read(self) -> None:
        self._attached.wait()
        runtime = self._runtime
        assert runtime is not None
        while True:
            try:
                message = self.channel.recv()
            except EOFError:
                message = None
            runtime.on_message(message)
            if message is None:
                return

    def next_message(self) -> Any:
        try:
            return self.channel.recv()
        except EOFError:
            return None

    def attach(self, runtime: JobRuntime) -> None:
        self._runtime = runtime
        self._attached.set()

    def warm_up(self, *, sign: bool = True) -> None:
        """Start the livekit FFI (threads: only after the fork, never in the zygote) and rehearse a job.

        A forked process pays copy-on-write page faults the first time it touches the code and objects
        of a job's start; touching them now keeps them off the launch path. ``sign``: the job may sign
        (its token, its room's creation), so the rehearsal signs a token too; when the kernel does both
        (:mod:`nbagents.runtime.rooms`), the signing code's pages (PyJWT checks the secret with
        cryptography's library) stay out of this process.
        """
        from livekit.rtc._ffi_client import FfiClient

        FfiClient.instance  # noqa: B018

        async def rehearsal() -> None:
            room = rtc.Room()
            job = _job_proto("AJ_rehearsal", "rehearsal", metadata="", agent_name="")
            if sign:
                agent_token("devkey", "rehearsal-secret-rehearsal-secret", "AJ_rehearsal", "rehearsal", "")
            # a job's own token is signed when first read, as here
            ctx = _agents.new_job_context(proc=current_process(), job=job, url="ws://127.0.0.1:1", token=lambda: "rehearsal",
                                          identity="agent-rehearsal", worker_id="rehearsal", room=room,
                                          on_connect=lambda: None, on_shutdown=lambda reason: None)
            _agents.record_shutdown_callbacks(ctx, lambda entry, callback, takes_reason: None)
            ctx._tempdir.cleanup()  # the context's temporary directory (a real job's cleanup removes it)
            blob = _ship_for_rehearsal()
            await unship(blob)(None)
            _apply_environment(dict(os.environ))  # a job makes the environment the kernel's: its objects
            with tempfile.TemporaryDirectory(prefix="nbagents-rehearsal-") as directory:
                log = EventLog(Path(directory) / "events.jsonl")
                log.append(ev.StateChanged(state="running").to_json())
                log.close()
            ipc.frame(ev.StateChanged(state="running"))

        self.loop.run_until_complete(rehearsal())


def _ship_for_rehearsal() -> bytes:
    from nbagents.runtime.shipping import ship

    async def noop(ctx: Any) -> None:
        return None

    return ship(noop)


def _socket_from_fd(fd: int) -> Any:
    import socket

    return socket.socket(fileno=fd)


def _readable(channel: ipc.Channel, timeout: float) -> bool:
    ready, _, _ = select.select([channel.sock], [], [], timeout)
    return bool(ready)


def _run_prewarm(proc: Any, blob: bytes) -> str | None:
    try:
        fnc = unship(blob)
        fnc(proc)
        return None
    except BaseException:
        return format_current_exception()


def _apply_environment(environ: dict[str, str] | None) -> None:
    """Make this process's environment the kernel's, as it was when the job was launched."""
    if environ is None:
        return
    for name in [name for name in os.environ if name not in environ]:
        del os.environ[name]
    for name, value in environ.items():
        if os.environ.get(name) != value:
            os.environ[name] = value


def _extend_sys_path(kernel_path: tuple[str, ...]) -> None:
    """Add the kernel's ``sys.path`` entries this process lacks (a notebook's ``sys.path.append``), in its order."""
    known = set(sys.path)
    sys.path.extend(entry for entry in kernel_path if entry not in known)


def set_log_levels() -> None:
    """A job's log levels: INFO and up from its own code, WARNING and up from the livekit SDKs.

    The zygote sets them once before it forks: ``Logger.setLevel`` clears every logger's cache, and in a
    forked process writing to each of livekit-agents' loggers copies their memory pages (about half a
    millisecond of a job's start). A level already right is left alone.
    """
    root = logging.getLogger()
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)
    sdk = logging.getLogger("livekit")
    if sdk.level != logging.WARNING:
        sdk.setLevel(logging.WARNING)


def _job_proto(job_id: str, room: str, *, metadata: str, agent_name: str) -> Any:
    """The ``livekit.Job`` a launched job runs as (what a dispatch would have given it)."""
    return agent_pb.Job(id=job_id, room=models_pb.Room(name=room), type=agent_pb.JobType.JT_ROOM,
                        metadata=metadata, agent_name=agent_name)


class _Callback:
    """One registered shutdown callback: the entry livekit-agents keeps, and what nbagents needs to run it."""

    def __init__(self, name: str, entry: Callable[[str], Any], callable_: Callable[..., Any], takes_reason: bool) -> None:
        self.name = name
        self.entry = entry  # what livekit-agents holds in ctx._shutdown_callbacks
        self.callable = callable_  # what the user registered (its return value is persisted)
        self.takes_reason = takes_reason
        self.framework = _agents.framework_callback(callable_)  # an AgentSession closing, not a user's hook


class JobRuntime:
    """Runs one job in this process: lifecycle, events, deadline, persisted state.

    Made while the process is idle, with what does not depend on the job: the job's ``rtc.Room`` and the
    monitors registered on it, the outbox, the output streams. :meth:`run` gives it its job.
    """

    start: ipc.StartJob
    warm: bool
    log_dir: Path

    def __init__(self, host: _Host, proc: Any) -> None:
        self.host = host
        self.channel = host.channel
        # what the job sends the kernel: never waits for it (a busy kernel must not stall the job's event loop)
        self.outbox = ipc.Outbox(self.channel, on_dropped=self._on_events_dropped)
        self.proc = proc
        self.kernel_alive = True
        self.loop: asyncio.AbstractEventLoop = host.loop
        self.ctx: Any = None
        self.entrypoint_error: str | None = None
        self.failure: str | None = None
        self.shutdown_reason: str | None = None
        self.deadline: float | None = None
        self.callback_outcomes: dict[str, ev.CallbackOutcome] = {}
        self.callback_tasks: dict[str, asyncio.Task[Any]] = {}
        self.callbacks: list[_Callback] = []
        self.finished = threading.Event()
        self._finish_lock = threading.Lock()
        self._credentials: ipc.EngineCredentials | None = None
        self._engine_error: str | None = None
        self._credentials_future: asyncio.Future[None] | None = None
        self._code_pending = False
        self._token: str | None = None
        self._code: ipc.JobCode | None = None
        self._shutdown_future: asyncio.Future[tuple[str, bool]] | None = None
        self._room_created: asyncio.Future[None] | None = None
        self._close_hooks: list[Callable[[], Awaitable[Any]]] = []
        self._connected = False
        self._last_beat = time.monotonic()
        self._audio_count = 0
        self._state = "starting"
        # the entrypoint has started and the kernel is not told yet (see _main); _start_lock guards it
        self._start_events: tuple[ev.Event, ...] | None = None
        self._start_held_at = 0.0
        self._beating = False
        self._requested_reason: str | None = None  # a stop asked from outside the loop (signal, kernel)
        self._start_lock = threading.Lock()
        self.transcript: list[dict[str, Any]] = []
        self.voice_sessions: dict[int, VoiceSession] = {}  # for transcript.json
        self.room = JobRoom(self)
        self.monitor = RoomMonitor(self.room, self.emit, self.report_exception)
        self._close_hooks.append(self.monitor.flush_logs)
        self.sessions = SessionMonitor(self.emit, self.report_exception)
        _agents.follow_sessions(self._on_session_start)
        self.room.on("disconnected", self._on_disconnected)
        self._log_handler = _EventLogHandler(self)
        self._streams = (_LineStream("PRINT", self.emit, sys.stdout), _LineStream("STDERR", self.emit, sys.stderr))
        self._held_output: list[ev.LogRecord] = []  # printed before the job came (holding_output)

    @contextlib.contextmanager
    def holding_output(self) -> Iterator[None]:
        """While idle: lines printed to ``sys.stdout``/``sys.stderr`` are kept for the job's log (a prewarm's)."""
        saved = sys.stdout, sys.stderr
        streams = _LineStream("PRINT", self._held_output.append), _LineStream("STDERR", self._held_output.append)
        sys.stdout, sys.stderr = streams
        try:
            yield
        finally:
            sys.stdout, sys.stderr = saved
            for stream in streams:
                stream.finish()

    # ---- the process ------------------------------------------------------------------------------

    def run(self, start: ipc.StartJob, *, warm: bool) -> int:
        """Run the job ``start`` describes, then exit the process. ``warm``: the process was made ahead of it."""
        self.start = start
        self.warm = warm
        self.log_dir = Path(start.log_dir)  # launch() made it
        self._credentials = start.credentials
        # the job's code: in StartJob (a freshly forked process), or the next message (a warm process; see launch)
        self._code_pending = start.entrypoint_blob is None
        self._token = start.token  # or an AgentToken message (start.token_follows), or the job signs it
        if not self._code_pending:
            self._code = ipc.JobCode(start.entrypoint_blob, start.session_end_blob)
        _apply_environment(start.environ)  # before any user code: the kernel's environment at launch
        _extend_sys_path(start.sys_path)  # and where the kernel finds modules (the job's code may import them)
        self.event_log = EventLog(self.log_dir / "events.jsonl")
        self._redirect_output()
        self._install_logging()
        if self._held_output:
            self.emit(*self._held_output)
        self._credentials_future = self.loop.create_future()
        self._shutdown_future = self.loop.create_future()
        if self._credentials is not None:
            _export_credentials(self._credentials)
            self._credentials_future.set_result(None)
        if self.start.room_follows and self.start.assignment is None:  # the kernel creates the room
            self._room_created = self.loop.create_future()
        signal.signal(signal.SIGTERM, self._on_sigterm)
        if not self._code_pending:  # else once the code is in (_receive_code)
            self.host.attach(self)  # the channel reader and the watchdog thread (see _Host) start serving this job
        try:
            self.loop.run_until_complete(self._main())
        except BaseException:
            self.failure = self.failure or format_current_exception()
            self._finish("failed")
        os._exit(0)

    def _redirect_output(self) -> None:
        """Native output (and anything not captured) goes to output.log; Python prints become log events."""
        fd = os.open(self.log_dir / "output.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        sys.stdout, sys.stderr = self._streams

    def _install_logging(self) -> None:
        root = logging.getLogger()
        root.handlers = [h for h in root.handlers if not isinstance(h, _EventLogHandler)]
        root.addHandler(self._log_handler)
        set_log_levels()  # already set in the zygote, unless a prewarm changed them

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        """SIGTERM: a normal shutdown (hooks run, the deadline holds). Runs on the main thread between
        bytecodes, even while the event loop is blocked, so the deadline is armed at once."""
        self._request_shutdown_threadsafe(REASON_SIGTERM)

    # ---- events -----------------------------------------------------------------------------------

    def emit(self, event: ev.Event, *more: ev.Event) -> None:
        """Append events to the on-disk event log, then send them to the kernel (safe from any thread).

        Disk first: whatever the kernel has seen is on disk too, even if the process is killed right after.
        Several events go in one write to each (one log write, one socket send). The entrypoint's start
        (``_announce_start``) always goes before anything the entrypoint itself makes the job emit.
        """
        if self._start_events is not None:
            self._announce_start()
        self._emit_now((event, *more))

    def _announce_start(self) -> None:
        """Emit the entrypoint's start (state ``running``, ``EntrypointStarted``) if it is still held (any thread)."""
        with self._start_lock:
            events, self._start_events = self._start_events, None
        if events is not None:
            self._emit_now(events)

    def _emit_now(self, events: tuple[ev.Event, ...]) -> None:
        records = [record for record in map(self._record, events) if record is not None]
        if records:
            with contextlib.suppress(OSError):
                self.event_log.append(*records)
        if self.kernel_alive and not self.outbox.send(*events):
            self.kernel_alive = False

    def _on_events_dropped(self, count: int) -> None:
        """The kernel read nothing for so long that the outbox dropped ``count`` messages (they are on disk)."""
        self.emit(ev.LogRecord(
            level="WARNING", logger="nbagents",
            message=f"{count} events were not sent to the notebook while it was not reading them; "
                    f"the job's event log keeps them ({self.log_dir / 'events.jsonl'}; audio levels one in {AUDIO_LOG_EVERY})"))

    def _record(self, event: ev.Event) -> dict[str, Any] | None:
        """The job's own record of an event (the transcript, the voice sessions); what the on-disk event log
        gets of it (None: nothing)."""
        if isinstance(event, ev.ConversationItemAdded):
            entry = ev.transcript_entry(event)
            if entry is not None:
                self.transcript.append(entry)
        if isinstance(event, ev.SessionStarted):
            self.voice_sessions[event.session] = VoiceSession.started(event)
        elif isinstance(event, ev.SESSION_EVENTS) and event.session in self.voice_sessions:
            self.voice_sessions[event.session].apply(event)
        if isinstance(event, ev.AudioStats):
            self._audio_count += 1
            if self._audio_count % AUDIO_LOG_EVERY:
                return None
            record = event.to_json()
            record.pop("waveform", None)
            return record
        return event.to_json()

    def set_state(self, state: str, detail: str = "") -> None:
        self._state = state
        self.emit(ev.StateChanged(state=state, detail=detail))

    def report_exception(self, where: str, exc: BaseException) -> None:
        tb = format_exception(exc)
        self.emit(ev.ErrorRaised(where=where, message=f"{type(exc).__name__}: {exc}", traceback=tb))

    # ---- the kernel side of the channel -----------------------------------------------------------

    def on_message(self, message: Any) -> None:
        """A message from the kernel (on the channel's reader thread); None: the kernel is gone."""
        assert self.loop is not None
        if message is None:
            self.kernel_alive = False
            if self.start.room_follows:
                with contextlib.suppress(RuntimeError):  # the loop is closed: the job is over anyway
                    self.loop.call_soon_threadsafe(self._room_settled, "the notebook kernel exited before the room was created")
            self._request_shutdown_threadsafe(REASON_KERNEL_GONE)
            return
        if isinstance(message, ipc.EngineCredentials):
            self._credentials = message
            self.loop.call_soon_threadsafe(_set_result, self._credentials_future, None)
        elif isinstance(message, ipc.EngineFailed):
            self._engine_error = message.message
            self.loop.call_soon_threadsafe(_set_result, self._credentials_future, None)
        elif isinstance(message, ipc.RoomCreated):
            self.loop.call_soon_threadsafe(self._room_settled, message.error)
        elif isinstance(message, ipc.StopJob):
            self._request_shutdown_threadsafe(message.reason)

    def _room_settled(self, error: str | None) -> None:
        """The kernel's word on the room it creates for this job (``RoomCreated``)."""
        created = self._room_created
        if created is None or created.done():
            return
        if error is None:
            created.set_result(None)
        else:
            created.set_exception(RoomNotCreated(error))

    def _receive_token(self) -> None:
        """Read the AgentToken that follows a StartJob with ``token_follows`` (on this thread, as the code)."""
        message = self.host.next_message()
        if isinstance(message, ipc.AgentToken):
            self._token = message.token or None
        else:  # AbortJob, or None: the kernel is gone
            self._code_pending = False
            self.kernel_alive = message is not None

    def _receive_code(self) -> None:
        """Read the message that follows a StartJob without code: the code, or AbortJob (``launch()`` could not
        ship it). The kernel sends nothing else before it, so it is read here, on the loop's thread (one
        wake-up, where the reader thread would add a hop); the reader thread serves the channel from then on."""
        message = self.host.next_message()
        self._code_pending = False
        if isinstance(message, ipc.JobCode):
            self._code = message
            self.host.attach(self)
        else:  # AbortJob, or None: the kernel is gone
            self.kernel_alive = message is not None

    def _request_shutdown_threadsafe(self, reason: str) -> None:
        assert self.loop is not None
        self._requested_reason = self._requested_reason or reason  # kept if the loop never gets to it (_cut_off)
        self._arm_deadline()
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self.request_shutdown, reason)

    # ---- the job context --------------------------------------------------------------------------

    def _build_context(self, url: str, key: str, secret: str) -> Any:
        """livekit-agents' JobContext for this job: the dispatched job and its token, or a launched job's own."""
        start = self.start
        assignment = start.assignment
        if assignment is not None:  # dispatched (%agent serve): the server's job, room and token
            job = agent_pb.Job.FromString(assignment.job)
            url, token, identity = assignment.url or url, assignment.token, assignment.identity
            self._room_created = None
        else:
            job = _job_proto(start.job_id, start.room, metadata=start.metadata, agent_name=start.agent_name)
            identity = agent_identity(start.job_id)
            token = self._token or self._sign_token  # signed when first read: after the entrypoint's first step
            if not start.room_follows:
                self._room_created = self.loop.create_future()  # started right after the entrypoint's task
        self.url = url
        ctx = _agents.new_job_context(
            proc=self.proc, job=job, url=url, token=token, identity=identity, worker_id=f"nbagents-{os.getpid()}",
            room=self.room, on_connect=self._on_ctx_connect, on_shutdown=self._on_ctx_shutdown,
        )
        _agents.record_shutdown_callbacks(ctx, self._on_callback_added)
        return ctx

    def _sign_token(self) -> str:
        """The job's own token (the kernel gave none): signed once, the first time the context reads it."""
        if self._token is None:
            _, key, secret = self._credentials_tuple()
            start = self.start
            self._token = agent_token(key, secret, start.job_id, start.room, start.agent_name)
        return self._token

    def _start_room_creation(self) -> None:
        """CreateRoom with the job's departure_timeout, concurrently with the entrypoint (scheduled after its
        task, so the entrypoint's first lines run first), unless the kernel creates it; the room's
        ``connect`` waits for it."""
        created = self._room_created
        if created is None or self.start.room_follows:
            return
        url, key, secret = self._credentials_tuple()

        async def create() -> None:
            await create_room(url, key, secret, self.start.room, self.start.departure_timeout)

        def done(task: asyncio.Task[None]) -> None:
            if created.done():
                return
            if task.cancelled():
                created.cancel()
            elif task.exception() is not None:
                created.set_exception(task.exception())  # type: ignore[arg-type]
            else:
                created.set_result(None)

        asyncio.ensure_future(create()).add_done_callback(done)

    async def before_connect(self) -> None:
        """Called by the job's room before it connects: the room must exist with the job's settings."""
        if self._room_created is None:
            return
        try:
            await asyncio.shield(self._room_created)
        except Exception as exc:
            raise ConnectionError(
                f"nbagents could not create the room {self.start.room!r} on the LiveKit server at {self.url}: "
                f"{describe_failure(exc)}"
            ) from exc

    def on_room_connected(self, url: str, started: float) -> None:
        """The job's room connected (through ctx.connect(), an AgentSession, or room.connect itself)."""
        self._connected = True
        room = self.ctx.room
        self.emit(
            ev.RoomConnected(
                room=room.name,
                room_sid=room._info.sid,  # known from the join response (the public getter is async)
                url=url,
                identity=room.local_participant.identity,
                seconds=time.perf_counter() - started,
            )
        )
        self.monitor.snapshot()

    def _on_ctx_connect(self) -> None:
        self._connected = True

    def _on_ctx_shutdown(self, reason: str) -> None:
        """``ctx.shutdown(reason)``: the job itself asked to end."""
        self.request_shutdown(reason or REASON_USER, user_initiated=True)

    def _on_callback_added(self, entry: Callable[[str], Any], callback: Callable[..., Any], takes_reason: bool) -> None:
        name = getattr(callback, "__name__", None) or type(callback).__name__
        existing = {cb.name for cb in self.callbacks}
        unique, n = name, 2
        while unique in existing:
            unique, n = f"{name}#{n}", n + 1
        self.callbacks.append(_Callback(unique, entry, callback, takes_reason))

    def _shutdown_callbacks(self) -> list[_Callback]:
        """Every callback livekit-agents would run, in its order, as nbagents runs them."""
        known = {id(cb.entry): cb for cb in self.callbacks}
        found = []
        for entry in _agents.registered_shutdown_callbacks(self.ctx) if self.ctx is not None else []:
            callback = known.get(id(entry))
            if callback is None:  # appended to the list directly: run it as livekit-agents would
                name = getattr(entry, "__qualname__", None) or type(entry).__name__
                callback = _Callback(name, entry, entry, True)
                self.callbacks.append(callback)
            found.append(callback)
        return found

    def _user_callbacks(self) -> list[_Callback]:
        return [cb for cb in self.callbacks if not cb.framework]

    # ---- lifecycle --------------------------------------------------------------------------------

    async def _main(self) -> None:
        start = self.start
        assert self.loop is not None and self._shutdown_future is not None and self._credentials_future is not None
        self.loop.set_exception_handler(self._loop_exception)
        if start.prewarm_blob is not None and getattr(self.proc, "_nbagents_prewarm_digest", None) != start.prewarm_digest:
            error = _run_prewarm(self.proc, start.prewarm_blob)
            if error is not None:
                self._fail_before_start("prewarm", "prewarm raised", error)
                return
        if self._code_pending and self._credentials is None:
            self._receive_code()  # the engine's credentials come after the code
        if start.token_follows:
            self._receive_token()
        if not self._code_pending and self._code is None:
            return  # aborted before anything was set up: nothing to undo
        if not self._credentials_future.done():
            self._beat()  # the kernel hears the job is alive while it waits
        await self._credentials_future  # only waits when the engine was still starting at launch
        if self._engine_error is not None:
            self._fail_before_start("engine", f"no LiveKit server for this job: {self._engine_error}")
            return
        assert self._credentials is not None
        _export_credentials(self._credentials)
        ctx = self.ctx = self._build_context(*self._credentials_tuple())
        deactivate = _agents.activate(ctx)
        self.monitor.recorder = _recorder(start, self)
        # the code: with StartJob (a freshly forked process), or shipped by the kernel meanwhile (a warm one)
        if self._code_pending:
            self._receive_code()
        code = self._code
        try:
            if code is None:  # launch() raised (the code could not be shipped), or the kernel is gone
                return
            entrypoint = unship(code.entrypoint_blob)
            session_end = unship(code.session_end_blob) if code.session_end_blob is not None else None
        except BaseException:
            code = None
            raise
        finally:
            if code is None:  # nothing ran: undo the context (its temporary directory) and end
                with contextlib.suppress(Exception):
                    await _agents.deactivate(ctx)
                deactivate()
        self._state = "running"
        # The entrypoint's first step runs first and the kernel hears of its start right after it (a few hundred
        # microseconds sooner for the entrypoint); anything the job emits meanwhile goes after the start, and the
        # watchdog thread tells the kernel if that first step blocks the loop (_watchdog).
        self._start_held_at = time.monotonic()
        self._start_events = (ev.StateChanged(state="running"),
                              ev.EntrypointStarted(pid=os.getpid(), warm=self.warm, perf_counter=time.perf_counter()))
        entry_task = asyncio.ensure_future(entrypoint(ctx))
        self.loop.call_soon(self._announce_start)
        if not self._beating:
            self.loop.call_soon(self._beat)
        entry_task.add_done_callback(self._on_entrypoint_done)
        self._start_room_creation()
        if start.assignment is None:
            self.loop.call_soon(self._sign_token)  # ready before the room is (ctx.connect() waits for the room)
        # off the launch path: the first result.json says the job started (and who it is)
        self.loop.call_soon(self._write_result_soon, "running")
        warning = self.loop.call_later(NOT_CONNECTED_WARNING_SECONDS, self._warn_not_connected)
        reason, user_initiated = await self._shutdown_future
        warning.cancel()
        await self._shut_down(entry_task, reason, user_initiated, session_end)
        await self._close(deactivate)

    def _on_session_start(self, session: Any, agent: Any, primary: bool) -> None:
        self.sessions.attach(session, agent, primary=primary)

    def _fail_before_start(self, where: str, failure: str, detail: str = "") -> None:
        """The job cannot start (its prewarm raised, no engine): it fails without running the entrypoint."""
        self.failure = f"{failure}:\n{detail}" if detail else failure
        message = detail.strip().splitlines()[-1] if detail.strip() else failure
        self.emit(ev.ErrorRaised(where=where, message=message, traceback=detail))
        self.shutdown_reason = failure
        self._finish("failed")

    def _warn_not_connected(self) -> None:
        if not self._connected and self.shutdown_reason is None:
            logger.warning(
                "the job has not connected to its room %.0f s after its entrypoint started: call `await ctx.connect()` "
                "(or start an AgentSession with room=ctx.room)", NOT_CONNECTED_WARNING_SECONDS,
            )

    def _write_result_soon(self, state: str) -> None:
        if not self.finished.is_set() and self._state == state:
            with contextlib.suppress(OSError):
                write_json_atomic(self.log_dir / "result.json", self._result_document(state))

    def request_shutdown(self, reason: str, *, user_initiated: bool = False) -> None:
        """First request wins; later ones are ignored (the reason of the first is kept).

        ``user_initiated``: the job itself asked (``ctx.shutdown()``, its entrypoint raising), as livekit-agents
        tells them apart; it decides how long the entrypoint may still run.
        """
        self._arm_deadline()
        if self._shutdown_future is not None and not self._shutdown_future.done():
            self.shutdown_reason = reason
            self._shutdown_future.set_result((reason, user_initiated))

    def _on_entrypoint_done(self, task: asyncio.Task[Any]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            tb = format_exception(exc)
            self.entrypoint_error = tb
            self.emit(ev.ErrorRaised(where="entrypoint", message=f"{type(exc).__name__}: {exc}", traceback=tb))
            self.request_shutdown(REASON_CRASHED, user_initiated=True)  # livekit-agents' reason for this path

    def _on_disconnected(self, reason: Any = None) -> None:
        try:
            name = rtc.DisconnectReason.Name(reason) if isinstance(reason, int) else str(reason)
        except ValueError:
            name = str(reason)
        if self.shutdown_reason is None:
            logger.info("the room disconnected the job (%s)", name)
        self.request_shutdown(REASON_ROOM_DISCONNECTED)

    def _loop_exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if isinstance(exc, BaseException):
            self.report_exception(context.get("message", "event loop"), exc)
        else:
            self.emit(ev.ErrorRaised(where="event loop", message=str(context.get("message")), traceback=""))

    async def _shut_down(self, entry_task: asyncio.Task[Any], reason: str, user_initiated: bool, session_end: Any) -> None:
        """livekit-agents' shutdown sequence (``_JobProc._shutdown_job``), each step reported, all under the deadline."""
        ctx = self.ctx
        self._arm_deadline()
        names = tuple(cb.name for cb in self._user_callbacks())
        self.set_state("shutting_down", reason)
        self.emit(ev.ShutdownStarted(reason=reason, deadline=self.deadline or 0.0, callbacks=names))
        write_json_atomic(self.log_dir / "result.json", self._result_document("shutting_down"))
        # 1. the entrypoint may finish what it is doing, then it is cancelled
        if not entry_task.done():
            grace = ENTRYPOINT_GRACE_SECONDS if user_initiated else EXTERNAL_STOP_GRACE_SECONDS
            await asyncio.wait([entry_task], timeout=grace)
            if not entry_task.done():
                entry_task.cancel()
                await asyncio.wait([entry_task], timeout=self._remaining())
        # 2. the primary AgentSession closes, then on_session_end and its report
        try:
            await _agents.end_primary_session(ctx, min(SESSION_CLOSE_TIMEOUT_SECONDS, self._remaining()))
        except Exception as exc:
            self.report_exception("closing the primary AgentSession", exc)
        if session_end is not None:
            try:
                await asyncio.wait_for(session_end(ctx), min(SESSION_END_TIMEOUT_SECONDS, self._remaining()))
            except Exception as exc:
                self.report_exception("on_session_end", exc)
        # 3. the room disconnects
        await self.monitor.aclose()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(ctx.room.disconnect(), DISCONNECT_TIMEOUT_SECONDS)
        # 4. the shutdown callbacks, all at once (as livekit-agents gathers them)
        tasks = [asyncio.ensure_future(self._run_callback(cb, reason)) for cb in self._shutdown_callbacks()]
        if tasks:
            await asyncio.wait(tasks)

    async def _close(self, deactivate: Callable[[], Any]) -> None:
        """After the callbacks: livekit-agents' own cleanup, nbagents' connections, the final result."""
        ctx = self.ctx
        for task in list(ctx._participant_tasks.values()):
            task.cancel()
        try:
            await asyncio.wait_for(_agents.deactivate(ctx), max(0.1, min(5.0, self._remaining())))
        except Exception as exc:
            self.report_exception("livekit-agents' job cleanup", exc)
        deactivate()
        if self._room_created is not None and self._room_created.done() and not self._room_created.cancelled():
            self._room_created.exception()  # retrieved: a failed creation nobody waited for is not an error here
        for hook in self._close_hooks:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(hook(), 1.0)
        failed = self.entrypoint_error is not None or self.failure is not None or any(
            o.status == "failed" for o in self.callback_outcomes.values()
        )
        self._finish("failed" if failed else "succeeded")

    def _remaining(self) -> float:
        """Seconds left before the shutdown deadline (at least a little, so a step can still start)."""
        return max(0.01, (self.deadline or time.time()) - time.time())

    async def _run_callback(self, callback: _Callback, reason: str) -> None:
        started = time.time()
        task = asyncio.current_task()
        assert task is not None
        if not callback.framework:
            self.callback_tasks[callback.name] = task
        try:
            fnc = callback.callable
            result = fnc(reason) if callback.takes_reason else fnc()
            if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
                result = await result
        except BaseException as exc:
            tb = format_exception(exc)
            where = f"shutdown callback {callback.name}" if not callback.framework else f"livekit-agents' shutdown callback {callback.name}"
            self.emit(ev.ErrorRaised(where=where, message=f"{type(exc).__name__}: {exc}", traceback=tb))
            outcome = ev.CallbackOutcome(name=callback.name, status="failed", error=tb, started=started, ended=time.time())
        else:
            ok, value = jsonable(result)
            if ok:
                outcome = ev.CallbackOutcome(name=callback.name, status="finished", value=value, started=started, ended=time.time())
            else:
                outcome = ev.CallbackOutcome(
                    name=callback.name,
                    status="failed",
                    error=f"returned a value that is not JSON-serializable ({value}); return dicts, lists, str, numbers",
                    started=started,
                    ended=time.time(),
                )
        finally:
            self.callback_tasks.pop(callback.name, None)
        if callback.framework:
            return
        with self._finish_lock:
            if self.finished.is_set():
                return
            self.callback_outcomes[callback.name] = outcome
            self.emit(outcome)
            write_json_atomic(self.log_dir / "result.json", self._result_document("shutting_down"))

    # ---- ending: normal and at the deadline -------------------------------------------------------

    def _arm_deadline(self) -> None:
        """Start the shutdown clock (once): the watchdog thread ends the process when it runs out."""
        if self.deadline is None:
            self.deadline = time.time() + self.start.shutdown_process_timeout

    def _finish(self, state: str, extra_error: str | None = None) -> None:
        """Write the final result, tell the kernel, close the log. Runs once (loop or watchdog thread)."""
        with self._finish_lock:
            if self.finished.is_set():
                return
            errors = [e for e in (self.failure, self.entrypoint_error, extra_error) if e]
            errors += [f"shutdown callback {o.name} failed:\n{o.error}" for o in self.callback_outcomes.values() if o.status == "failed"]
            error = "\n".join(errors) or None
            document = self._result_document(state, error)
            with contextlib.suppress(OSError):
                write_json_atomic(self.log_dir / "result.json", document, durable=True)
            if self.voice_sessions:
                with contextlib.suppress(OSError):
                    transcript = transcript_document(self.start.job_id, self.start.room, self.voice_sessions)
                    write_json_atomic(self.log_dir / TRANSCRIPT_FILE, transcript, durable=True)
            self._state = state
            self.emit(ev.StateChanged(state=state, detail=self.shutdown_reason or ""))
            self.outbox.send(
                ipc.JobFinished(state=state, shutdown_reason=self.shutdown_reason or "", error=error, persisted=document["persisted"]),
                keep=True,
            )
            with contextlib.suppress(OSError):
                self.event_log.close()
            self.finished.set()  # the watchdog stops here: a finished job is never cut off while it flushes
        # the process ends next: what the kernel has not read yet goes first (result.json has it all anyway); a
        # killed job does not wait for a slow kernel beyond FINAL_FLUSH_SECONDS, a finished one until its deadline
        wait = FINAL_FLUSH_SECONDS if state == "killed" else max(FINAL_FLUSH_SECONDS, (self.deadline or 0.0) - time.time())
        self.outbox.flush(wait)

    def _result_document(self, state: str, error: str | None = None) -> dict[str, Any]:
        pending = [cb.name for cb in self._user_callbacks() if cb.name not in self.callback_outcomes]
        return {
            "job_id": self.start.job_id,
            "room": self.start.room,
            "pid": os.getpid(),
            "state": state,
            "shutdown_reason": self.shutdown_reason or "",
            "error": error,
            "persisted": {n: o.value for n, o in self.callback_outcomes.items() if o.status == "finished"},
            "callbacks": {n: o.to_json() for n, o in self.callback_outcomes.items()},
            "pending_callbacks": pending,
            "transcript": list(self.transcript),
            "deadline": self.deadline,
            "written_at": time.time(),
        }

    def _beat(self) -> None:
        """The heartbeat, every HEARTBEAT_SECONDS from the event loop, from when the job waits or its entrypoint runs."""
        self._beating = True
        self._last_beat = time.monotonic()
        if self.kernel_alive:
            self.outbox.send(ipc.HEARTBEAT)  # the kernel's watchdog marks the job unresponsive when these stop
        assert self.loop is not None
        self.loop.call_later(HEARTBEAT_SECONDS, self._beat)

    def _watchdog(self) -> None:
        """Ends the process at the shutdown deadline, or when its event loop stays blocked after a stop request.

        Reporting an unresponsive job is the kernel's watchdog's job (it watches the heartbeats ``_beat``
        sends, and also sees a stopped process or one whose GIL native code holds, which this thread cannot).
        """
        blocked_reported = False
        stop_seen_blocked_at: float | None = None
        while not self.finished.wait(0.05):
            if self._start_events is not None and time.monotonic() - self._start_held_at > HEARTBEAT_SECONDS:
                self._announce_start()  # the entrypoint's first step holds the loop: the kernel still hears it started
            blocked = time.monotonic() - self._last_beat
            if blocked > UNRESPONSIVE_AFTER_SECONDS and not blocked_reported:
                blocked_reported = True
            elif blocked < HEARTBEAT_SECONDS * 3 and blocked_reported:
                blocked_reported = False
            if self.deadline is None:
                continue
            now = time.time()
            if not blocked_reported:
                stop_seen_blocked_at = None
            elif self._state != "shutting_down":
                stop_seen_blocked_at = stop_seen_blocked_at or now
                if now - stop_seen_blocked_at > BLOCKED_STOP_GRACE_SECONDS:
                    self._cut_off(f"the event loop was blocked for {blocked:.1f} s and could not shut down")
            if now >= self.deadline:
                self._cut_off(f"shutdown_process_timeout ({self.start.shutdown_process_timeout:g} s) exceeded")

    def _cut_off(self, why: str) -> None:
        if self.shutdown_reason is None:  # a blocked loop never took the stop request: its reason is the job's
            self.shutdown_reason = self._requested_reason
        for cb in self._user_callbacks():
            if cb.name in self.callback_outcomes:
                continue
            task = self.callback_tasks.get(cb.name)
            where = _coroutine_stack(task) if task is not None else "not started"
            outcome = ev.CallbackOutcome(name=cb.name, status="cut_off", error=f"cut off: {why}\n{where}", started=None, ended=time.time())
            self.callback_outcomes[cb.name] = outcome
            self.emit(outcome)
        self.emit(ev.LogRecord(level="ERROR", logger="nbagents", message=f"killing the job process: {why}"))
        self._finish("killed", extra_error=f"killed: {why}")
        os._exit(1)

    def _credentials_tuple(self) -> tuple[str, str, str]:
        assert self._credentials is not None
        return self._credentials.url, self._credentials.api_key, self._credentials.api_secret


def _recorder(start: ipc.StartJob, runtime: JobRuntime) -> AudioRecorder | None:
    options = getattr(start, "recording", None) or RecordingOptions()
    if not options.enabled:
        return None
    return AudioRecorder(Path(start.log_dir) / "audio", options, runtime.emit, runtime.report_exception)


def _export_credentials(credentials: ipc.EngineCredentials) -> None:
    """As livekit-agents does: ``api.LiveKitAPI()`` with no arguments works inside a job."""
    os.environ["LIVEKIT_URL"] = credentials.url
    os.environ["LIVEKIT_API_KEY"] = credentials.api_key
    os.environ["LIVEKIT_API_SECRET"] = credentials.api_secret


def _coroutine_stack(task: asyncio.Task[Any]) -> str:
    """Where a (still running) callback is stuck: the innermost frames of its coroutine chain."""
    try:
        coro: Any = task.get_coro()
        frames = []
        while coro is not None:
            frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
            if frame is not None:
                frames.append(frame)
            coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
        return format_frames(frames)
    except Exception:  # best effort while the loop thread may be running
        return ""


def _set_result(fut: asyncio.Future[Any] | None, value: Any) -> None:
    if fut is not None and not fut.done():
        fut.set_result(value)


class _EventLogHandler(logging.Handler):
    def __init__(self, runtime: JobRuntime) -> None:
        super().__init__(logging.INFO)
        self.runtime = runtime

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if record.exc_info and record.exc_info[1] is not None:
                # e.g. a user's room event handler raised: livekit logs it; surface it as an error too
                exc = record.exc_info[1]
                tb = format_exception(exc)
                self.runtime.emit(ev.ErrorRaised(where=f"{record.name}: {message}", message=f"{type(exc).__name__}: {exc}", traceback=tb))
                message += "\n" + tb
            self.runtime.emit(ev.LogRecord(level=record.levelname, logger=record.name, message=message))
        except Exception:
            pass


class _LineStream(io.TextIOBase):
    """A ``sys.stdout``/``sys.stderr`` whose complete lines become LogRecords for ``on_record``; ``raw`` (if any)
    gets everything too (the job's output.log). The job's streams emit; an idle process's hold (holding_output)."""

    def __init__(self, level: str, on_record: Callable[[ev.LogRecord], Any], raw: Any = None) -> None:
        self.level, self.on_record, self.raw = level, on_record, raw
        self._logger = "stdout" if level == "PRINT" else "stderr"
        self._buffer = ""

    def write(self, text: str) -> int:
        if self.raw is not None:
            with contextlib.suppress(Exception):
                self.raw.write(text)
                self.raw.flush()
        self._buffer += text
        while "\n" in self._buffer:
            line, self._buffer = self._buffer.split("\n", 1)
            self.on_record(ev.LogRecord(level=self.level, logger=self._logger, message=line))
        return len(text)

    def finish(self) -> None:
        """Pass on an unfinished last line too."""
        if self._buffer:
            self.write("\n")

    def flush(self) -> None:
        if self.raw is not None:
            with contextlib.suppress(Exception):
                self.raw.flush()

    def writable(self) -> bool:
        return True

