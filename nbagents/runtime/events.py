"""Typed events a job process streams to the kernel.

Every event is a small frozen dataclass with a ``kind`` tag and a ``time`` (seconds since the epoch,
taken in the job process). They travel over the job's IPC pipe, are appended to the job's event log
on disk as JSON lines (``to_json``/``from_json``) and kept in a bounded history on the kernel-side
:class:`nbagents.Job`. The kernel-side model and any UI read only these types.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, ClassVar

__all__ = [
    "AudioStats",
    "CallbackOutcome",
    "DataReceived",
    "EntrypointStarted",
    "ErrorRaised",
    "Event",
    "EVENT_TYPES",
    "JobState",
    "LogRecord",
    "LoopHealth",
    "ParticipantInfo",
    "ParticipantChanged",
    "RoomConnected",
    "ShutdownStarted",
    "StateChanged",
    "TrackChanged",
    "TrackInfo",
    "from_json",
]

JobState = str
"""One of ``starting``, ``running``, ``shutting_down``, ``succeeded``, ``failed``, ``killed``, ``crashed``."""

FINAL_STATES = frozenset({"succeeded", "failed", "killed", "crashed"})
ALL_STATES = ("starting", "running", "shutting_down", *sorted(FINAL_STATES))


def _now() -> float:
    return time.time()


@dataclasses.dataclass(frozen=True)
class Event:
    """Base of all job events; ``kind`` names the concrete type on the wire and on disk."""

    kind: ClassVar[str] = "event"
    time: float = dataclasses.field(default_factory=_now, kw_only=True)

    def to_json(self) -> dict[str, Any]:
        """A JSON-serializable dict holding ``kind`` and every field."""
        return {"kind": self.kind, **dataclasses.asdict(self)}


@dataclasses.dataclass(frozen=True)
class TrackInfo:
    """A published track as the job process sees it."""

    sid: str
    name: str
    kind: str  # "audio" | "video"
    source: str
    muted: bool
    subscribed: bool


@dataclasses.dataclass(frozen=True)
class ParticipantInfo:
    """A snapshot of one participant (remote or the agent itself)."""

    identity: str
    sid: str
    name: str
    kind: str  # "standard", "agent", "sip", "ingress", "egress", ...
    attributes: dict[str, str]
    metadata: str
    tracks: tuple[TrackInfo, ...] = ()
    local: bool = False


@dataclasses.dataclass(frozen=True)
class StateChanged(Event):
    """The job moved to a new state; ``detail`` says why (e.g. the shutdown reason)."""

    kind: ClassVar[str] = "state"
    state: JobState
    detail: str = ""


@dataclasses.dataclass(frozen=True)
class EntrypointStarted(Event):
    """The entrypoint's coroutine is about to run its first line (``perf_counter`` stamp for latency)."""

    kind: ClassVar[str] = "entrypoint_started"
    pid: int
    warm: bool
    perf_counter: float


@dataclasses.dataclass(frozen=True)
class RoomConnected(Event):
    """``ctx.connect()`` finished: the job's own participant is in the room."""

    kind: ClassVar[str] = "room_connected"
    room: str
    room_sid: str
    url: str
    identity: str
    seconds: float


@dataclasses.dataclass(frozen=True)
class ParticipantChanged(Event):
    """A participant joined, left, or changed attributes/metadata/name/tracks (``change`` says which)."""

    kind: ClassVar[str] = "participant"
    change: str  # "joined" | "left" | "attributes" | "metadata" | "name" | "tracks" | "local"
    participant: ParticipantInfo
    changed: dict[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class TrackChanged(Event):
    """A track was published, unpublished, subscribed, unsubscribed, muted or unmuted."""

    kind: ClassVar[str] = "track"
    change: str  # "published" | "unpublished" | "subscribed" | "unsubscribed" | "muted" | "unmuted" | "local_published"
    participant_identity: str
    track: TrackInfo


@dataclasses.dataclass(frozen=True)
class DataReceived(Event):
    """A data packet arrived in the room (payload as text when it is UTF-8, else ``payload_hex``)."""

    kind: ClassVar[str] = "data"
    sender: str
    topic: str
    size: int
    text: str | None
    payload_hex: str | None = None


@dataclasses.dataclass(frozen=True)
class AudioStats(Event):
    """Frame statistics of one subscribed audio track over the last window (about 50 ms).

    Computed in the job process by its own monitor stream, independent of the user's streams.
    ``waveform`` is a decimated view of the window's samples in [-1, 1] (signed peak per bucket).
    """

    kind: ClassVar[str] = "audio"
    track_sid: str
    participant_identity: str
    frames: int  # total frames received on this track so far
    sample_rate: int
    channels: int
    samples_per_frame: int
    rms: float  # over the window, full scale = 1.0
    peak: float
    waveform: tuple[float, ...] = ()


@dataclasses.dataclass(frozen=True)
class LogRecord(Event):
    """A log record or a line printed by the job process."""

    kind: ClassVar[str] = "log"
    level: str
    logger: str
    message: str


@dataclasses.dataclass(frozen=True)
class ErrorRaised(Event):
    """An exception in the entrypoint, a shutdown callback, an event handler or the runtime."""

    kind: ClassVar[str] = "error"
    where: str
    message: str
    traceback: str


@dataclasses.dataclass(frozen=True)
class LoopHealth(Event):
    """The job's event loop stopped answering (``responsive=False``) or came back."""

    kind: ClassVar[str] = "loop_health"
    responsive: bool
    blocked_seconds: float


@dataclasses.dataclass(frozen=True)
class ShutdownStarted(Event):
    """Shutdown began; callbacks run now and the process is killed at ``deadline`` (epoch seconds)."""

    kind: ClassVar[str] = "shutdown_started"
    reason: str
    deadline: float
    callbacks: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class CallbackOutcome(Event):
    """One shutdown callback ended: ``finished`` (``value`` is what it returned), ``failed`` or ``cut_off``."""

    kind: ClassVar[str] = "callback"
    name: str
    status: str  # "finished" | "failed" | "cut_off"
    value: Any = None
    error: str | None = None
    started: float | None = None
    ended: float | None = None


EVENT_TYPES: dict[str, type[Event]] = {
    cls.kind: cls
    for cls in (
        StateChanged,
        EntrypointStarted,
        RoomConnected,
        ParticipantChanged,
        TrackChanged,
        DataReceived,
        AudioStats,
        LogRecord,
        ErrorRaised,
        LoopHealth,
        ShutdownStarted,
        CallbackOutcome,
    )
}


def from_json(data: dict[str, Any]) -> Event:
    """Rebuild an event from :meth:`Event.to_json` output (e.g. a line of ``events.jsonl``)."""
    data = dict(data)
    cls = EVENT_TYPES[data.pop("kind")]
    if cls is ParticipantChanged:
        data["participant"] = _participant_from_json(data["participant"])
    elif cls is TrackChanged:
        data["track"] = TrackInfo(**data["track"])
    elif cls is AudioStats:
        data["waveform"] = tuple(data.get("waveform", ()))
    elif cls is ShutdownStarted:
        data["callbacks"] = tuple(data.get("callbacks", ()))
    return cls(**data)


def _participant_from_json(data: dict[str, Any]) -> ParticipantInfo:
    tracks = tuple(TrackInfo(**t) for t in data.get("tracks", ()))
    return ParticipantInfo(**{**data, "tracks": tracks})
