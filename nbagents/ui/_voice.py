"""The voice-session view of the inspector: what an ``AgentSession`` in the job hears, says and spends time on.

Live: a coloured badge for the agent's state and one for the user's (per session), the conversation as
it is committed (times, interrupted replies marked, the user's words while they are still being
recognised), function-tool calls with their arguments and results, a per-reply latency table
(end-of-utterance delay, STT, LLM time to first token, TTS time to first byte, total response time) and
a timeline plot (:mod:`nbagents.ui._timeline`). It reads the kernel-side model only (``job.sessions``,
built from the job's voice events) and stays hidden for jobs that run no session.

When the job ends, the same content goes into the notebook's final state as Markdown and text
(:func:`voice_markdown`, :func:`voice_text`) and the timeline as a PNG (:func:`timeline_png`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import html
import json
import logging
import time
from typing import TYPE_CHECKING, Any

import ipywidgets as w

from nbagents.runtime import events as ev
from nbagents.runtime.conversation import TurnLatency, VoiceSession
from nbagents.ui._throttle import Coalescer
from nbagents.ui._timeline import AGENT_STATE_COLORS, USER_STATE_COLORS, WIDTH_PX, TimelinePlot, render_timeline

if TYPE_CHECKING:
    from nbagents.runtime.job import Job

__all__ = ["VoiceView", "timeline_png", "voice_json", "voice_markdown", "voice_text"]

DEFAULT_TIMELINE_RATE = 1.0  # timeline redraws a second at most (each is a full Agg draw)
SHOWN_TURNS = 200
_CLIP = 300

logger = logging.getLogger("nbagents.ui")

_VOICE_EVENTS = (ev.SessionStarted, *ev.SESSION_EVENTS)


def sessions_snapshot(job: Job) -> list[VoiceSession]:
    """Copies of the job's sessions, safe to read while the job's reader thread adds events."""
    with job._lock:
        return [job.sessions[n].copy() for n in sorted(job.sessions)]


def timeline_png(job: Job) -> bytes | None:
    """The finished (or current) timeline of the job's sessions as PNG; None when it ran no session."""
    return render_timeline(sessions_snapshot(job), None if job.done else time.time())


