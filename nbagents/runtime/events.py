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
    "AgentStateChanged",
    "AudioStats",
    "CallbackOutcome",
    "ConversationItemAdded",
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
    "RecordingChanged",
    "RecordingInfo",
    "RoomConnected",
    "ShutdownStarted",
    "StateChanged",
    "TrackChanged",
    "TrackInfo",
    "FunctionToolsExecuted",
    "SessionClosed",
    "SessionStarted",
    "ToolCall",
    "TurnMetrics",
    "UserStateChanged",
    "UserTranscribed",
    "VideoStats",
    "from_json",
    "transcript_entry",
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
    """A data packet in the room (payload as text when it is UTF-8, else ``payload_hex``).

    ``local=True``: the agent itself published it (``ctx.room.local_participant.publish_data``).
    """

    kind: ClassVar[str] = "data"
    sender: str
    topic: str
    size: int
    text: str | None
    payload_hex: str | None = None
    local: bool = False


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
class RecordingInfo:
    """One audio recording of the job (see :mod:`nbagents.runtime.recorder`).

    ``file`` is relative to the job's directory (``audio/<direction>-<identity>-<track sid>.ogg``, Ogg/Opus);
    ``direction`` is ``received`` (a remote participant's track) or ``published`` (the agent's own);
    ``status`` is ``recording``, ``finished``, ``truncated`` (a bound was reached: ``note`` says which) or
    ``failed``; ``seconds`` of audio and ``bytes`` of file so far.
    """

    file: str
    track_sid: str
    participant_identity: str
    direction: str
    status: str
    seconds: float
    bytes: int
    sample_rate: int
    started: float
    note: str = ""


@dataclasses.dataclass(frozen=True)
class RecordingChanged(Event):
    """A recording ``started`` or ``finished`` (finished also when it was truncated or failed)."""

    kind: ClassVar[str] = "recording"
    change: str  # "started" | "finished"
    recording: RecordingInfo


@dataclasses.dataclass(frozen=True)
class VideoStats(Event):
    """Statistics of one subscribed video track over the last second, with a small thumbnail.

    Computed in the job process by its monitor's own ``VideoStream``. ``fps`` counts decoded frames;
    ``bitrate_kbps`` is what the track received (WebRTC statistics); ``thumbnail_jpeg`` is the latest frame
    scaled to at most ``THUMBNAIL_WIDTH`` pixels wide, JPEG, base64 ("" when no frame arrived yet).
    """

    kind: ClassVar[str] = "video"
    track_sid: str
    participant_identity: str
    frames: int  # total frames decoded on this track so far
    width: int
    height: int
    fps: float
    bitrate_kbps: float
    thumbnail_jpeg: str = ""


@dataclasses.dataclass(frozen=True)
class LogRecord(Event):
    """A log record or a line printed by the job process.

    ``level``: a :mod:`logging` level name, or ``PRINT`` / ``STDERR`` for a line written to ``sys.stdout`` /
    ``sys.stderr``.
    """

    kind: ClassVar[str] = "log"
    level: str
    logger: str
    message: str

    @property
    def severity(self) -> int:
        """The record's :mod:`logging` level number: a printed line counts as INFO, a line on stderr as WARNING."""
        return level_number(self.level)


def level_number(level: str) -> int:
    """A :class:`LogRecord` level's :mod:`logging` number: ``PRINT`` and unknown names are INFO, ``STDERR`` WARNING."""
    import logging

    if level == "STDERR":
        return logging.WARNING
    number = logging.getLevelName(level.upper())
    return number if isinstance(number, int) else logging.INFO


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


# ---- voice sessions ------------------------------------------------------------------------------
#
# When the entrypoint runs a livekit-agents ``AgentSession``, the job process follows it through the
# session's own events (``agent_state_changed``, ``user_input_transcribed``, ...) and streams these. A
# job may run several sessions (one per participant, say): ``session`` numbers them 1, 2, ... in the
# order they started; session 1 is the job's primary session (the one livekit-agents closes first at
# shutdown and that hosts the ``lk.agent.session`` stream). Times are seconds since the epoch, durations
# seconds.


@dataclasses.dataclass(frozen=True)
class SessionStarted(Event):
    """An ``AgentSession`` of the job started (``session.start(...)`` was called).

    ``agent`` is the class name of the ``Agent`` it started with; ``primary`` whether it is the job's
    primary session (livekit-agents makes the first session to start the primary one).
    """

    kind: ClassVar[str] = "session_started"
    session: int
    agent: str
    primary: bool


@dataclasses.dataclass(frozen=True)
class AgentStateChanged(Event):
    """The agent's state in a session changed (livekit-agents ``agent_state_changed``).

    States: ``initializing``, ``idle``, ``listening``, ``thinking``, ``speaking``. The same value is
    published to the room as the agent participant's ``lk.agent.state`` attribute.
    """

    kind: ClassVar[str] = "agent_state"
    session: int
    old_state: str
    new_state: str


@dataclasses.dataclass(frozen=True)
class UserStateChanged(Event):
    """The user's state in a session changed (livekit-agents ``user_state_changed``).

    States: ``speaking``, ``listening`` (silent), ``away`` (silent for the session's
    ``user_away_timeout``).
    """

    kind: ClassVar[str] = "user_state"
    session: int
    old_state: str
    new_state: str


