"""A voice session as data: built from the voice events of :mod:`nbagents.runtime.events`, nothing else.

:class:`VoiceSession` is what the kernel-side :class:`nbagents.Job` keeps per ``AgentSession`` (``job.sessions``)
and what the job process keeps to write ``transcript.json``. It holds the session's latest states, their
history (for a timeline: who spoke when, what the agent was doing), the committed conversation, the
function-tool calls with their times and each turn's latencies, and pairs every agent reply with the user
turn it answered (:meth:`VoiceSession.latency`). Pure data: no I/O, no widgets.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from nbagents.runtime import events as ev

__all__ = ["Turn", "TurnLatency", "VoiceSession", "transcript_document", "TRANSCRIPT_FILE"]

TRANSCRIPT_FILE = "transcript.json"


@dataclasses.dataclass(frozen=True)
class Turn:
    """One message of the conversation with the latencies livekit-agents measured for it (``metrics`` or None)."""

    session: int
    item_id: str
    role: str  # "user" | "assistant" | "system" | "developer"
    text: str
    time: float  # when livekit-agents created the message (epoch seconds): for a reply, when its audio started
    interrupted: bool
    metrics: ev.TurnMetrics | None


@dataclasses.dataclass(frozen=True)
class TurnLatency:
    """Where the time went before one agent reply (seconds; None when not measured for this reply).

    The user-side stages come from the user turn the reply answered (``user_item_id``; None for a reply
    that answered nobody, e.g. a greeting): ``end_of_turn_delay`` (end of the user's speech → the
    decision that the turn ended, the end-of-utterance delay), ``transcription_delay`` (end of speech →
    the final transcript, the STT's delay). The reply's own: ``llm_ttft`` (LLM time to first token),
    ``tts_ttfb`` (TTS time to first audio), ``e2e_latency`` (end of the user's speech → the agent's
    first audio frame played out in the job: the total response time livekit-agents measures).
    """

    session: int
    item_id: str
    text: str
    time: float
    interrupted: bool
    user_item_id: str | None
    user_text: str | None
    end_of_turn_delay: float | None
    transcription_delay: float | None
    llm_ttft: float | None
    tts_ttfb: float | None
    e2e_latency: float | None


@dataclasses.dataclass
class VoiceSession:
    """What is known of one ``AgentSession`` of a job (see the voice events in :mod:`nbagents.runtime.events`).

    ``agent_states`` and ``user_states`` are the state histories as ``(epoch seconds, new state)``,
    oldest first; ``tool_batches`` the :class:`~nbagents.runtime.events.FunctionToolsExecuted` events
    (calls with the time they finished); ``tool_calls`` every call, flat.
    """

    session: int  # 1, 2, ... in start order; 1 is the job's primary session
    agent: str  # the class name of its Agent
    primary: bool
    started_at: float = 0.0
    agent_state: str = "initializing"
    user_state: str = "listening"
    interim: str = ""  # the latest interim transcript of the user's current utterance ("" once final)
    items: list[ev.ConversationItemAdded] = dataclasses.field(default_factory=list)
    tool_calls: list[ev.ToolCall] = dataclasses.field(default_factory=list)
    tool_batches: list[ev.FunctionToolsExecuted] = dataclasses.field(default_factory=list)
    metrics: list[ev.TurnMetrics] = dataclasses.field(default_factory=list)
    agent_states: list[tuple[float, str]] = dataclasses.field(default_factory=list)
    user_states: list[tuple[float, str]] = dataclasses.field(default_factory=list)
    closed: ev.SessionClosed | None = None

    @classmethod
    def started(cls, event: ev.SessionStarted) -> VoiceSession:
        return cls(event.session, event.agent, event.primary, started_at=event.time)

    def apply(self, event: ev.Event) -> None:
        """Take one of the session's events into account (events of other kinds are ignored)."""
        if not self.started_at:
            self.started_at = event.time
        if isinstance(event, ev.AgentStateChanged):
            self.agent_state = event.new_state
            self.agent_states.append((event.time, event.new_state))
        elif isinstance(event, ev.UserStateChanged):
            self.user_state = event.new_state
            self.user_states.append((event.time, event.new_state))
        elif isinstance(event, ev.UserTranscribed):
            self.interim = "" if event.is_final else event.text
        elif isinstance(event, ev.ConversationItemAdded):
            self.items.append(event)
            if event.role == "user":
                self.interim = ""
        elif isinstance(event, ev.TurnMetrics):
            self.metrics.append(event)
        elif isinstance(event, ev.FunctionToolsExecuted):
            self.tool_batches.append(event)
            self.tool_calls.extend(event.calls)
        elif isinstance(event, ev.SessionClosed):
            self.closed = event

    @property
    def ended_at(self) -> float | None:
        """When the session closed (epoch seconds), None while it runs."""
        return self.closed.time if self.closed is not None else None

    def turns(self) -> list[Turn]:
        """The committed messages in order, each with its metrics."""
        by_item = {m.item_id: m for m in self.metrics}
        return [
            Turn(self.session, i.item_id, i.role, i.text, i.created_at or i.time, i.interrupted, by_item.get(i.item_id))
            for i in self.items
        ]

    def latency(self) -> list[TurnLatency]:
        """One row per agent reply, with the stages of the user turn it answered.

        A reply answers the latest user turn not answered yet (livekit-agents measures a reply's
        ``e2e_latency`` from that turn's end of speech); later replies to the same turn (after a tool
        call, say) have no user stages of their own.
        """
        rows: list[TurnLatency] = []
        pending: Turn | None = None
        for turn in self.turns():
            if turn.role == "user":
                pending = turn
            elif turn.role == "assistant":
                user, pending = pending, None
                um = user.metrics if user is not None else None
                am = turn.metrics
                rows.append(
                    TurnLatency(
                        session=self.session,
                        item_id=turn.item_id,
                        text=turn.text,
                        time=turn.time,
                        interrupted=turn.interrupted,
                        user_item_id=user.item_id if user is not None else None,
                        user_text=user.text if user is not None else None,
                        end_of_turn_delay=um.end_of_turn_delay if um is not None else None,
                        transcription_delay=um.transcription_delay if um is not None else None,
                        llm_ttft=am.llm_ttft if am is not None else None,
                        tts_ttfb=am.tts_ttfb if am is not None else None,
                        e2e_latency=am.e2e_latency if am is not None else None,
                    )
                )
        return rows

    def copy(self) -> VoiceSession:
        """A snapshot whose lists do not change when more events arrive."""
        return dataclasses.replace(
            self,
            items=list(self.items),
            tool_calls=list(self.tool_calls),
            tool_batches=list(self.tool_batches),
            metrics=list(self.metrics),
            agent_states=list(self.agent_states),
            user_states=list(self.user_states),
        )

    def to_json(self) -> dict[str, Any]:
        """The session as ``transcript.json`` holds it (see :func:`transcript_document`)."""
        return {
            "session": self.session,
            "agent": self.agent,
            "primary": self.primary,
            "started_at": self.started_at,
            "closed": None if self.closed is None else {
                "time": self.closed.time, "reason": self.closed.reason, "error": self.closed.error
            },
            "turns": [
                {
                    "item_id": t.item_id,
                    "role": t.role,
                    "text": t.text,
                    "time": t.time,
                    "interrupted": t.interrupted,
                    "metrics": _metrics_json(t.metrics),
                }
                for t in self.turns()
            ],
            "tool_calls": [
                {"time": batch.time, **dataclasses.asdict(call)} for batch in self.tool_batches for call in batch.calls
            ],
            "latency": [dataclasses.asdict(row) for row in self.latency()],
            "agent_states": [[t, s] for t, s in self.agent_states],
            "user_states": [[t, s] for t, s in self.user_states],
        }


def _metrics_json(metrics: ev.TurnMetrics | None) -> dict[str, float] | None:
    if metrics is None:
        return None
    fields = dataclasses.asdict(metrics)
    return {k: v for k, v in fields.items() if k not in ("time", "session", "item_id", "role") and v is not None}


def transcript_document(job_id: str, room: str, sessions: dict[int, VoiceSession]) -> dict[str, Any]:
    """What a job writes to ``<job dir>/transcript.json`` when it ran ``AgentSession`` s.

    ``{"job_id", "room", "transcript": [{"role", "text", "time", "session", "interrupted"}...] (every
    session's user and assistant turns with text, in time order), "sessions": [session...]}``; each
    session holds its ``turns`` (with ``metrics`` in seconds), ``tool_calls`` (``time``, ``name``,
    ``arguments`` JSON text, ``output``, ``is_error``), ``latency`` (one row per reply, see
    :class:`TurnLatency`), and its ``agent_states`` / ``user_states`` as ``[epoch seconds, state]``.
    """
    ordered = [sessions[n] for n in sorted(sessions)]
    transcript = sorted(
        (
            {"role": t.role, "text": t.text, "time": t.time, "session": s.session, "interrupted": t.interrupted}
            for s in ordered
            for t in s.turns()
            if t.role in ("user", "assistant") and t.text
        ),
        key=lambda turn: turn["time"],
    )
    return {"job_id": job_id, "room": room, "transcript": transcript, "sessions": [s.to_json() for s in ordered]}
