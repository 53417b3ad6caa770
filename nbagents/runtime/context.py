"""The livekit-agents 1.8 job surface, as nbagents provides it inside a job process.

``JobContext``, ``JobProcess``, ``AutoSubscribe`` and ``WorkerOptions`` mirror livekit-agents' names and
signatures (a test compares them with the installed livekit-agents), so an entrypoint written in a
notebook runs unchanged under a livekit-agents worker after export.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import inspect
import os
import threading
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Coroutine

from livekit import api, rtc
from livekit.protocol import agent as agent_pb
from livekit.protocol import models as models_pb

if TYPE_CHECKING:
    from nbagents.runtime.worker import JobRuntime

__all__ = ["AutoSubscribe", "JobContext", "JobProcess", "WorkerOptions", "DEFAULT_PARTICIPANT_KINDS"]

DEFAULT_PARTICIPANT_KINDS: list[int] = [
    rtc.ParticipantKind.PARTICIPANT_KIND_CONNECTOR if hasattr(rtc.ParticipantKind, "PARTICIPANT_KIND_CONNECTOR") else 5,
    rtc.ParticipantKind.PARTICIPANT_KIND_SIP,
    rtc.ParticipantKind.PARTICIPANT_KIND_STANDARD,
]
ENGINE_WAIT_SECONDS = 60.0


class AutoSubscribe(str, enum.Enum):
    """Which remote tracks ``ctx.connect()`` subscribes to automatically."""

    SUBSCRIBE_ALL = "subscribe_all"
    SUBSCRIBE_NONE = "subscribe_none"
    AUDIO_ONLY = "audio_only"
    VIDEO_ONLY = "video_only"


class JobProcess:
    """The OS process a job runs in; ``userdata`` is filled by the ``prewarm`` function."""

    def __init__(self, *, executor_type: str = "process", user_arguments: Any | None = None, http_proxy: str | None = None) -> None:
        self._executor_type = executor_type
        self._user_arguments = user_arguments
        self._http_proxy = http_proxy
        self._userdata: dict[str, Any] = {}

    @property
    def executor_type(self) -> str:
        return self._executor_type

    @property
    def pid(self) -> int | None:
        return os.getpid()

    @property
    def userdata(self) -> dict[str, Any]:
        return self._userdata

    @property
    def user_arguments(self) -> Any | None:
        return self._user_arguments

    @property
    def http_proxy(self) -> str | None:
        return self._http_proxy


def _default_prewarm(proc: JobProcess) -> Any:
    return None


@dataclasses.dataclass
class WorkerOptions:
    """livekit-agents' worker options (the subset nbagents uses; the exporter writes them all out).

    ``shutdown_process_timeout`` defaults to 60 s as the LiveKit Agents documentation says (the
    livekit-agents 1.8 code says 10 s); the exporter always writes the value explicitly.
    """

    entrypoint_fnc: Callable[[JobContext], Awaitable[None]]
    prewarm_fnc: Callable[[JobProcess], Any] = _default_prewarm
    shutdown_process_timeout: float = 60.0
    initialize_process_timeout: float = 10.0
    num_idle_processes: int = 1
    agent_name: str = ""
    ws_url: str | None = None
    api_key: str | None = None
    api_secret: str | None = None


@dataclasses.dataclass(frozen=True)
class _ShutdownCallback:
    name: str
    fnc: Callable[..., Any]
    takes_reason: bool


class JobContext:
    """What an entrypoint receives: the room, the job, the process, and shutdown control.

    ``room`` is a real ``livekit.rtc.Room``; ``job`` is the livekit protobuf ``Job`` (``job.id``,
    ``job.room.name``). The shutdown callbacks' return values are kept: each finished callback's
    JSON-serializable return value appears in ``JobResult.persisted`` under the callback's name.
    """

    def __init__(self, *, runtime: JobRuntime, proc: JobProcess, job_id: str, room_name: str) -> None:
        self._runtime = runtime
        self._proc = proc
        self._room = rtc.Room()
        self._job = agent_pb.Job(id=job_id, room=models_pb.Room(name=room_name), type=agent_pb.JobType.JT_ROOM)
        self._identity = f"agent-{job_id}"
        self._connect_lock = asyncio.Lock()
        self._connected = False
        self._shutdown_callbacks: list[_ShutdownCallback] = []
        self._participant_entrypoints: list[tuple[Callable[..., Coroutine[Any, Any, None]], list[int]]] = []
        self._participant_tasks: dict[tuple[str, Any], asyncio.Task[None]] = {}
        self._room.on("participant_connected", self._participant_available)

    # ---- properties -------------------------------------------------------------------------------

    @property
    def room(self) -> rtc.Room:
        return self._room

    @property
    def job(self) -> agent_pb.Job:
        return self._job

    @property
    def proc(self) -> JobProcess:
        return self._proc

    @property
    def local_participant_identity(self) -> str:
        return self._identity

    @property
    def api(self) -> api.LiveKitAPI:
        """A LiveKitAPI for the job's server (created on first use, closed at shutdown)."""
        if self._api is None:
            url, key, secret = self._runtime.credentials_blocking(ENGINE_WAIT_SECONDS)
            self._api = api.LiveKitAPI(url=_http_url(url), api_key=key, api_secret=secret)
            self._runtime.on_close(self._api.aclose)
        return self._api

    _api: api.LiveKitAPI | None = None

    # ---- connecting -------------------------------------------------------------------------------

    async def connect(
        self,
        *,
        encryption: rtc.E2EEOptions | None = None,
        auto_subscribe: AutoSubscribe = AutoSubscribe.SUBSCRIBE_ALL,
        rtc_config: rtc.RtcConfiguration | None = None,
        single_peer_connection: bool | None = None,
        e2ee: rtc.E2EEOptions | None = None,
    ) -> None:
        """Connect the agent to the job's room (once; later calls return at once)."""
        async with self._connect_lock:
            if self._connected:
                return
            auto_subscribe = AutoSubscribe(auto_subscribe)
            options = rtc.RoomOptions(auto_subscribe=auto_subscribe == AutoSubscribe.SUBSCRIBE_ALL, dynacast=False)
            if encryption or e2ee:
                options.e2ee = encryption or e2ee
            if rtc_config is not None:
                options.rtc_config = rtc_config
            await self._runtime.connect_room(self, options)
            self._connected = True
            if auto_subscribe in (AutoSubscribe.AUDIO_ONLY, AutoSubscribe.VIDEO_ONLY):
                self._subscribe_kind(auto_subscribe)
            for participant in self._room.remote_participants.values():
                self._participant_available(participant)

    def _subscribe_kind(self, auto_subscribe: AutoSubscribe) -> None:
        wanted = rtc.TrackKind.KIND_AUDIO if auto_subscribe == AutoSubscribe.AUDIO_ONLY else rtc.TrackKind.KIND_VIDEO

        def subscribe(publication: rtc.RemoteTrackPublication, *_: Any) -> None:
            if publication.kind == wanted:
                publication.set_subscribed(True)

        for participant in self._room.remote_participants.values():
            for publication in participant.track_publications.values():
                subscribe(publication)
        self._room.on("track_published", subscribe)

    # ---- participants -----------------------------------------------------------------------------

    async def wait_for_participant(
        self,
        *,
        identity: str | None = None,
        kind: list[rtc.ParticipantKind.ValueType] | rtc.ParticipantKind.ValueType = DEFAULT_PARTICIPANT_KINDS,
    ) -> rtc.RemoteParticipant:
        """The first remote participant with this identity (any, if None) and kind; waits if none is here yet."""
        kinds = kind if isinstance(kind, list) else [kind]

        def matches(p: rtc.RemoteParticipant) -> bool:
            return (identity is None or p.identity == identity) and p.kind in kinds

        for participant in self._room.remote_participants.values():
            if matches(participant):
                return participant
        fut: asyncio.Future[rtc.RemoteParticipant] = asyncio.get_running_loop().create_future()

        def on_connected(p: rtc.RemoteParticipant) -> None:
            if matches(p) and not fut.done():
                fut.set_result(p)

        def on_disconnected(*_: Any) -> None:
            if not fut.done():
                fut.set_exception(RuntimeError("room disconnected while waiting for participant"))

        self._room.on("participant_connected", on_connected)
        self._room.on("disconnected", on_disconnected)
        try:
            return await fut
        finally:
            self._room.off("participant_connected", on_connected)
            self._room.off("disconnected", on_disconnected)

    def add_participant_entrypoint(
        self,
        entrypoint_fnc: Callable[[JobContext, rtc.RemoteParticipant], Coroutine[None, None, None]],
        *_: Any,
        kind: list[rtc.ParticipantKind.ValueType] | rtc.ParticipantKind.ValueType = DEFAULT_PARTICIPANT_KINDS,
    ) -> None:
        """Run ``entrypoint_fnc(ctx, participant)`` for every participant of ``kind`` (present or future)."""
        if any(fnc is entrypoint_fnc for fnc, _ in self._participant_entrypoints):
            raise ValueError("entrypoints cannot be added more than once")
        self._participant_entrypoints.append((entrypoint_fnc, kind if isinstance(kind, list) else [kind]))
        if self._connected:
            for participant in self._room.remote_participants.values():
                self._participant_available(participant)

    def _participant_available(self, participant: rtc.RemoteParticipant) -> None:
        for fnc, kinds in self._participant_entrypoints:
            if participant.kind not in kinds:
                continue
            key = (participant.identity, fnc)
            if key in self._participant_tasks:
                continue
            task = asyncio.get_event_loop().create_task(fnc(self, participant))
            self._participant_tasks[key] = task
            task.add_done_callback(lambda t, key=key: self._participant_task_done(key, t))

    def _participant_task_done(self, key: tuple[str, Any], task: asyncio.Task[None]) -> None:
        self._participant_tasks.pop(key, None)
        if not task.cancelled() and task.exception() is not None:
            self._runtime.report_exception("participant entrypoint", task.exception())

    # ---- ending -----------------------------------------------------------------------------------

    def shutdown(self, reason: str = "user requested") -> None:
        """End the job: shutdown callbacks run, then the process exits (killed after the timeout)."""
        self._runtime.request_shutdown(reason)

    def add_shutdown_callback(
        self,
        callback: Callable[[], Coroutine[None, None, None]] | Callable[[str], Coroutine[None, None, None]],
    ) -> None:
        """Run ``callback`` (async or sync, taking the shutdown reason or nothing) when the job ends.

        Its return value, if JSON-serializable, is persisted under the callback's name.
        """
        if not callable(callback):
            raise TypeError(f"add_shutdown_callback needs a callable, got {type(callback).__name__}")
        name = getattr(callback, "__name__", None) or type(callback).__name__
        existing = {cb.name for cb in self._shutdown_callbacks}
        unique, n = name, 2
        while unique in existing:
            unique, n = f"{name}#{n}", n + 1
        self._shutdown_callbacks.append(_ShutdownCallback(unique, callback, _takes_reason(callback)))

    def delete_room(self, room_name: str | None = None) -> asyncio.Future[api.DeleteRoomResponse]:
        """Delete the room (everyone is disconnected, which ends the job)."""

        async def delete() -> api.DeleteRoomResponse:
            return await self.api.room.delete_room(api.DeleteRoomRequest(room=room_name or self._room.name))

        return asyncio.ensure_future(delete())

    def token_claims(self) -> Any:
        return self._runtime.token_claims

    def is_fake_job(self) -> bool:
        return False


def _takes_reason(callback: Callable[..., Any]) -> bool:
    try:
        params = [
            p
            for p in inspect.signature(callback).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
        ]
    except (TypeError, ValueError):
        return False
    return bool(params)


def _http_url(url: str) -> str:
    return url.replace("ws://", "http://", 1).replace("wss://", "https://", 1)


# the runtime sets proc.userdata before StartJob in a warm process; keep a single JobProcess per process
_process_lock = threading.Lock()
_current_process: JobProcess | None = None


def current_process() -> JobProcess:
    global _current_process
    with _process_lock:
        if _current_process is None:
            _current_process = JobProcess()
        return _current_process