class VoiceView:
    """Live view of a job's ``AgentSession`` s (``box`` is the widget; hidden until a session starts).

    ``ui_rate``: badge, conversation and latency updates a second at most; ``timeline_rate``: timeline
    redraws a second at most (rendered in ``render_executor``, off the kernel's loop). It observes the
    job itself and stops when the job ends, after a last redraw.
    """

    def __init__(
        self,
        job: Job,
        *,
        loop: asyncio.AbstractEventLoop | None,
        render_executor: concurrent.futures.Executor | None = None,
        ui_rate: float = 8.0,
        timeline_rate: float = DEFAULT_TIMELINE_RATE,
    ) -> None:
        if not 0 < timeline_rate <= 10:
            raise ValueError(f"timeline_rate must be between 0 and 10 redraws a second (got {timeline_rate})")
        self.job = job
        self._loop = loop
        self._executor = render_executor
        self._rendering = False
        self.finished = False
        self.timeline_renders = 0
        self.plot = TimelinePlot()
        self.badges = w.HTML()
        self.badges.add_class("nbagents-voice-badges")
        self.conversation = w.HTML(layout=w.Layout(max_height="260px", overflow="auto"))
        self.conversation.add_class("nbagents-voice-conversation")
        self.latency = w.HTML()
        self.latency.add_class("nbagents-voice-latency")
        self.timeline = w.Image(format="png", layout=w.Layout(width=f"{WIDTH_PX}px", max_width="100%"))
        self.timeline.add_class("nbagents-voice-timeline")
        self.box = w.VBox(
            [
                w.HTML("<b>Voice session</b>"),
                self.badges,
                self.conversation,
                w.HTML("<span style='font-size:12px'>Latency per reply (ms)</span>"),
                self.latency,
                self.timeline,
            ],
            layout=w.Layout(margin="4px 0", display="none"),
        )
        self.box.add_class("nbagents-voice")
        self._ui = Coalescer(loop, 1.0 / ui_rate, self._flush)
        self._plots = Coalescer(loop, 1.0 / timeline_rate, self._flush_timeline)
        self._clock: asyncio.TimerHandle | None = None
        self._timeline_interval = 1.0 / timeline_rate
        self._unsubscribe = job.subscribe(self._on_event)
        if job.sessions:
            self._flush({"all"})
            self._plots.mark("timeline")
        self._tasks: set[Any] = set()
        if job.done:
            self._finish()
        elif loop is not None:
            self._spawn(self._await_end())

    # -- observing ----------------------------------------------------------------------------------

    def _on_event(self, job: Job, event: ev.Event) -> None:
        if isinstance(event, _VOICE_EVENTS):
            self._ui.mark("all")
            self._plots.mark("timeline")
            if self._clock is None and self._loop is not None and not self.finished:
                self._tick()

    def _spawn(self, coro: Any) -> None:
        assert self._loop is not None
        try:
            on_loop = asyncio.get_running_loop() is self._loop
        except RuntimeError:
            on_loop = False
        task = self._loop.create_task(coro) if on_loop else asyncio.run_coroutine_threadsafe(coro, self._loop)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _await_end(self) -> None:
        await self.job.wait()
        png = None
        if self.job.sessions:
            assert self._loop is not None
            png = await self._loop.run_in_executor(self._executor, self.plot.render, sessions_snapshot(self.job), None)
        self._finish(png)

    def _tick(self) -> None:
        """While a session runs, its current state band grows: redraw the timeline now and then."""
        if self.finished or self._loop is None:
            self._clock = None
            return
        sessions = self.job.sessions
        if sessions and all(s.closed is not None for s in sessions.values()):
            self._clock = None
            return
        self._plots.mark("timeline")
        self._clock = self._loop.call_later(self._timeline_interval, self._tick)

    def _flush(self, _sections: set[str]) -> None:
        sessions = sessions_snapshot(self.job)
        if not sessions:
            return
        if self.box.layout.display == "none":
            self.box.layout.display = None
        origin = min(s.started_at for s in sessions)
        _set(self.badges, badges_html(sessions, final=self.finished))
        _set(self.conversation, conversation_html(sessions, origin, final=self.finished))
        _set(self.latency, latency_html([row for s in sessions for row in s.latency()]))

    def _flush_timeline(self, _sections: set[str]) -> None:
        if self._rendering:
            self._plots.mark("timeline")  # try again next interval
            return
        sessions = sessions_snapshot(self.job)
        if not sessions:
            return
        now = None if self.job.done else time.time()
        if self._loop is None or self._executor is None:
            self._show_timeline(self.plot.render(sessions, now))
            return
        self._rendering = True
        future = self._loop.run_in_executor(self._executor, self.plot.render, sessions, now)
        future.add_done_callback(self._rendered)

    def _rendered(self, future: asyncio.Future[bytes | None]) -> None:
        self._rendering = False
        if future.cancelled():
            return
        if future.exception() is not None:
            logger.error("rendering the voice timeline failed", exc_info=future.exception())
            return
        self._show_timeline(future.result())

    def _show_timeline(self, png: bytes | None) -> None:
        if png is not None and self.timeline.value != png:
            self.timeline.value = png
            self.timeline_renders += 1

    def _finish(self, png: bytes | None = None) -> None:
        """The job ended: stop observing, show the final badges, conversation, table and timeline."""
        if self.finished:
            return
        self.finished = True
        self._unsubscribe()
        if self._clock is not None:
            self._clock.cancel()
            self._clock = None
        self._ui.flush_now()
        self._flush({"all"})
        if png is None and self.job.sessions:
            png = self.plot.render(sessions_snapshot(self.job), None)
        self._show_timeline(png)


def _set(widget: w.HTML, value: str) -> None:
    if widget.value != value:
        widget.value = value


def _e(text: Any) -> str:
    return html.escape(str(text))


def _clip(text: str, limit: int = _CLIP) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _ms(seconds: float | None) -> str:
    return "–" if seconds is None else f"{seconds * 1000:.0f}"


def _offset(t: float, origin: float) -> str:
    return f"{t - origin:6.1f} s"


# -- the live widgets' HTML ---------------------------------------------------------------------------

_BADGE = ("<span class='nbagents-badge nbagents-{who}-state' data-state='{state}' style='display:inline-block;"
          "padding:1px 8px;border-radius:9px;background:{bg};color:{fg};font-size:12px;font-weight:bold'>{state}</span>")


def _badge(who: str, state: str) -> str:
    colors = AGENT_STATE_COLORS if who == "agent" else {**USER_STATE_COLORS, "listening": "#ececec"}
    bg = colors.get(state, "#bbbbbb")
    fg = "#fff" if state in ("speaking",) else "#222"
    return _BADGE.format(who=who, state=_e(state), bg=bg, fg=fg)


