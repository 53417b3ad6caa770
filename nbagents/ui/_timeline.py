"""The timeline of a job's voice sessions: who spoke when, what the agent was doing, where tools ran.

One row pair per session: the agent's states as coloured bands (listening, thinking, speaking, ...) and
the user's speech; function-tool calls as markers on the agent's row, interrupted replies as red marks.
The x axis is seconds since the first session started.

A full Agg draw of this figure (axes, ticks, labels, legend) costs ~100 ms of CPU here, too much once a
second. :class:`TimelinePlot` therefore draws the frame once per x range and caches it; an update only
restores that background and draws the bands and markers onto it (blitting, as the audio plots do). The
live x range grows in steps (30 s, 1 min, 2 min, ...), so the frame is redrawn only when a step is passed.
No pyplot: plain ``Figure`` objects, safe off the kernel's loop thread (one render at a time per plot).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from nbagents.runtime.conversation import VoiceSession
from nbagents.ui._plot import encode_png

__all__ = ["AGENT_STATE_COLORS", "USER_STATE_COLORS", "TimelinePlot", "render_timeline"]

AGENT_STATE_COLORS = {
    "initializing": "#d9d9d9",
    "idle": "#ececec",
    "listening": "#9ecae1",
    "thinking": "#fdae6b",
    "speaking": "#2ca02c",
}
USER_STATE_COLORS = {"speaking": "#6a51a3", "away": "#e0e0e0"}  # "listening" (silent) is left blank
_TOOL_COLOR = _INTERRUPTED_COLOR = "#d62728"
WIDTH_PX, ROW_PX, MARGIN_PX, DPI = 720, 30, 62, 80
#: x ranges of the live plot (seconds); past the last, whole hours
SPAN_STEPS = (30, 60, 120, 180, 300, 600, 900, 1200, 1800, 2700, 3600)
MAX_TOOL_LABELS = 40


def live_span(seconds: float) -> float:
    """The x range the live plot uses for a session ``seconds`` long: the next step up."""
    for step in SPAN_STEPS:
        if seconds <= step:
            return float(step)
    return float(3600 * (int(seconds // 3600) + 1))


class TimelinePlot:
    """A timeline figure that keeps its frame between renders; ``render(sessions, now)`` → PNG bytes."""

    def __init__(self) -> None:
        self._key: tuple[object, ...] | None = None
        self._lock = threading.Lock()
        self.frames_rendered = 0
        self.frames_redrawn = 0  # full draws of the frame (a new x range or new sessions)

    def render(self, sessions: Sequence[VoiceSession], now: float | None = None, *, exact: bool | None = None) -> bytes | None:
        """PNG of ``sessions`` (None when there is none). Bands of a state not ended yet run to ``now``
        (epoch seconds), or to the session's close or its last event when ``now`` is None. ``exact``
        (default: ``now is None``) fits the x range to the sessions instead of the next live step."""
        sessions = [s for s in sessions if s.started_at]
        if not sessions:
            return None
        origin = min(s.started_at for s in sessions)
        end = max(_session_end(s, now) for s in sessions)
        length = max(end - origin, 1.0)
        exact = now is None if exact is None else exact
        span = length * 1.01 if exact else live_span(length)
        labels = tuple(
            label for s in sessions for label in (
                (f"agent {s.session}", f"user {s.session}") if len(sessions) > 1 else ("agent", "user")
            )
        )
        with self._lock:
            key = (labels, round(span, 3))
            if key != self._key:
                self._build(labels, span)
                self._key = key
            return self._draw(sessions, origin, now)

    # -- the frame ----------------------------------------------------------------------------------

    def _build(self, labels: tuple[str, ...], span: float) -> None:
        rows = len(labels)
        height = rows * ROW_PX + MARGIN_PX
        fig = Figure(figsize=(WIDTH_PX / DPI, height / DPI), dpi=DPI)
        self._canvas = FigureCanvasAgg(fig)
        fig.subplots_adjust(left=0.08, right=0.99, top=1 - 22 / height, bottom=36 / height)
        ax = fig.add_subplot(1, 1, 1)
        ax.set_xlim(0, span)
        ax.set_ylim(-0.6, rows - 0.4)
        ax.set_yticks(range(rows))
        ax.set_yticklabels(list(reversed(labels)), fontsize=9)
        ax.set_xlabel("seconds since the session started", fontsize=9, labelpad=1)
        ax.tick_params(labelsize=8, length=2, pad=1)
        ax.grid(True, axis="x", linewidth=0.3, alpha=0.5)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
        legend = [Patch(facecolor=c, label=s) for s, c in AGENT_STATE_COLORS.items() if s not in ("initializing", "idle")]
        legend.append(Patch(facecolor=USER_STATE_COLORS["speaking"], label="user speaking"))
        legend.append(Patch(facecolor=_TOOL_COLOR, label="▼ tool call   × interrupted"))
        fig.legend(handles=legend, loc="upper right", ncol=len(legend), fontsize=8, frameon=False,
                   bbox_to_anchor=(0.99, 1.0), handlelength=1.2, columnspacing=1.0, borderaxespad=0.1)
        # the animated artists: drawn onto the cached frame at every render
        self._bands = PolyCollection([], linewidths=0, animated=True)
        ax.add_collection(self._bands)
        (self._tools,) = ax.plot([], [], linestyle="none", marker="v", markersize=6, color=_TOOL_COLOR,
                                 clip_on=False, animated=True)
        (self._interrupted,) = ax.plot([], [], linestyle="none", marker="x", markersize=5, color=_INTERRUPTED_COLOR,
                                       clip_on=False, animated=True)
        self._labels = [
            ax.text(0, 0, "", fontsize=8, color=_TOOL_COLOR, va="top", ha="left", animated=True, clip_on=False,
                    bbox={"facecolor": "white", "alpha": 0.85, "pad": 0.6, "linewidth": 0})  # legible over the bands
            for _ in range(MAX_TOOL_LABELS)
        ]
        self._ax, self._fig, self._rows = ax, fig, rows
        self._canvas.draw()
        self._background = self._canvas.copy_from_bbox(fig.bbox)
        self.frames_redrawn += 1

    def _draw(self, sessions: list[VoiceSession], origin: float, now: float | None) -> bytes:
        verts: list[np.ndarray] = []
        colors: list[str] = []
        tools_x: list[float] = []
        tools_y: list[float] = []
        tool_names: list[tuple[float, float, str]] = []
        cut_x: list[float] = []
        cut_y: list[float] = []

        def band(start: float, stop: float, y: float, half: float, color: str) -> None:
            x0, x1 = start - origin, stop - origin
            verts.append(np.array([[x0, y - half], [x1, y - half], [x1, y + half], [x0, y + half]]))
            colors.append(color)

        for index, session in enumerate(sessions):
            agent_y, user_y = self._rows - 1 - 2 * index, self._rows - 2 - 2 * index
            session_end = _session_end(session, now)
            for start, stop, state in _spans(session.agent_states, session.started_at, "initializing", session_end):
                band(start, stop, agent_y, 0.4, AGENT_STATE_COLORS.get(state, "#bbbbbb"))
            for start, stop, state in _spans(session.user_states, session.started_at, "listening", session_end):
                if state in USER_STATE_COLORS:
                    band(start, stop, user_y, 0.3, USER_STATE_COLORS[state])
            for batch in session.tool_batches:
                x = batch.time - origin
                tools_x.append(x)
                tools_y.append(agent_y + 0.42)
                tool_names.append((x, agent_y + 0.42, ", ".join(call.name for call in batch.calls)))
            for item in session.items:
                if item.role == "assistant" and item.interrupted:
                    cut_x.append((item.created_at or item.time) - origin)
                    cut_y.append(agent_y - 0.42)
        self._bands.set_verts(verts)
        self._bands.set_facecolor(colors)
        self._tools.set_data(tools_x, tools_y)
        self._interrupted.set_data(cut_x, cut_y)
        self._canvas.restore_region(self._background)
        self._ax.draw_artist(self._bands)
        self._ax.draw_artist(self._tools)
        self._ax.draw_artist(self._interrupted)
        shown = tool_names[-MAX_TOOL_LABELS:]
        for text, (x, y, name) in zip(self._labels, shown):
            text.set_position((x, y))
            text.set_text(" " + name)
            self._ax.draw_artist(text)
        self.frames_rendered += 1
        return encode_png(np.asarray(self._canvas.buffer_rgba()))


def render_timeline(sessions: Sequence[VoiceSession], now: float | None = None) -> bytes | None:
    """A one-off timeline PNG (a new figure; a live view keeps a :class:`TimelinePlot` instead)."""
    return TimelinePlot().render(sessions, now)


def _session_end(session: VoiceSession, now: float | None) -> float:
    if session.ended_at is not None:
        return session.ended_at if now is None else min(session.ended_at, now)
    if now is not None:
        return now
    times = [session.started_at]
    times += [t for t, _ in session.agent_states[-1:]] + [t for t, _ in session.user_states[-1:]]
    times += [i.time for i in session.items[-1:]] + [b.time for b in session.tool_batches[-1:]]
    return max(times)


def _spans(history: Sequence[tuple[float, str]], start: float, first: str, end: float) -> list[tuple[float, float, str]]:
    """``[(start, stop, state)]`` from a history of ``(time, new state)``, the first state from ``start``."""
    out: list[tuple[float, float, str]] = []
    current, since = first, start
    for t, state in history:
        if t > since:
            out.append((since, min(t, end), current))
        current, since = state, max(t, since)
    if end > since:
        out.append((since, end, current))
    return out
