"""The job process: receives a job over its IPC channel, runs the entrypoint, and ends it cleanly.

One process runs one job. It enforces ``shutdown_process_timeout`` itself, from a thread, on every
ending path (``ctx.shutdown()``, ``job.stop()``, the room closing or being deleted, the server going
away, an exception in the entrypoint, the kernel going away): when the deadline passes, it records
which shutdown callbacks were cut off and exits. The kernel kills it one second later if it has not.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
import select
import sys
import threading
import time
from pathlib import Path
from typing import Any, Awaitable, Callable

from livekit import api, rtc
from livekit.protocol import agent as agent_pb

from nbagents.runtime import events as ev
from nbagents.runtime import ipc
from nbagents.runtime.context import JobContext, JobProcess, _ShutdownCallback, current_process
from nbagents.runtime.monitor import RoomMonitor, SessionMonitor
from nbagents.runtime.persist import EventLog, jsonable, write_json_atomic
from nbagents.runtime.recorder import AudioRecorder, RecordingOptions
from nbagents.runtime.shipping import unship
from nbagents.runtime.tracebacks import format_current_exception, format_exception, format_frames

__all__ = ["JobRuntime", "process_main"]

HEARTBEAT_SECONDS = 0.2
UNRESPONSIVE_AFTER_SECONDS = 2.0
BLOCKED_STOP_GRACE_SECONDS = 3.0
ENTRYPOINT_GRACE_SECONDS = 0.5
DISCONNECT_TIMEOUT_SECONDS = 3.0
AUDIO_LOG_EVERY = 20  # one AudioStats of 20 (about one a second per track) goes to the on-disk log

logger = logging.getLogger("nbagents.job")


def process_main(sock_fd: int) -> int:
    """Entry of a freshly forked job process: wait (idle) for a job, then run it."""
    channel = ipc.Channel(_socket_from_fd(sock_fd))
    job_waiting = _readable(channel, 0)  # queued before the fork: no time to warm up, run it now
    host = _Host(channel)
    proc = current_process()
    warm = False
    if not job_waiting:
        host.warm_up()  # nobody is waiting for this process yet: pay the one-off costs now
        warm = True
    channel.send(ipc.ProcessReady(os.getpid(), None))  # the pool offers idle processes only from now on
    while True:
        message = host.next_message()
        if message is None:
            return 0  # the kernel closed our channel before giving us a job
        if isinstance(message, ipc.Prewarm):
            error = _run_prewarm(proc, message.blob)
            proc._prewarm_digest = None if error else message.digest  # type: ignore[attr-defined]
            channel.send(ipc.ProcessReady(os.getpid(), message.digest, error))
            warm = True
        elif isinstance(message, ipc.StartJob):
            return JobRuntime(host, message, proc, warm=warm).run()


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

    def warm_up(self) -> None:
        """Start the livekit FFI (threads: only after the fork, never in the zygote) and rehearse a job.

        A forked process pays copy-on-write page faults the first time it touches the code and objects
        of a job's start; touching them now keeps them off the launch path.
        """
        from livekit.rtc._ffi_client import FfiClient

        FfiClient.instance  # noqa: B018

        async def rehearsal() -> None:
            room = rtc.Room()
            RoomMonitor(room, lambda event: None, lambda where, exc: None)
            blob = _ship_for_rehearsal()
            await unship(blob)(None)
            ev.StateChanged(state="running").to_json()
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


def _run_prewarm(proc: JobProcess, blob: bytes) -> str | None:
    try:
        fnc = unship(blob)
        fnc(proc)
        return None
    except BaseException:
        return format_current_exception()


class JobRuntime:
    """Runs one job in this process: lifecycle, events, deadline, persisted state."""

    def __init__(self, host: _Host, start: ipc.StartJob, proc: JobProcess, *, warm: bool) -> None:
        self.host = host
        self.channel = host.channel
        self.start = start
        self.proc = proc
        self.warm = warm
        self.log_dir = Path(start.log_dir)
        self.kernel_alive = True
        self.loop: asyncio.AbstractEventLoop | None = None
        self.ctx: JobContext | None = None
        self.token_claims: Any = None
        self.entrypoint_error: str | None = None
        self.failure: str | None = None
        self.shutdown_reason: str | None = None
        self.deadline: float | None = None
        self.callback_outcomes: dict[str, ev.CallbackOutcome] = {}
        self.callback_tasks: dict[str, asyncio.Task[Any]] = {}
        self.finished = threading.Event()
        self._finish_lock = threading.Lock()
        self._credentials: ipc.EngineCredentials | None = start.credentials
        self._engine_error: str | None = None
        self._credentials_ready = threading.Event()
        if self._credentials is not None:
            self._credentials_ready.set()
        self._credentials_future: asyncio.Future[None] | None = None
        self._shutdown_future: asyncio.Future[str] | None = None
        self._close_hooks: list[Callable[[], Awaitable[Any]]] = []
        self._last_beat = time.monotonic()
        self._audio_count = 0
        self._state = "starting"
        self.transcript: list[dict[str, Any]] = []

    # ---- the process ------------------------------------------------------------------------------

    def run(self) -> int:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.event_log = EventLog(self.log_dir / "events.jsonl")
        self._redirect_output()
        self._install_logging()
        self.loop = self.host.loop
        self._credentials_future = self.loop.create_future()
        self._shutdown_future = self.loop.create_future()
        if self._credentials is not None:
            _export_credentials(self._credentials)
            self._credentials_future.set_result(None)
        self.host.attach(self)
        threading.Thread(target=self._watchdog, name="nbagents-watchdog", daemon=True).start()
        self.loop.call_soon(self._beat)
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
        sys.stdout = _EventStream(self, "PRINT", sys.stdout)
        sys.stderr = _EventStream(self, "STDERR", sys.stderr)

    def _install_logging(self) -> None:
        root = logging.getLogger()
        root.handlers = [h for h in root.handlers if not isinstance(h, _EventLogHandler)]
        root.addHandler(_EventLogHandler(self))
        if root.level > logging.INFO or root.level == logging.NOTSET:
            root.setLevel(logging.INFO)
        logging.getLogger("livekit").setLevel(logging.WARNING)

    # ---- events -----------------------------------------------------------------------------------

    def emit(self, event: ev.Event) -> None:
        """Send an event to the kernel and append it to the on-disk event log (safe from any thread)."""
        if self.kernel_alive and not self.channel.send(event):
            self.kernel_alive = False
        if isinstance(event, ev.ConversationItemAdded):
            entry = ev.transcript_entry(event)
            if entry is not None:
                self.transcript.append(entry)
        if isinstance(event, ev.AudioStats):
            self._audio_count += 1
            if self._audio_count % AUDIO_LOG_EVERY:
                return
            record = event.to_json()
            record.pop("waveform", None)
        else:
            record = event.to_json()
        with contextlib.suppress(OSError):
            self.event_log.append(record)

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
            self._request_shutdown_threadsafe("the notebook kernel exited")
            return
        if isinstance(message, ipc.EngineCredentials):
            self._credentials = message
            _export_credentials(message)
            self._credentials_ready.set()
            self.loop.call_soon_threadsafe(_set_result, self._credentials_future, None)
        elif isinstance(message, ipc.EngineFailed):
            self._engine_error = message.message
            self._credentials_ready.set()
            self.loop.call_soon_threadsafe(_set_result, self._credentials_future, None)
        elif isinstance(message, ipc.StopJob):
            self._request_shutdown_threadsafe(message.reason)

    def _request_shutdown_threadsafe(self, reason: str) -> None:
        assert self.loop is not None
        self._arm_deadline()
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self.request_shutdown, reason)

    # ---- credentials and connection ---------------------------------------------------------------

    def credentials_blocking(self, timeout: float) -> tuple[str, str, str]:
        if not self._credentials_ready.wait(timeout):
            raise RuntimeError(f"the LiveKit server was not ready after {timeout:.0f} s")
        return self._credentials_tuple()

    def _credentials_tuple(self) -> tuple[str, str, str]:
        if self._engine_error is not None:
            raise RuntimeError(f"no LiveKit server for this job: {self._engine_error}")
        assert self._credentials is not None
        return self._credentials.url, self._credentials.api_key, self._credentials.api_secret

    def on_close(self, hook: Callable[[], Awaitable[Any]]) -> None:
        self._close_hooks.append(hook)

    async def connect_room(self, ctx: JobContext, options: rtc.RoomOptions) -> None:
        t0 = time.perf_counter()
        assert self._credentials_future is not None
        await self._credentials_future
        url, key, secret = self._credentials_tuple()
        room_name = self.start.room
        assignment = self.start.assignment
        if assignment is not None:  # dispatched: the server made the room and the token
            self.token_claims = api.TokenVerifier(key, secret).verify(assignment.token)
            await ctx.room.connect(assignment.url or url, assignment.token, options)
            self.emit(ev.RoomConnected(room=room_name, room_sid=ctx.room._info.sid, url=assignment.url or url,
                                       identity=ctx.local_participant_identity, seconds=time.perf_counter() - t0))
            self.monitor.snapshot()
            return
        await ctx.api.room.create_room(
            api.CreateRoomRequest(name=room_name, departure_timeout=self.start.departure_timeout)
        )
        token = (
            api.AccessToken(key, secret)
            .with_identity(ctx.local_participant_identity)
            .with_kind("agent")
            .with_grants(
                api.VideoGrants(room_join=True, room=room_name, agent=True, can_update_own_metadata=True)
            )
        )
        self.token_claims = token.claims if hasattr(token, "claims") else None
        await ctx.room.connect(url, token.to_jwt(), options)
        seconds = time.perf_counter() - t0
        self.emit(
            ev.RoomConnected(
                room=room_name,
                room_sid=ctx.room._info.sid,  # known from the join response (the public getter is async)
                url=url,
                identity=ctx.local_participant_identity,
                seconds=seconds,
            )
        )
        self.monitor.snapshot()

    # ---- lifecycle --------------------------------------------------------------------------------

    async def _main(self) -> None:
        start = self.start
        ctx = JobContext(runtime=self, proc=self.proc, job_id=start.job_id, room_name=start.room)
        if start.assignment is not None:  # ctx.job and the identity are the server's
            ctx._job = agent_pb.Job.FromString(start.assignment.job)
            ctx._identity = start.assignment.identity
        self.ctx = ctx
        self.monitor = RoomMonitor(ctx.room, self.emit, self.report_exception, recorder=_recorder(start, self))
        self.on_close(self.monitor.flush_logs)
        ctx.room.on("disconnected", self._on_disconnected)
        self.loop.set_exception_handler(self._loop_exception)  # type: ignore[union-attr]
        if start.prewarm_blob is not None and getattr(self.proc, "_prewarm_digest", None) != start.prewarm_digest:
            error = _run_prewarm(self.proc, start.prewarm_blob)
            if error is not None:
                self.failure = f"prewarm raised:\n{error}"
                self.emit(ev.ErrorRaised(where="prewarm", message=error.strip().splitlines()[-1], traceback=error))
                self.request_shutdown("prewarm raised")
        entrypoint = unship(start.entrypoint_blob)
        if "livekit.agents" in sys.modules:  # the entrypoint uses livekit-agents: follow its AgentSessions
            from nbagents.runtime import _agents

            self.sessions = SessionMonitor(self.emit, self.report_exception)
            _agents.follow_sessions(lambda session, agent, primary: self.sessions.attach(session, agent, primary=primary))
        self.set_state("running")
        if self.failure is None:
            self.emit(ev.EntrypointStarted(pid=os.getpid(), warm=self.warm, perf_counter=time.perf_counter()))
            entry_task = asyncio.ensure_future(entrypoint(ctx))
            entry_task.add_done_callback(self._on_entrypoint_done)
            # off the launch path: the first result.json says the job started (and who it is)
            self.loop.call_soon(self._write_result_soon, "running")
        else:
            entry_task = None
        assert self._shutdown_future is not None
        reason = await self._shutdown_future
        await self._shut_down(entry_task, reason)

    def _write_result_soon(self, state: str) -> None:
        if not self.finished.is_set() and self._state == state:
            with contextlib.suppress(OSError):
                write_json_atomic(self.log_dir / "result.json", self._result_document(state))

    def request_shutdown(self, reason: str) -> None:
        """First request wins; later ones are ignored (the reason of the first is kept)."""
        self._arm_deadline()
        if self._shutdown_future is not None and not self._shutdown_future.done():
            self.shutdown_reason = reason
            self._shutdown_future.set_result(reason)

    def _on_entrypoint_done(self, task: asyncio.Task[Any]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            tb = format_exception(exc)
            self.entrypoint_error = tb
            self.emit(ev.ErrorRaised(where="entrypoint", message=f"{type(exc).__name__}: {exc}", traceback=tb))
            self.request_shutdown(f"the entrypoint raised {type(exc).__name__}: {exc}")

    def _on_disconnected(self, reason: Any = None) -> None:
        try:
            name = rtc.DisconnectReason.Name(reason) if isinstance(reason, int) else str(reason)
        except ValueError:
            name = str(reason)
        self.request_shutdown(f"room disconnected ({name})")

    def _loop_exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if isinstance(exc, BaseException):
            self.report_exception(context.get("message", "event loop"), exc)
        else:
            self.emit(ev.ErrorRaised(where="event loop", message=str(context.get("message")), traceback=""))

    async def _shut_down(self, entry_task: asyncio.Task[Any] | None, reason: str) -> None:
        ctx = self.ctx
        assert ctx is not None
        self._arm_deadline()
        names = tuple(cb.name for cb in ctx._shutdown_callbacks)
        self.set_state("shutting_down", reason)
        self.emit(ev.ShutdownStarted(reason=reason, deadline=self.deadline or 0.0, callbacks=names))
        write_json_atomic(self.log_dir / "result.json", self._result_document("shutting_down"))
        if entry_task is not None and not entry_task.done():
            await asyncio.wait([entry_task], timeout=ENTRYPOINT_GRACE_SECONDS)
            if not entry_task.done():
                entry_task.cancel()
                await asyncio.wait([entry_task], timeout=ENTRYPOINT_GRACE_SECONDS)
        for task in list(ctx._participant_tasks.values()):
            task.cancel()
        await self.monitor.aclose()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(ctx.room.disconnect(), DISCONNECT_TIMEOUT_SECONDS)
        tasks = [asyncio.ensure_future(self._run_callback(cb, reason)) for cb in ctx._shutdown_callbacks]
        if tasks:
            await asyncio.wait(tasks)
        for hook in self._close_hooks:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(hook(), 1.0)
        failed = self.entrypoint_error is not None or self.failure is not None or any(
            o.status == "failed" for o in self.callback_outcomes.values()
        )
        self._finish("failed" if failed else "succeeded")

    async def _run_callback(self, callback: _ShutdownCallback, reason: str) -> None:
        started = time.time()
        task = asyncio.current_task()
        assert task is not None
        self.callback_tasks[callback.name] = task
        try:
            result = callback.fnc(reason) if callback.takes_reason else callback.fnc()
            if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
                result = await result
        except BaseException as exc:
            tb = format_exception(exc)
            outcome = ev.CallbackOutcome(name=callback.name, status="failed", error=tb, started=started, ended=time.time())
            self.emit(ev.ErrorRaised(where=f"shutdown callback {callback.name}", message=f"{type(exc).__name__}: {exc}", traceback=tb))
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
            self._state = state
            self.emit(ev.StateChanged(state=state, detail=self.shutdown_reason or ""))
            self.channel.send(
                ipc.JobFinished(state=state, shutdown_reason=self.shutdown_reason or "", error=error, persisted=document["persisted"])
            )
            with contextlib.suppress(OSError):
                self.event_log.close()
            self.finished.set()

    def _result_document(self, state: str, error: str | None = None) -> dict[str, Any]:
        ctx = self.ctx
        pending = [cb.name for cb in (ctx._shutdown_callbacks if ctx else []) if cb.name not in self.callback_outcomes]
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
        self._last_beat = time.monotonic()
        if self.kernel_alive:
            self.channel.send(ipc.HEARTBEAT)  # the kernel's watchdog marks the job unresponsive when these stop
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
        ctx = self.ctx
        for cb in ctx._shutdown_callbacks if ctx else []:
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


class _EventStream(io.TextIOBase):
    """sys.stdout/err of the job: each complete line becomes a LogRecord; everything also goes to output.log."""

    def __init__(self, runtime: JobRuntime, level: str, raw: Any) -> None:
        self.runtime, self.level, self.raw = runtime, level, raw
        self._buffer = ""

    def write(self, text: str) -> int:
        with contextlib.suppress(Exception):
            self.raw.write(text)
            self.raw.flush()
        self._buffer += text
        while "\n" in self._buffer:
            line, self._buffer = self._buffer.split("\n", 1)
            self.runtime.emit(ev.LogRecord(level=self.level, logger="stdout" if self.level == "PRINT" else "stderr", message=line))
        return len(text)

    def flush(self) -> None:
        with contextlib.suppress(Exception):
            self.raw.flush()

    def writable(self) -> bool:
        return True

