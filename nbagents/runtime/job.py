"""The kernel-side model of a job: its state, what happened in its room, and its result.

A :class:`Job` knows nothing of widgets. UIs observe it with :meth:`Job.subscribe`; tests read its
attributes directly. Its data comes from the job process's event stream (``nbagents.runtime.events``)
and, for a job whose process died, from the files the process wrote to ``job.log_dir``.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import heapq
import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any, Callable

from nbagents.runtime import events as ev
from nbagents.runtime import watchdog
from nbagents.runtime.conversation import VoiceSession
from nbagents.runtime.ipc import JobFinished

__all__ = ["Job", "JobResult", "AudioTrackState", "VideoTrackState", "DataMessage", "Recording", "VoiceSession", "jobs"]

HISTORY_LIMIT = 5000  # events other than audio statistics
AUDIO_HISTORY_LIMIT = 3000  # audio and video statistics (20 and 1 a second per track), kept apart so they never push others out
LEVEL_HISTORY = 400  # per track: 20 s of (time, rms, peak) at 20 updates a second
DATA_LIMIT = 500
LOG_LIMIT = 2000


@dataclasses.dataclass(frozen=True)
class JobResult:
    """How a job ended.

    ``state`` is ``succeeded``, ``failed``, ``killed`` or ``crashed``; ``error`` a traceback string or
    None; ``persisted`` maps each shutdown callback's name to the JSON value it returned (only callbacks
    that finished); ``callbacks`` holds every callback's outcome (finished / failed / cut_off, with
    tracebacks); ``transcript`` is the conversation of the job's ``AgentSession`` s, in order: one
    ``{"role": "user" | "assistant", "text": str, "time": float}`` per turn (``time`` in epoch seconds;
    empty when the job ran no session). It is also in the job's ``result.json``. ``recordings`` are the
    audio files the job recorded (:class:`Recording`, one per track; Ogg/Opus under ``<log_dir>/audio/``).
    """

    state: str
    shutdown_reason: str
    error: str | None
    persisted: dict[str, Any]
    callbacks: tuple[ev.CallbackOutcome, ...] = ()
    exit_code: int | None = None
    log_dir: str | None = None
    transcript: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    recordings: tuple[Recording, ...] = ()

    @property
    def ok(self) -> bool:
        return self.state == "succeeded"


@dataclasses.dataclass
class AudioTrackState:
    """Latest statistics of one subscribed audio track (see :class:`nbagents.runtime.events.AudioStats`)."""

    track_sid: str
    participant_identity: str
    frames: int = 0
    sample_rate: int = 0
    channels: int = 0
    samples_per_frame: int = 0
    rms: float = 0.0
    peak: float = 0.0
    waveform: tuple[float, ...] = ()
    updated: float = 0.0
    active: bool = True
    levels: collections.deque[tuple[float, float, float]] = dataclasses.field(
        default_factory=lambda: collections.deque(maxlen=LEVEL_HISTORY)
    )  # (time, rms, peak), oldest first


@dataclasses.dataclass
class VideoTrackState:
    """Latest statistics of one subscribed video track (see :class:`nbagents.runtime.events.VideoStats`)."""

    track_sid: str
    participant_identity: str
    frames: int = 0
    width: int = 0
    height: int = 0
    fps: float = 0.0
    bitrate_kbps: float = 0.0
    thumbnail_jpeg: str = ""  # base64, the latest of about one a second
    updated: float = 0.0
    active: bool = True


@dataclasses.dataclass(frozen=True)
class DataMessage:
    """A data packet in the job's room; ``local``: the agent itself sent it."""

    sender: str
    topic: str
    size: int
    text: str | None
    payload_hex: str | None
    time: float
    local: bool = False