def badges_html(sessions: list[VoiceSession], *, final: bool = False) -> str:
    lines = []
    for s in sessions:
        title = f"session {s.session}" + (" (primary)" if s.primary and len(sessions) > 1 else "")
        closed = f" · <i>closed: {_e(s.closed.reason)}</i>" if s.closed is not None else ""
        interim = (
            f" · <i class='nbagents-voice-interim'>hearing “{_e(_clip(s.interim, 120))}”</i>" if s.interim and not final else ""
        )
        states = (  # a closed session has no live state: one grey badge says so
            f" · {_badge('agent', 'closed')}" if s.closed is not None
            else f" · agent {_badge('agent', s.agent_state)} · user {_badge('user', s.user_state)}"
        )
        lines.append(
            f"<div style='margin:2px 0'>{_e(title)} · <code>{_e(s.agent or 'Agent')}</code>{states}{interim}{closed}</div>"
        )
    return "".join(lines)


_TABLE = "<table style='border-collapse:collapse;font-size:12px' class='{cls}'>{rows}</table>"
_CELL = "<td style='border:1px solid #ddd;padding:1px 6px;vertical-align:top'>{}</td>"
_HEAD = "<th style='border:1px solid #ddd;padding:1px 6px;text-align:left;background:#f4f4f4'>{}</th>"


def _table(cls: str, header: tuple[str, ...], rows: list[tuple[str, ...]], row_classes: list[str]) -> str:
    head = "<tr>" + "".join(_HEAD.format(h) for h in header) + "</tr>"
    body = "".join(
        f"<tr class='{row_classes[i]}'>" + "".join(_CELL.format(c) for c in row) + "</tr>" for i, row in enumerate(rows)
    )
    return _TABLE.format(cls=cls, rows=head + body)


def conversation_entries(sessions: list[VoiceSession]) -> list[dict[str, Any]]:
    """The conversation of every session in time order: turns and tool calls as plain dicts.

    ``{"kind": "turn", "session", "time", "role", "text", "interrupted"}`` or
    ``{"kind": "tool", "session", "time", "name", "arguments", "output", "is_error"}``.
    """
    entries: list[dict[str, Any]] = []
    for s in sessions:
        for turn in s.turns():
            if turn.role in ("user", "assistant") and turn.text:
                entries.append({"kind": "turn", "session": s.session, "time": turn.time, "role": turn.role,
                                "text": turn.text, "interrupted": turn.interrupted})
        for batch in s.tool_batches:
            for call in batch.calls:
                entries.append({"kind": "tool", "session": s.session, "time": batch.time, "name": call.name,
                                "arguments": call.arguments, "output": call.output, "is_error": call.is_error})
    entries.sort(key=lambda e: e["time"])
    return entries


def _arguments(text: str) -> str:
    """A tool call's JSON arguments as ``key=value, ...`` (the raw text if it is not a JSON object)."""
    try:
        parsed = json.loads(text) if text else {}
    except ValueError:
        return text
    if not isinstance(parsed, dict):
        return text
    return ", ".join(f"{k}={json.dumps(v)}" for k, v in parsed.items())


def conversation_html(sessions: list[VoiceSession], origin: float, *, final: bool = False) -> str:
    entries = conversation_entries(sessions)
    several = len(sessions) > 1
    rows: list[tuple[str, ...]] = []
    classes: list[str] = []
    for e in entries[-SHOWN_TURNS:]:
        who_suffix = f" {e['session']}" if several else ""
        if e["kind"] == "turn":
            mark = " <b style='color:#d62728' class='nbagents-interrupted'>(interrupted)</b>" if e["interrupted"] else ""
            rows.append((_offset(e["time"], origin), f"<b>{_e(e['role'])}{who_suffix}</b>", _e(_clip(e["text"])) + mark))
            classes.append(f"nbagents-turn nbagents-turn-{e['role']}" + (" nbagents-turn-interrupted" if e["interrupted"] else ""))
        else:
            status = " <b style='color:#d62728'>(raised)</b>" if e["is_error"] else ""
            rows.append((
                _offset(e["time"], origin),
                f"<span style='color:#d62728'>tool{who_suffix}</span>",
                f"<code>{_e(e['name'])}({_e(_clip(_arguments(e['arguments']), 200))})</code> → "
                f"<code class='nbagents-tool-output'>{_e(_clip(e['output'], 200))}</code>{status}",
            ))
            classes.append("nbagents-tool-call")
    if not final:
        for s in sessions:
            if s.interim:
                rows.append(("", f"<b>user{' ' + str(s.session) if several else ''}</b>",
                             f"<i style='color:#888'>{_e(_clip(s.interim))} …</i>"))
                classes.append("nbagents-turn nbagents-turn-interim")
    if not rows:
        return "<i>nothing said yet</i>"
    return _table("nbagents-voice-conversation-table", ("time", "who", "said"), rows, classes)