@dataclasses.dataclass(frozen=True)
class UserTranscribed(Event):
    """Speech-to-text of the user's speech (livekit-agents ``user_input_transcribed``).

    ``is_final`` False: an interim hypothesis that later events of the same utterance replace; True:
    the final text of a segment. ``language`` and ``speaker_id`` as the STT reported them, or None.
    A final transcript becomes part of the conversation once the user's turn ends
    (:class:`ConversationItemAdded` with role ``user``).
    """

    kind: ClassVar[str] = "user_transcript"
    session: int
    text: str
    is_final: bool
    language: str | None = None
    speaker_id: str | None = None


@dataclasses.dataclass(frozen=True)
class ConversationItemAdded(Event):
    """A message was committed to a session's conversation (livekit-agents ``conversation_item_added``).

    ``role``: ``user`` (a completed user turn), ``assistant`` (what the agent said, or would have said
    without audio output), ``system`` or ``developer``. ``text`` is the message's text content
    (assistant text without expression markup), ``interrupted`` whether the user cut the agent off,
    ``created_at`` when livekit-agents created the message (epoch seconds). User and assistant messages
    with text form :attr:`nbagents.JobResult.transcript`.
    """

    kind: ClassVar[str] = "conversation_item"
    session: int
    item_id: str
    role: str
    text: str
    interrupted: bool = False
    created_at: float = 0.0


@dataclasses.dataclass(frozen=True)
class TurnMetrics(Event):
    """Latencies of one conversation turn, from the metrics livekit-agents attaches to the message.

    Sent right after the :class:`ConversationItemAdded` with the same ``item_id``, when livekit-agents
    measured anything for it. Every duration is in seconds and None when not measured for this turn
    (a text-only turn has no speech timings; an agent without TTS has no ``tts_ttfb``).

    User turns: ``transcription_delay`` (end of speech -> final transcript), ``end_of_turn_delay`` (end
    of speech -> the decision that the turn ended), ``on_user_turn_completed_delay`` (the agent's
    ``on_user_turn_completed`` callback). Assistant turns: ``llm_ttft`` (LLM time to first token),
    ``tts_ttfb`` (TTS time to first audio), ``e2e_latency`` (end of the user's speech -> the agent
    started to answer). ``started_speaking_at``/``stopped_speaking_at``: epoch seconds, when known.
    """

    kind: ClassVar[str] = "turn_metrics"
    session: int
    item_id: str
    role: str
    e2e_latency: float | None = None
    llm_ttft: float | None = None
    tts_ttfb: float | None = None
    transcription_delay: float | None = None
    end_of_turn_delay: float | None = None
    on_user_turn_completed_delay: float | None = None
    started_speaking_at: float | None = None
    stopped_speaking_at: float | None = None


@dataclasses.dataclass(frozen=True)
class ToolCall:
    """One function-tool call: ``arguments`` is the JSON text the LLM produced, ``output`` what the tool
    returned (as text), ``is_error`` whether the tool raised."""

    name: str
    call_id: str
    arguments: str
    output: str
    is_error: bool


@dataclasses.dataclass(frozen=True)
class FunctionToolsExecuted(Event):
    """A batch of function tools finished (livekit-agents ``function_tools_executed``), in call order."""

    kind: ClassVar[str] = "function_tools"
    session: int
    calls: tuple[ToolCall, ...] = ()


@dataclasses.dataclass(frozen=True)
class SessionClosed(Event):
    """A session closed (livekit-agents ``close``); ``reason`` is its ``CloseReason`` value (``job_shutdown``,
    ``participant_disconnected``, ``user_initiated``, ``task_completed``, ``error``), ``error`` the
    error that closed it, if any."""

    kind: ClassVar[str] = "session_closed"
    session: int
    reason: str
    error: str | None = None


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
        VideoStats,
        LogRecord,
        ErrorRaised,
        LoopHealth,
        ShutdownStarted,
        CallbackOutcome,
        SessionStarted,
        AgentStateChanged,
        UserStateChanged,
        UserTranscribed,
        ConversationItemAdded,
        TurnMetrics,
        FunctionToolsExecuted,
        SessionClosed,
        RecordingChanged,
    )
}


SESSION_EVENTS = (AgentStateChanged, UserStateChanged, UserTranscribed, ConversationItemAdded, TurnMetrics,
                  FunctionToolsExecuted, SessionClosed)
"""The events that belong to one session (each has a ``session`` number)."""


def transcript_entry(event: ConversationItemAdded) -> dict[str, Any] | None:
    """The turn a conversation item adds to :attr:`nbagents.JobResult.transcript`, or None (other roles, no text).

    ``{"role": "user" | "assistant", "text": str, "time": float}``, ``time`` being when livekit-agents
    created the message (epoch seconds).
    """
    if event.role not in ("user", "assistant") or not event.text:
        return None
    return {"role": event.role, "text": event.text, "time": event.created_at or event.time}


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
    elif cls is RecordingChanged:
        data["recording"] = RecordingInfo(**data["recording"])
    elif cls is ShutdownStarted:
        data["callbacks"] = tuple(data.get("callbacks", ()))
    elif cls is FunctionToolsExecuted:
        data["calls"] = tuple(ToolCall(**call) for call in data.get("calls", ()))
    return cls(**data)


def _participant_from_json(data: dict[str, Any]) -> ParticipantInfo:
    tracks = tuple(TrackInfo(**t) for t in data.get("tracks", ()))
    return ParticipantInfo(**{**data, "tracks": tracks})