@dataclasses.dataclass(frozen=True)
class Recording:
    """An audio file the job recorded (Ogg/Opus; see :mod:`nbagents.runtime.recorder`).

    ``path`` is the file (inside the job's directory); ``direction`` is ``received`` (a remote
    participant's track) or ``published`` (the agent's own); ``status`` ``recording``, ``finished``,
    ``truncated`` (a size or length bound was reached: ``note`` says which) or ``failed``.
    """

    path: Path
    track_sid: str
    participant_identity: str
    direction: str
    status: str
    seconds: float
    bytes: int
    note: str = ""

    @classmethod
    def from_info(cls, job_dir: Path, info: ev.RecordingInfo) -> Recording:
        return cls(job_dir / info.file, info.track_sid, info.participant_identity, info.direction, info.status,
                   info.seconds, info.bytes, info.note)


Listener = Callable[["Job", ev.Event], None]

_registry: dict[str, Job] = {}
_registry_lock = threading.Lock()


def jobs() -> list[Job]:
    """Every job launched by this kernel, oldest first."""
    with _registry_lock:
        return list(_registry.values())


class Job:
    """A running or finished job (one OS process), as seen from the kernel.

    Attributes (read-only for users):

    - ``id``, ``room``, ``state`` (``starting``, ``running``, ``shutting_down``, ``succeeded``,
      ``failed``, ``killed``, ``crashed``), ``pid``, ``engine_url``, ``log_dir`` (``.nbagents/jobs/<id>``)
    - ``events``: bounded history (a list, oldest first) of every typed event; audio statistics have
      their own window, so a loud room never pushes participant, state or log events out
    - ``participants``: identity -> :class:`~nbagents.runtime.events.ParticipantInfo` (kind, attributes,
      metadata, tracks) of everyone currently in the room, the agent included (``local=True``)
    - ``audio_tracks``: track sid -> :class:`AudioTrackState`, latest stats, decimated waveform and
      a short level history
    - ``video_tracks``: track sid -> :class:`VideoTrackState`, latest size, frame rate, bitrate, thumbnail
    - ``data_messages``: bounded deque of :class:`DataMessage` (the agent's own included, ``local=True``)
    - ``recordings``: file name -> :class:`Recording` of each audio track the job records
    - ``logs``: bounded deque of :class:`~nbagents.runtime.events.LogRecord`
    - ``errors``: every :class:`~nbagents.runtime.events.ErrorRaised`
    - ``unresponsive``: True while the job process sends no heartbeat (for
      :data:`~nbagents.runtime.watchdog.UNRESPONSIVE_AFTER_SECONDS`, 2 s): its event loop is blocked, the
      process is stopped (SIGSTOP) or native code holds its GIL (``nbagents.runtime.watchdog``)
    - ``sessions``: session number -> :class:`VoiceSession`, for each ``AgentSession`` the job ran
    - ``transcript``: the conversation so far (as :attr:`JobResult.transcript`)

    ``await job`` / ``await job.wait()`` return the :class:`JobResult`; ``await job.stop(reason)``
    shuts it down (an unresponsive job is killed at ``shutdown_process_timeout``); ``job.result(timeout)``
    waits from synchronous code.
    """

    def __init__(
        self,
        job_id: str,
        room: str,
        *,
        shutdown_process_timeout: float,
        log_dir: Path,
        loop: asyncio.AbstractEventLoop | None,
        launched_perf: float | None = None,
    ) -> None:
        self.id = job_id
        self.room = room
        self.shutdown_process_timeout = shutdown_process_timeout
        self.log_dir = log_dir
        self.state: str = "starting"
        self.pid: int | None = None
        self.engine_url: str | None = None
        self.created = time.time()
        self.launched_perf = time.perf_counter() if launched_perf is None else launched_perf
        self.shutdown_reason: str = ""
        self._history: collections.deque[tuple[int, ev.Event]] = collections.deque(maxlen=HISTORY_LIMIT)
        self._audio_history: collections.deque[tuple[int, ev.Event]] = collections.deque(maxlen=AUDIO_HISTORY_LIMIT)
        self._seq = 0
        self.participants: dict[str, ev.ParticipantInfo] = {}
        self.audio_tracks: dict[str, AudioTrackState] = {}
        self.video_tracks: dict[str, VideoTrackState] = {}
        self.data_messages: collections.deque[DataMessage] = collections.deque(maxlen=DATA_LIMIT)
        self.logs: collections.deque[ev.LogRecord] = collections.deque(maxlen=LOG_LIMIT)
        self.errors: list[ev.ErrorRaised] = []
        self.recordings: dict[str, Recording] = {}
        self.callbacks: dict[str, ev.CallbackOutcome] = {}
        self.unresponsive = False
        self.sessions: dict[int, VoiceSession] = {}
        self.transcript: list[dict[str, Any]] = []
        self._last_heartbeat: float | None = None  # time.monotonic() of the last heartbeat, once attached
        self.entrypoint_started: ev.EntrypointStarted | None = None
        self.connected: ev.RoomConnected | None = None
        self._result: JobResult | None = None
        self._finished_msg: JobFinished | None = None
        self._loop = loop
        self._lock = threading.RLock()
        self._listeners: list[Listener] = []
        self._done = threading.Event()
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[JobResult]]] = []
        self._stop_requested: str | None = None
        self._kill_timer: threading.Timer | None = None
        self._control: Any = None  # the runtime's handle on the process (launch.JobHandle)
        with _registry_lock:
            _registry[job_id] = self

    # ---- observing --------------------------------------------------------------------------------

    def subscribe(self, callback: Listener) -> Callable[[], None]:
        """Call ``callback(job, event)`` for every new event (state changes included).

        Callbacks run on the event loop that was running when the job was launched (the kernel's),
        or on the job's reader thread when there was none. Returns a function that unsubscribes.
        """
        with self._lock:
            self._listeners.append(callback)

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._listeners:
                    self._listeners.remove(callback)

        return unsubscribe

    @property
    def events(self) -> list[ev.Event]:
        """The bounded event history, oldest first (a snapshot)."""
        with self._lock:
            merged = heapq.merge(list(self._history), list(self._audio_history), key=lambda pair: pair[0])
            return [event for _, event in merged]

    def _record(self, event: ev.Event) -> None:
        self._seq += 1
        target = self._audio_history if isinstance(event, (ev.AudioStats, ev.VideoStats)) else self._history
        target.append((self._seq, event))

    @property
    def done(self) -> bool:
        return self._done.is_set()

    @property
    def elapsed(self) -> float:
        """Seconds since launch (until the end, for finished jobs)."""
        end = self._ended_at if self.done else time.time()
        return end - self.created

    _ended_at: float = 0.0

    @property
    def ended_at(self) -> float | None:
        """When the kernel saw the job's process end (epoch seconds), None while it runs."""
        return self._ended_at if self.done else None

    # ---- waiting and stopping ---------------------------------------------------------------------

    def __await__(self):
        return self.wait().__await__()

    async def wait(self) -> JobResult:
        """Wait until the job has ended and return its :class:`JobResult`."""
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._result is not None:
                return self._result
            fut: asyncio.Future[JobResult] = loop.create_future()
            self._waiters.append((loop, fut))
        return await fut

    def result(self, timeout: float | None = None) -> JobResult:
        """Block (synchronous code only) until the job ended; TimeoutError after ``timeout`` seconds."""
        if not self._done.wait(timeout):
            raise TimeoutError(f"job {self.id} still {self.state} after {timeout} s")
        assert self._result is not None
        return self._result

    async def stop(self, reason: str = "stopped from the notebook") -> JobResult:
        """Shut the job down: its shutdown callbacks run; it is killed after ``shutdown_process_timeout``.

        A job that is unresponsive then (no heartbeat: blocked, stopped, or hung in native code) is killed
        with SIGKILL at once at the timeout; a responsive one ends itself at the timeout, and is killed one
        second later if it has not.
        """
        self.request_stop(reason)
        return await self.wait()

    def request_stop(self, reason: str = "stopped from the notebook") -> None:
        """Ask the job to shut down without waiting (safe from any thread)."""
        with self._lock:
            if self.done or self._stop_requested is not None:
                return
            self._stop_requested = reason
            control = self._control
        if control is not None:
            control.stop(reason)
        self._arm_kill_timer(self.shutdown_process_timeout, self._stop_deadline_passed)

    def kill(self) -> None:
        """SIGKILL the job process at once; its state becomes ``killed``."""
        self._kill("killed on request")

    # ---- fed by the runtime -----------------------------------------------------------------------

    def _attach(self, control: Any) -> None:
        with self._lock:
            self._control = control
            reason = self._stop_requested
            self._last_heartbeat = time.monotonic()
        watchdog.watch(self)
        if reason is not None:
            control.stop(reason)

    # ---- heartbeats (see nbagents.runtime.watchdog) -----------------------------------------------

    def _on_heartbeat(self) -> None:
        """A heartbeat arrived (the job's reader thread)."""
        now = time.monotonic()
        with self._lock:
            silent = now - (self._last_heartbeat or now)
            self._last_heartbeat = now
            came_back = self.unresponsive and not self.done
        if came_back:
            self._on_event(ev.LogRecord(level="INFO", logger="nbagents",
                                        message=f"the job process is responsive again (no heartbeat for {silent:.1f} s)"))
            self._on_event(ev.LoopHealth(responsive=True, blocked_seconds=0.0))

    def _check_heartbeat(self, now: float, limit: float) -> bool:
        """Mark the job unresponsive if it has been silent for ``limit`` seconds; False once it has ended."""
        with self._lock:
            if self.done:
                return False
            if self._last_heartbeat is None or self.unresponsive:
                return True
            silent = now - self._last_heartbeat
            if silent <= limit:
                return True
            pid = self.pid
        # the log record first: whoever sees ``unresponsive`` set also finds the reason in ``logs``
        self._on_event(ev.LogRecord(level="WARNING", logger="nbagents",
                                    message=f"the job is unresponsive: no heartbeat for {silent:.1f} s; "
                                            f"{watchdog.describe_process(pid)}"))
        self._on_event(ev.LoopHealth(responsive=False, blocked_seconds=round(silent, 2)))
        return True

    def _excuse_silence(self, now: float) -> None:
        """The kernel itself was stalled: heartbeats may be waiting unread, so restart the silence clock."""
        with self._lock:
            if self._last_heartbeat is not None and not self.unresponsive:
                self._last_heartbeat = max(self._last_heartbeat, now - watchdog.TICK_SECONDS)

    @property
    def silent_seconds(self) -> float | None:
        """Seconds since the job process's last heartbeat (None before it has a process, or once it ended)."""
        with self._lock:
            if self._last_heartbeat is None or self.done:
                return None
            return time.monotonic() - self._last_heartbeat

    # ---- killing ----------------------------------------------------------------------------------

    def _arm_kill_timer(self, seconds: float, then: Callable[[], None] | None = None) -> None:
        """Backstop: the job process enforces its own deadline; kill it if it has not gone by then."""
        with self._lock:
            if self.done:
                return
            if self._kill_timer is not None:
                self._kill_timer.cancel()
            if then is None:
                self._kill_timer = threading.Timer(seconds, self._kill, args=("shutdown_process_timeout exceeded",))
            else:
                self._kill_timer = threading.Timer(seconds, then)
            self._kill_timer.daemon = True
            self._kill_timer.start()

    def _stop_deadline_passed(self) -> None:
        """``shutdown_process_timeout`` after a stop request: kill an unresponsive job now, give a responsive one 1 s."""
        silent = self.silent_seconds
        if silent is None and self.done:
            return
        if self.unresponsive:
            self._kill(
                f"unresponsive (no heartbeat for {silent or 0:.1f} s; {watchdog.describe_process(self.pid)}) "
                f"and still running shutdown_process_timeout ({self.shutdown_process_timeout:g} s) after the stop request"
            )
        else:
            self._arm_kill_timer(1.0)

    def _kill(self, why: str) -> None:
        with self._lock:
            if self.done:
                return
            self._kill_reason = why
            pid = self.pid
        if pid is not None:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    _kill_reason: str | None = None

    def _on_event(self, event: ev.Event) -> None:
        """Apply one event from the job process (called on the job's reader thread)."""
        with self._lock:
            self._record(event)
            self._apply(event)
        self._notify(event)

    def _apply(self, event: ev.Event) -> None:
        if isinstance(event, ev.StateChanged):
            self.state = event.state
            if event.state == "shutting_down" and event.detail:
                self.shutdown_reason = event.detail
        elif isinstance(event, ev.EntrypointStarted):
            self.entrypoint_started = event
            self.pid = event.pid
        elif isinstance(event, ev.RoomConnected):
            self.connected = event
            self.engine_url = event.url
        elif isinstance(event, ev.ParticipantChanged):
            if event.change == "left":
                self.participants.pop(event.participant.identity, None)
                for track in [*self.audio_tracks.values(), *self.video_tracks.values()]:
                    if track.participant_identity == event.participant.identity:
                        track.active = False
            else:
                self.participants[event.participant.identity] = event.participant
        elif isinstance(event, ev.TrackChanged):
            if event.change == "unsubscribed" and event.track.sid in self.audio_tracks:
                self.audio_tracks[event.track.sid].active = False
            if event.change == "unsubscribed" and event.track.sid in self.video_tracks:
                self.video_tracks[event.track.sid].active = False
        elif isinstance(event, ev.AudioStats):
            state = self.audio_tracks.get(event.track_sid)
            if state is None:
                state = self.audio_tracks[event.track_sid] = AudioTrackState(event.track_sid, event.participant_identity)
            state.frames, state.sample_rate, state.channels = event.frames, event.sample_rate, event.channels
            state.samples_per_frame, state.rms, state.peak = event.samples_per_frame, event.rms, event.peak
            state.waveform, state.updated, state.active = event.waveform, event.time, True
            state.levels.append((event.time, event.rms, event.peak))
        elif isinstance(event, ev.VideoStats):
            video = self.video_tracks.get(event.track_sid)
            if video is None:
                video = self.video_tracks[event.track_sid] = VideoTrackState(event.track_sid, event.participant_identity)
            video.frames, video.width, video.height = event.frames, event.width, event.height
            video.fps, video.bitrate_kbps, video.updated, video.active = event.fps, event.bitrate_kbps, event.time, True
            if event.thumbnail_jpeg:
                video.thumbnail_jpeg = event.thumbnail_jpeg
        elif isinstance(event, ev.DataReceived):
            self.data_messages.append(
                DataMessage(event.sender, event.topic, event.size, event.text, event.payload_hex, event.time, event.local)
            )
        elif isinstance(event, ev.RecordingChanged):
            self.recordings[event.recording.file] = Recording.from_info(self.log_dir, event.recording)
        elif isinstance(event, ev.LogRecord):
            self.logs.append(event)
        elif isinstance(event, ev.ErrorRaised):
            self.errors.append(event)
        elif isinstance(event, ev.LoopHealth):
            self.unresponsive = not event.responsive
        elif isinstance(event, ev.ShutdownStarted):
            self.shutdown_reason = event.reason
            remaining = max(0.0, event.deadline - time.time())
            self._arm_kill_timer(remaining, self._stop_deadline_passed)
        elif isinstance(event, ev.CallbackOutcome):
            self.callbacks[event.name] = event
        elif isinstance(event, ev.SessionStarted):
            self.sessions[event.session] = VoiceSession.started(event)
        elif isinstance(event, ev.SESSION_EVENTS):
            self._apply_session_event(event)

    def _apply_session_event(self, event: Any) -> None:
        session = self.sessions.get(event.session)
        if session is None:  # its start was not seen (a bounded history): keep what arrives
            session = self.sessions[event.session] = VoiceSession(event.session, "", event.session == 1)
        session.apply(event)
        if isinstance(event, ev.ConversationItemAdded):
            entry = ev.transcript_entry(event)
            if entry is not None:
                self.transcript.append(entry)

    def _on_finished_message(self, message: JobFinished) -> None:
        with self._lock:
            self._finished_msg = message

    def _on_process_gone(self, exit_code: int | None) -> None:
        """The job's channel closed: settle the final state from what the process reported or left on disk."""
        with self._lock:
            if self._result is not None:
                return
            if self._kill_timer is not None:
                self._kill_timer.cancel()
            msg = self._finished_msg
            if msg is not None:
                state, reason, error, persisted = msg.state, msg.shutdown_reason, msg.error, msg.persisted
            else:
                on_disk = _read_result_file(self.log_dir)
                persisted = dict(on_disk.get("persisted") or {}) if on_disk else {}
                for name, outcome in self.callbacks.items():
                    if outcome.status == "finished":
                        persisted.setdefault(name, outcome.value)
                reason = self.shutdown_reason
                if self._kill_reason is not None:
                    state = "killed"
                    error = f"job process killed: {self._kill_reason}"
                else:
                    state = "crashed"
                    error = f"job process died on its own ({_describe_exit(exit_code)}) before reporting a result"
                for name in (on_disk or {}).get("pending_callbacks", []):
                    if name not in self.callbacks:
                        self.callbacks[name] = ev.CallbackOutcome(name=name, status="cut_off")
            self.shutdown_reason = reason
            self._result = JobResult(
                state=state,
                shutdown_reason=reason,
                error=error,
                persisted=persisted,
                callbacks=tuple(self.callbacks.values()),
                exit_code=exit_code,
                log_dir=str(self.log_dir),
                transcript=list(self.transcript),
                recordings=self._final_recordings(),
            )
            self._ended_at = time.time()
            changed = self.state != state
            self.state = state
            final_event = ev.StateChanged(state=state, detail=error or reason)
            if changed:
                self._record(final_event)
            waiters, self._waiters = self._waiters, []
            self._done.set()
        if changed:
            self._notify(final_event)
        for loop, fut in waiters:
            try:
                loop.call_soon_threadsafe(_resolve, fut, self._result)
            except RuntimeError:  # that loop has closed: nobody is waiting there any more
                pass

    def _final_recordings(self) -> tuple[Recording, ...]:
        """What the process reported, completed from the directory's index (a killed process reports nothing more)."""
        from nbagents.runtime.recorder import load_index

        found = dict(self.recordings)
        for entry in load_index(self.log_dir):
            info = ev.RecordingInfo(**{k: v for k, v in entry.items() if k in _RECORDING_FIELDS})
            if info.file not in found or found[info.file].status == "recording":
                found[info.file] = Recording.from_info(self.log_dir, info)
        self.recordings = found
        return tuple(found.values())

    def _notify(self, event: ev.Event) -> None:
        with self._lock:
            listeners = list(self._listeners)
        if not listeners:
            return
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self._call_listeners, listeners, event)
                return
            except RuntimeError:
                pass
        self._call_listeners(listeners, event)

    def _call_listeners(self, listeners: list[Listener], event: ev.Event) -> None:
        for listener in listeners:
            try:
                listener(self, event)
            except Exception:  # a broken view must not break the model
                import logging

                logging.getLogger("nbagents").exception("job listener %r failed", listener)

    def __repr__(self) -> str:
        return f"<nbagents.Job {self.id} room={self.room!r} state={self.state}>"


_RECORDING_FIELDS = frozenset(f.name for f in dataclasses.fields(ev.RecordingInfo))


def _resolve(fut: asyncio.Future[JobResult], result: JobResult) -> None:
    if not fut.done():
        fut.set_result(result)


def _read_result_file(log_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((log_dir / "result.json").read_text())
    except (OSError, ValueError):
        return None


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "exit status unknown"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"