LATENCY_COLUMNS = (
    ("end of utterance", "end_of_turn_delay"),
    ("STT", "transcription_delay"),
    ("LLM TTFT", "llm_ttft"),
    ("TTS TTFB", "tts_ttfb"),
    ("total", "e2e_latency"),
)


def latency_html(rows: list[TurnLatency]) -> str:
    if not rows:
        return "<i>no reply yet</i>"
    body = [
        (_e(_clip(r.text, 60)) + (" <b style='color:#d62728'>(interrupted)</b>" if r.interrupted else ""),
         *(_ms(getattr(r, field)) for _, field in LATENCY_COLUMNS))
        for r in rows
    ]
    return _table("nbagents-voice-latency-table", ("reply", *(name for name, _ in LATENCY_COLUMNS)), body,
                  ["nbagents-latency-row"] * len(body))


# -- the final state's text forms -----------------------------------------------------------------------


def voice_json(job: Job) -> dict[str, Any] | None:
    """The voice part of the final state (JSON): the conversation in order and the latency rows; None
    when the job ran no session. Times are epoch seconds, latencies seconds."""
    sessions = sessions_snapshot(job)
    if not sessions:
        return None
    return {
        "sessions": [
            {"session": s.session, "agent": s.agent, "primary": s.primary, "started_at": s.started_at,
             "closed": s.closed.reason if s.closed is not None else None}
            for s in sessions
        ],
        "origin": min(s.started_at for s in sessions),
        "conversation": conversation_entries(sessions),
        "latency": [
            {"session": r.session, "reply": r.text, "interrupted": r.interrupted, "answered": r.user_text,
             **{field: r.__getattribute__(field) for _, field in LATENCY_COLUMNS}}
            for s in sessions for r in s.latency()
        ],
    }


def _md(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def voice_markdown(voice: dict[str, Any]) -> str:
    """The transcript (with tool calls) and the latency table of :func:`voice_json`, as Markdown."""
    origin = voice["origin"]
    several = len(voice["sessions"]) > 1
    lines = ["**Conversation**", "", "| time | who | said |", "|---:|---|---|"]
    for e in voice["conversation"]:
        who_suffix = f" {e['session']}" if several else ""
        if e["kind"] == "turn":
            said = _md(_clip(e["text"])) + (" *(interrupted)*" if e["interrupted"] else "")
            lines.append(f"| {e['time'] - origin:.1f} s | **{e['role']}{who_suffix}** | {said} |")
        else:
            result = _md(_clip(e["output"], 200)) + (" *(raised)*" if e["is_error"] else "")
            call = _md(_clip(_arguments(e["arguments"]), 200))
            lines.append(f"| {e['time'] - origin:.1f} s | tool{who_suffix} | `{e['name']}({call})` → {result} |")
    if not voice["conversation"]:
        lines.append("| | | *nothing was said* |")
    if voice["latency"]:
        lines += ["", "**Latency per reply** (ms; total = end of the user's speech → the agent's first audio)", "",
                  "| reply | " + " | ".join(name for name, _ in LATENCY_COLUMNS) + " |",
                  "|---|" + "---:|" * len(LATENCY_COLUMNS)]
        for row in voice["latency"]:
            reply = _md(_clip(row["reply"], 60)) + (" *(interrupted)*" if row["interrupted"] else "")
            lines.append(f"| {reply} | " + " | ".join(_ms(row[field]) for _, field in LATENCY_COLUMNS) + " |")
    return "\n".join(lines)


def voice_text(voice: dict[str, Any]) -> str:
    """The transcript and latencies of :func:`voice_json` as plain text (for text frontends)."""
    origin = voice["origin"]
    lines = ["  conversation:"]
    for e in voice["conversation"]:
        if e["kind"] == "turn":
            mark = " (interrupted)" if e["interrupted"] else ""
            lines.append(f"    {e['time'] - origin:6.1f} s {e['role']:>9}: {_clip(e['text'], 200)}{mark}")
        else:
            lines.append(f"    {e['time'] - origin:6.1f} s      tool: {e['name']}({_clip(_arguments(e['arguments']), 120)})"
                         f" -> {_clip(e['output'], 120)}")
    if voice["latency"]:
        lines.append("  latency per reply (ms): " + ", ".join(name for name, _ in LATENCY_COLUMNS))
        for row in voice["latency"]:
            lines.append(f"    {_clip(row['reply'], 40)!r}: " + " / ".join(_ms(row[f]) for _, f in LATENCY_COLUMNS))
    return "\n".join(lines)
