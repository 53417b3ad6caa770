"""The job inspector: ipywidgets views of one :class:`~nbagents.runtime.job.Job`, updated live.

The inspector observes the model through ``Job.subscribe``. Events only mark sections dirty; a
:class:`~nbagents.ui._throttle.Coalescer` redraws them at most ``ui_rate`` times a second, and each
widget is only touched when its rendered value changed, so widget traffic stays small. Audio plots are
rendered off the loop (a worker thread) at most ``plot_rate`` times a second.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import dataclasses
import html
import logging
import time
from typing import TYPE_CHECKING, Any, Callable

import ipywidgets as w

from nbagents.runtime import events as ev
from nbagents.ui import _actions, _final
from nbagents.ui._plot import WIDTH_PX, TrackPlot
from nbagents.ui._throttle import Coalescer
from nbagents.ui._voice import VoiceView

if TYPE_CHECKING:
    from nbagents.runtime.job import Job

__all__ = ["Inspector", "DEFAULT_PLOT_RATE", "DEFAULT_UI_RATE", "register_section"]

DEFAULT_PLOT_RATE = 15.0
DEFAULT_UI_RATE = 8.0
MAX_PLOTTED_TRACKS = _final.MAX_PLOTTED_TRACKS
SHOWN_DATA_MESSAGES = 20
THUMBNAIL_PX = 160
SHOWN_LOG_RECORDS = 200
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_STATE_COLORS = {
    "starting": "#888",
    "running": "#2ca02c",
    "shutting_down": "#ff7f0e",
    "succeeded": "#1f77b4",
    "failed": "#d62728",
    "killed": "#d62728",
    "crashed": "#d62728",
}

logger = logging.getLogger("nbagents.ui")

SectionFactory = Callable[["Inspector"], "tuple[str, w.Widget] | None"]
_section_factories: list[SectionFactory] = []


def register_section(factory: SectionFactory) -> None:
    """Add a section to every inspector built from now on, placed before the log.

    ``factory(inspector)`` returns ``(title, widget)`` or None (nothing for this job). It may
    ``inspector.job.subscribe(...)`` to stay live; sections are built in registration order.
    """
    if factory not in _section_factories:
        _section_factories.append(factory)

_render_pool: concurrent.futures.ThreadPoolExecutor | None = None


def _renderer() -> concurrent.futures.ThreadPoolExecutor:
    """One thread renders every plot: Agg work leaves the kernel loop free for cells and events."""
    global _render_pool
    if _render_pool is None:
        _render_pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="nbagents-plot")
    return _render_pool


class _TrackView:
    """Meters, statistics line and live plot of one audio track."""

    def __init__(self, job: Job, track_sid: str, identity: str, plot_rate: float, plotted: bool) -> None:
        self.sid = track_sid
        self.stats = w.HTML()
        self.rms = w.FloatProgress(min=0.0, max=1.0, description="RMS", layout=w.Layout(width="240px"))
        self.peak = w.FloatProgress(min=0.0, max=1.0, description="peak", layout=w.Layout(width="240px"))
        self.rms.add_class("nbagents-rms")
        self.peak.add_class("nbagents-peak")
        self.level = w.HTML()
        self.level.add_class("nbagents-level")
        self.image = w.Image(format="png", layout=w.Layout(width=f"{WIDTH_PX}px", max_width="100%"))
        self.image.add_class("nbagents-plot")
        self.plot: TrackPlot | None = TrackPlot(_final.track_title(job, track_sid, identity), plot_rate) if plotted else None
        children: list[w.Widget] = [self.stats, w.HBox([self.rms, self.peak, self.level])]
        if self.plot is not None:
            children.append(self.image)
        self.box = w.VBox(children, layout=w.Layout(border="1px solid #ddd", padding="2px 6px", margin="2px 0"))
        self.box.add_class("nbagents-track")
        self.dirty_plot = False


class _VideoView:
    """Thumbnail and statistics line of one video track (the job's monitor sends both about once a second)."""

    def __init__(self) -> None:
        self.stats = w.HTML()
        self.image = w.Image(format="jpeg", layout=w.Layout(width=f"{THUMBNAIL_PX}px", max_width="100%"))
        self.image.add_class("nbagents-thumbnail")
        self.thumbnail = ""  # the base64 JPEG shown
        self.box = w.HBox([self.image, self.stats], layout=w.Layout(border="1px solid #ddd", padding="2px 6px",
                                                                    margin="2px 0", align_items="center"))
        self.box.add_class("nbagents-video-track")


class Inspector:
    """Live view of one job: header, participants, audio tracks with plots, video tracks, data, log, errors, controls.

    ``Inspector(job).widget`` is the ipywidgets tree; ``display(inspector)`` shows it together with the
    outputs that keep the final state and plot in the notebook.
    """

    _shown = 0  # inspectors displayed in this kernel (their outputs' display ids)

    def __init__(self, job: Job, *, plot_rate: float = DEFAULT_PLOT_RATE, ui_rate: float = DEFAULT_UI_RATE,
                 pinned: bool = False) -> None:
        if not 0 < plot_rate <= 30:
            raise ValueError(f"plot_rate must be between 0 and 30 updates a second (got {plot_rate}); 10–20 is plenty")
        if not 0 < ui_rate <= 30:
            raise ValueError(f"ui_rate must be between 0 and 30 updates a second (got {ui_rate})")
        self.job = job
        self.plot_rate = plot_rate
        try:
            self._loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = getattr(job, "_loop", None)
        self._tracks: dict[str, _TrackView] = {}
        self._videos: dict[str, _VideoView] = {}
        self._rendering = False
        self._sims: list[Any] = []
        self._tasks: set[asyncio.Future[Any]] = set()
        self.final_png: bytes | None = None
        self.finished = False
        self._pinned = pinned
        self._build()
        self._ui = Coalescer(self._loop, 1.0 / ui_rate, self._flush)
        self._plots = Coalescer(self._loop, 1.0 / plot_rate, self._flush_plots)
        self._unsubscribe = job.subscribe(self._on_event)
        self._flush({"header", "participants", "audio", "video", "data", "log", "errors"})
        self._clock: asyncio.TimerHandle | None = None
        if self._loop is not None and not job.done:
            self._tick()
            self._spawn(self._await_end())
        elif job.done:
            self._spawn_or_run_finish()

    # -- widgets ------------------------------------------------------------------------------------

    def _build(self) -> None:
        self.header = w.HTML()
        self.header.add_class("nbagents-header")
        self.participants = w.HTML()
        self.participants.add_class("nbagents-participants")
        self.tracks_box = w.VBox()
        self.tracks_box.add_class("nbagents-tracks")
        self.no_tracks = w.HTML("<i>no audio track subscribed yet</i>")
        self.videos_box = w.VBox()
        self.videos_box.add_class("nbagents-videos")
        self.no_videos = w.HTML("<i>no video track subscribed yet</i>")
        self.data = w.HTML()
        self.data.add_class("nbagents-data")
        self.log_level = w.Dropdown(options=LOG_LEVELS, value="INFO", description="level", layout=w.Layout(width="180px"))
        self.log_level.add_class("nbagents-log-level")
        self.log_level.observe(lambda _change: self._ui.mark("log"), names="value")
        self.log = w.HTML(layout=w.Layout(max_height="220px", overflow="auto"))
        self.log.add_class("nbagents-log")
        self.errors = w.HTML()
        self.errors.add_class("nbagents-errors")

        self.reason = w.Text(value="stopped from the inspector", description="reason", layout=w.Layout(width="320px"))
        self.stop_button = w.Button(description="Shut down", button_style="danger", icon="stop")
        self.stop_button.add_class("nbagents-stop")
        self.stop_button.on_click(lambda _b: self.shut_down(self.reason.value))
        self.delete_button = w.Button(description="Delete room", button_style="warning", icon="trash")
        self.delete_button.add_class("nbagents-delete-room")
        self.delete_button.on_click(lambda _b: self._run_action("delete room", _actions.delete_room(self.job)))
        self.payload = w.Text(placeholder="payload", description="data", layout=w.Layout(width="320px"))
        self.topic = w.Text(placeholder="topic (optional)", layout=w.Layout(width="160px"))
        self.send_button = w.Button(description="Send data", icon="paper-plane")
        self.send_button.add_class("nbagents-send-data")
        self.send_button.on_click(
            lambda _b: self._run_action("send data", _actions.send_data(self.job, self.payload.value, self.topic.value))
        )
        self.sim_identity = w.Text(value="sim-1", description="identity", layout=w.Layout(width="220px"))
        self.sim_freq = w.BoundedFloatText(value=440.0, min=20.0, max=8000.0, description="Hz", layout=w.Layout(width="150px"))
        self.sim_seconds = w.BoundedFloatText(value=3.0, min=0.1, max=600.0, description="seconds", layout=w.Layout(width="160px"))
        self.sim_button = w.Button(description="Add simulated participant", icon="user-plus", layout=w.Layout(width="220px"))
        self.sim_button.add_class("nbagents-add-sim")
        self.sim_button.on_click(lambda _b: self.add_simulated_participant())
        self.status = w.HTML()
        self.status.add_class("nbagents-status")
        from nbagents.ui._pinned import PinnedView

        self.pin = PinnedView(self.job, pinned=self._pinned)  # "Keep in view": a compact copy in the window's corner
        self.controls = w.VBox(
            [
                w.HBox([self.stop_button, self.reason, self.delete_button, self.pin]),
                w.HBox([self.send_button, self.payload, self.topic]),
                w.HBox([self.sim_button, self.sim_identity, self.sim_freq, self.sim_seconds]),
                self.status,
            ]
        )
        self.controls.add_class("nbagents-controls")

        # the job's AgentSessions: states, conversation, tool calls, latencies, timeline (hidden without one)
        self.voice = VoiceView(self.job, loop=self._loop, render_executor=_renderer())

        def section(title: str, *children: w.Widget) -> w.VBox:
            return w.VBox([w.HTML(f"<b>{title}</b>"), *children], layout=w.Layout(margin="4px 0"))

        extra = []
        for factory in _section_factories:
            try:
                made = factory(self)
            except Exception:  # a broken extension must not break the inspector
                logger.exception("inspector section %r failed", factory)
                continue
            if made is not None:
                extra.append(section(*made))
        self.widget = w.VBox(
            [
                self.header,
                self.controls,
                section("Participants", self.participants),
                section("Audio tracks", self.no_tracks, self.tracks_box),
                section("Video tracks", self.no_videos, self.videos_box),
                section("Data messages", self.data),
                self.voice.box,
                *extra,
                section("Log", self.log_level, self.log),
                self.errors,
            ],
            layout=w.Layout(border="1px solid #ccc", padding="6px"),
        )
        self.widget.add_class("nbagents-inspector")

    # -- displaying ---------------------------------------------------------------------------------

    def _ipython_display_(self) -> None:
        from IPython.display import display

        bundle = self.widget._repr_mimebundle_()
        widget_data = {k: v for k, v in bundle.items() if k != "text/plain"}
        state, plot, audio = _final.placeholder_bundles(self.job)
        if self.job.done and self.finished:
            state, plot, audio = _final.final_bundles(self.job, self.job.result(0), self.final_png)
            display({**widget_data, "text/plain": state["text/plain"]}, raw=True)
        else:  # what static viewers, text frontends and a notebook reopened without its kernel show
            Inspector._shown += 1
            display_id = f"nbagents-inspector-{self.job.id}-{Inspector._shown}"
            _final.register_inspector_output(self.job, display_id, widget_data)
            display({**widget_data, "text/plain": _final.inspector_text(self.job)}, raw=True, display_id=display_id)
        display(state, raw=True, display_id=_final.state_display_id(self.job))
        display(plot, raw=True, display_id=_final.plot_display_id(self.job))
        display(audio, raw=True, display_id=_final.audio_display_id(self.job))

    # -- observing the job --------------------------------------------------------------------------

    def _on_event(self, job: Job, event: ev.Event) -> None:
        if isinstance(event, ev.AudioStats):
            view = self._tracks.get(event.track_sid)
            if view is None:
                self._ui.mark("audio")
            elif view.plot is not None:
                view.plot.add(event.time, event.rms, event.peak, event.waveform)
                view.dirty_plot = True
                self._plots.mark("plots")
            self._ui.mark("meters")
        elif isinstance(event, ev.VideoStats):
            self._ui.mark("video")
        elif isinstance(event, ev.ParticipantChanged):
            self._ui.mark("participants")
        elif isinstance(event, ev.TrackChanged):
            self._ui.mark("participants", "audio")
        elif isinstance(event, ev.DataReceived):
            self._ui.mark("data")
        elif isinstance(event, ev.LogRecord):
            self._ui.mark("log")
        elif isinstance(event, ev.ErrorRaised):
            self._ui.mark("errors", "log")
        else:
            self._ui.mark("header")

    def _tick(self) -> None:
        """Refresh the elapsed time once a second while the job runs."""
        if self.finished or self._loop is None:
            return
        self._ui.mark("header")
        self._clock = self._loop.call_later(1.0, self._tick)

    def _flush(self, sections: set[str]) -> None:
        with self.job._lock:  # the reader thread mutates these collections under this lock
            snapshot = {
                "participants": list(self.job.participants.values()),
                "tracks": [(sid, t.participant_identity, t.frames, t.sample_rate, t.channels, t.samples_per_frame,
                            t.rms, t.peak, t.active) for sid, t in self.job.audio_tracks.items()],
                "videos": [dataclasses.replace(v) for v in self.job.video_tracks.values()] if "video" in sections else [],
                "data": list(self.job.data_messages)[-SHOWN_DATA_MESSAGES:] if "data" in sections else [],
                "logs": list(self.job.logs) if "log" in sections else [],
                "errors": list(self.job.errors) if "errors" in sections else [],
            }
        if "header" in sections:
            _set(self.header, self._header_html())
        if "participants" in sections:
            _set(self.participants, _participants_html(snapshot["participants"]))
        if "audio" in sections or "meters" in sections:
            self._update_tracks(snapshot["tracks"])
        if "video" in sections:
            self._update_videos(snapshot["videos"])
        if "data" in sections:
            _set(self.data, _data_html(snapshot["data"]))
        if "log" in sections:
            _set(self.log, _log_html(snapshot["logs"], self.log_level.value))
        if "errors" in sections:
            _set(self.errors, _errors_html(snapshot["errors"]))

    def _update_tracks(self, tracks: list[tuple[Any, ...]]) -> None:
        for sid, identity, frames, rate, channels, spf, rms, peak, active in tracks:
            view = self._tracks.get(sid)
            if view is None:
                plotted = sum(1 for v in self._tracks.values() if v.plot is not None) < MAX_PLOTTED_TRACKS
                view = self._tracks[sid] = _TrackView(self.job, sid, identity, self.plot_rate, plotted)
                self.tracks_box.children = [*self.tracks_box.children, view.box]
                self.no_tracks.layout.display = "none"
            status = "" if active else " · <i>ended</i>"
            _set(
                view.stats,
                f"<code>{_e(sid)}</code> from <b>{_e(identity)}</b>: <span class='nbagents-frames'>{frames}</span> frames · "
                f"{rate} Hz · {channels} ch · {spf} samples/frame{status}",
            )
            rms_r, peak_r = round(rms, 3), round(peak, 3)
            if view.rms.value != rms_r:
                view.rms.value = rms_r
            if view.peak.value != peak_r:
                view.peak.value = peak_r
            _set(view.level, f"<code>rms {rms_r:.3f} · peak {peak_r:.3f}</code>")

    def _update_videos(self, videos: list[Any]) -> None:
        for video in videos:
            view = self._videos.get(video.track_sid)
            if view is None:
                view = self._videos[video.track_sid] = _VideoView()
                self.videos_box.children = [*self.videos_box.children, view.box]
                self.no_videos.layout.display = "none"
            _set(view.stats, _final.video_line(video))
            if video.thumbnail_jpeg and video.thumbnail_jpeg != view.thumbnail:
                view.thumbnail = video.thumbnail_jpeg
                view.image.value = base64.b64decode(video.thumbnail_jpeg)

    def _flush_plots(self, _sections: set[str]) -> None:
        if self._rendering or self._loop is None:
            self._plots.mark("plots")  # try again next interval
            return
        dirty = [v for v in self._tracks.values() if v.dirty_plot and v.plot is not None]
        if not dirty:
            return
        for view in dirty:
            view.dirty_plot = False
        self._rendering = True
        future = self._loop.run_in_executor(_renderer(), _render_all, [(v, v.plot) for v in dirty])
        future.add_done_callback(self._plots_rendered)

    def _plots_rendered(self, future: asyncio.Future[list[tuple[_TrackView, bytes]]]) -> None:
        self._rendering = False
        if future.cancelled() or future.exception() is not None:
            if not future.cancelled():
                logger.error("rendering an audio plot failed", exc_info=future.exception())
            return
        for view, png in future.result():
            view.image.value = png

    # -- controls -----------------------------------------------------------------------------------

    def shut_down(self, reason: str = "stopped from the inspector") -> None:
        """What the Shut down button does: ask the job to stop (its hooks run); the view shows the outcome."""
        if self.job.done:
            self._say(f"job already ended ({self.job.state})")
            return
        self.job.request_stop(reason or "stopped from the inspector")
        self._say(f"shutting down: {_e(reason)}")

    def add_simulated_participant(self) -> None:
        """What the Add simulated participant button does: join the room and speak a tone."""

        async def run() -> str:
            participant = await _actions.add_simulated_participant(
                self.job, self.sim_identity.value, freq_hz=self.sim_freq.value, seconds=self.sim_seconds.value
            )
            self._sims.append(participant)
            return f"{participant.identity} spoke a {self.sim_freq.value:g} Hz tone for {self.sim_seconds.value:g} s"

        self._run_action("add simulated participant", run())

    def _run_action(self, what: str, coro: Any) -> None:
        if self._loop is None:
            coro.close()
            self._say(f"{what}: needs a running event loop (a notebook kernel)", error=True)
            return
        self._say(f"{what}…")

        async def guarded() -> None:
            try:
                outcome = await coro
            except Exception as exc:  # shown in the inspector: a button has nowhere else to report
                self._say(f"{what} failed: {_e(str(exc) or type(exc).__name__)}", error=True)
            else:
                self._say(_e(outcome) if isinstance(outcome, str) else f"{what}: done")

        self._spawn(guarded())

    def _say(self, text: str, *, error: bool = False) -> None:
        color = "#d62728" if error else "#555"
        _set(self.status, f"<span style='color:{color}'>{text}</span>")

    def _spawn(self, coro: Any) -> None:
        assert self._loop is not None
        task = asyncio.run_coroutine_threadsafe(coro, self._loop) if not _on_loop(self._loop) else self._loop.create_task(coro)
        self._tasks.add(task)  # type: ignore[arg-type]
        task.add_done_callback(self._tasks.discard)  # type: ignore[arg-type]

    def _spawn_or_run_finish(self) -> None:
        if self._loop is not None and self._loop.is_running():
            self._spawn(self._finish())
        else:
            self._finish_sync()

    # -- the end ------------------------------------------------------------------------------------

    async def _await_end(self) -> None:
        await self.job.wait()
        await self._finish()

    async def _finish(self) -> None:
        """The job ended: last redraw, final plot kept as a static image, final state written in place."""
        assert self._loop is not None
        png = await self._loop.run_in_executor(_renderer(), _final.final_plot_png, self.job)
        # the audio excerpts take a decode and an encode: off the kernel's loop too
        await self._loop.run_in_executor(_renderer(), _final.final_bundles, self.job, self.job.result(0), png)
        self._complete(png)
        for participant in self._sims:
            try:
                await participant.leave()
            except Exception:
                logger.debug("simulated participant %s did not leave cleanly", participant, exc_info=True)

    def _finish_sync(self) -> None:
        self._complete(_final.final_plot_png(self.job))

    def _complete(self, png: bytes | None) -> None:
        self.finished = True
        if self._clock is not None:
            self._clock.cancel()
        self._unsubscribe()
        self.final_png = png
        self._ui.flush_now()
        self._flush({"header", "participants", "audio", "video", "data", "log", "errors"})
        for view in self._tracks.values():
            if view.plot is not None:
                view.image.value = view.plot.render_png()
        for button in (self.stop_button, self.delete_button, self.send_button, self.sim_button):
            button.disabled = True
        result = self.job.result(0)
        self._say(f"job ended: <b>{_e(result.state)}</b>" + (f" — {_e(result.shutdown_reason)}" if result.shutdown_reason else ""))
        try:
            _final.update_final_outputs(self.job, result, png)
        except Exception:
            logger.exception("could not write the final state of job %s into the notebook", self.job.id)

    def _header_html(self) -> str:
        job = self.job
        color = _STATE_COLORS.get(job.state, "#888")
        extra = " · <b style='color:#d62728'>event loop unresponsive</b>" if job.unresponsive else ""
        return (
            f"<div><b>nbagents job</b> <code>{_e(job.id)}</code> · room <code>{_e(job.room)}</code> · "
            f"state <b class='nbagents-state' style='color:{color}'>{_e(job.state)}</b> · "
            f"engine <code>{_e(job.engine_url or '…')}</code> · elapsed <span class='nbagents-elapsed'>{job.elapsed:.0f} s</span>"
            f"{' · pid ' + str(job.pid) if job.pid else ''}{extra}</div>"
        )


def _render_all(items: list[tuple[_TrackView, TrackPlot]]) -> list[tuple[_TrackView, bytes]]:
    now = time.time()
    return [(view, plot.render_png(now)) for view, plot in items]


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


def _set(widget: w.HTML, value: str) -> None:
    """Assign only real changes: every assignment is a message to the browser."""
    if widget.value != value:
        widget.value = value


def _e(text: Any) -> str:
    return html.escape(str(text))


_TABLE = "<table style='border-collapse:collapse;font-size:12px' class='{cls}'>{rows}</table>"
_CELL = "<td style='border:1px solid #ddd;padding:1px 6px;vertical-align:top'>{}</td>"
_HEAD = "<th style='border:1px solid #ddd;padding:1px 6px;text-align:left;background:#f4f4f4'>{}</th>"


def _table(cls: str, header: tuple[str, ...], rows: list[tuple[str, ...]], row_classes: list[str] | None = None) -> str:
    head = "<tr>" + "".join(_HEAD.format(h) for h in header) + "</tr>"
    body = "".join(
        f"<tr class='{row_classes[i] if row_classes else ''}'>" + "".join(_CELL.format(c) for c in row) + "</tr>"
        for i, row in enumerate(rows)
    )
    return _TABLE.format(cls=cls, rows=head + body)


def _participants_html(participants: list[ev.ParticipantInfo]) -> str:
    if not participants:
        return "<i>nobody in the room yet</i>"
    rows, classes = [], []
    for p in sorted(participants, key=lambda p: (not p.local, p.identity)):
        attributes = "<br>".join(f"<code>{_e(k)}</code>=<b class='nbagents-attr'>{_e(v)}</b>" for k, v in sorted(p.attributes.items()))
        tracks = "<br>".join(
            f"{_e(t.kind)} <code>{_e(t.sid)}</code>{' (subscribed)' if t.subscribed else ''}{' muted' if t.muted else ''}"
            for t in p.tracks
        )
        who = f"<b class='nbagents-identity'>{_e(p.identity)}</b>" + (" (this agent)" if p.local else "")
        rows.append((who, _e(p.kind), attributes or "–", tracks or "–"))
        classes.append(f"nbagents-participant nbagents-participant-{_css_name(p.identity)}")
    return _table("nbagents-participants-table", ("identity", "kind", "attributes", "tracks"), rows, classes)


def _data_html(messages: list[Any]) -> str:
    if not messages:
        return "<i>no data messages yet</i>"
    rows = []
    for m in reversed(messages):
        preview = m.text if m.text is not None else f"0x{(m.payload_hex or '')[:64]}"
        if len(preview) > 120:
            preview = preview[:119] + "…"
        stamp = time.strftime("%H:%M:%S", time.localtime(m.time))
        sender = _e(m.sender or "(server)") + (" <i>(this agent, sent)</i>" if getattr(m, "local", False) else "")
        rows.append((stamp, sender, _e(m.topic or "–"), f"{m.size} B", f"<code>{_e(preview)}</code>"))
    return _table("nbagents-data-table", ("time", "sender", "topic", "size", "payload"), rows)


def _log_html(records: list[ev.LogRecord], level: str) -> str:
    threshold = logging.getLevelName(level)
    shown = [r for r in records if r.severity >= threshold][-SHOWN_LOG_RECORDS:]
    if not shown:
        return f"<i>no log records at {level} or above yet</i>"
    lines = []
    for r in shown:
        stamp = time.strftime("%H:%M:%S", time.localtime(r.time)) + f".{int(r.time % 1 * 1000):03d}"
        color = "#d62728" if r.severity >= logging.ERROR else ("#b8860b" if r.severity >= logging.WARNING else "#333")
        lines.append(f"<span style='color:{color}'>{stamp} {_e(r.level):<8} {_e(r.logger)}: {_e(r.message)}</span>")
    return "<pre style='margin:0;font-size:11px;line-height:1.25'>" + "\n".join(lines) + "</pre>"


def _errors_html(errors: list[ev.ErrorRaised]) -> str:
    if not errors:
        return ""
    parts = [f"<b style='color:#d62728'>Errors ({len(errors)})</b>"]
    for e in errors[-10:]:
        parts.append(
            f"<details open><summary><code>{_e(e.where)}</code>: {_e(e.message)}</summary>"
            f"<pre style='font-size:11px;background:#fff5f5;padding:4px'>{_e(e.traceback)}</pre></details>"
        )
    return "<div class='nbagents-error-list'>" + "".join(parts) + "</div>"


def _css_name(identity: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in identity)

