"""Keep a job in view: a compact summary pinned to the window's corner while you run cells below.

Every inspector has a "Keep in view" button (this widget). Pinned, a small box with the job's state,
elapsed time, participants, each audio track's level and frames, the latest data message and a Shut
down button stays at the bottom right of the window however far the notebook scrolls (JupyterLab,
Notebook 7). It is refreshed at most :data:`SUMMARY_RATE` times a second, one small message each.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anywidget
import traitlets

from nbagents.runtime import events as ev
from nbagents.ui._throttle import Coalescer

if TYPE_CHECKING:
    from nbagents.runtime.job import Job

__all__ = ["PinnedView", "SUMMARY_RATE"]

SUMMARY_RATE = 4.0
PINNED_TRACKS = 4


class PinnedView(anywidget.AnyWidget):  # type: ignore[misc]
    """The "Keep in view" toggle and, once pinned, the compact floating summary of ``job``."""

    _esm = Path(__file__).parent / "static" / "pinned.js"
    summary = traitlets.Dict().tag(sync=True)
    pinned = traitlets.Bool(False).tag(sync=True)

    def __init__(self, job: Job, *, pinned: bool = False) -> None:
        super().__init__(pinned=pinned)
        self._job = job
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = getattr(job, "_loop", None)
        self._updates = Coalescer(loop, 1.0 / SUMMARY_RATE, lambda _sections: self.refresh())
        self._unsubscribe = job.subscribe(self._on_event)
        self.on_msg(self._on_frontend_message)
        self.refresh()
        self._clock = loop.call_later(1.0, self._tick) if loop is not None and not job.done else None

    def _tick(self) -> None:
        if self._job.done:
            return
        self._updates.mark("elapsed")
        loop = getattr(self._job, "_loop", None)
        if loop is not None and not loop.is_closed():
            self._clock = loop.call_later(1.0, self._tick)

    def _on_event(self, job: Job, event: ev.Event) -> None:
        self._updates.mark("summary")
        if job.done:
            self._updates.flush_now()

    def _on_frontend_message(self, _widget: Any, content: Any, _buffers: Any) -> None:
        if isinstance(content, dict) and content.get("type") == "stop" and not self._job.done:
            self._job.request_stop("stopped from the pinned view")

    def refresh(self) -> None:
        """Send the current summary (only when it changed)."""
        job = self._job
        with job._lock:
            participants = sorted(p.identity + (" (agent)" if p.local else "") for p in job.participants.values())
            tracks = [
                {"who": t.participant_identity, "frames": t.frames, "rms": round(t.rms, 3), "active": t.active}
                for t in list(job.audio_tracks.values())[:PINNED_TRACKS]
            ]
            last = job.data_messages[-1] if job.data_messages else None
        last_data = ""
        if last is not None:
            preview = last.text if last.text is not None else f"{last.size} bytes"
            last_data = f"{last.sender or '(server)'}: {preview[:80]}"
        summary = {
            "job_id": job.id,
            "room": job.room,
            "state": job.state,
            "elapsed": round(job.elapsed),
            "unresponsive": job.unresponsive,
            "participants": participants,
            "tracks": tracks,
            "last_data": last_data,
        }
        if summary != self.summary:
            self.summary = summary
        if job.done:
            self._unsubscribe()
