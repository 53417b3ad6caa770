"""The jobs overview: every job of this kernel with its state, refreshed while any of them runs."""

from __future__ import annotations

import asyncio
import html
import json
from typing import Any

import ipywidgets as w

__all__ = ["JobsOverview"]

REFRESH_SECONDS = 1.0
PERSISTED_CHARS = 160


class JobsOverview:
    """A table of ``nbagents.jobs()`` (id, room, state, elapsed, pid, persisted hooks) that keeps itself current."""

    def __init__(self) -> None:
        self.widget = w.HTML()
        self.widget.add_class("nbagents-overview")
        try:
            self._loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = None
        self.refresh()

    def refresh(self) -> None:
        from nbagents.runtime.job import jobs

        all_jobs = jobs()
        value = _overview_html(all_jobs)
        if self.widget.value != value:
            self.widget.value = value
        if self._loop is not None and any(not job.done for job in all_jobs):
            self._loop.call_later(REFRESH_SECONDS, self.refresh)

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)


def _overview_html(all_jobs: list[Any]) -> str:
    if not all_jobs:
        return "<i>no jobs yet: launch one with a %%agent cell or nbagents.launch(entrypoint, room=...)</i>"
    cell = "<td style='border:1px solid #ddd;padding:1px 6px'>{}</td>"
    rows = ["<tr>" + "".join(f"<th style='border:1px solid #ddd;padding:1px 6px;background:#f4f4f4'>{h}</th>"
                              for h in ("job", "room", "state", "elapsed", "pid", "participants", "persisted")) + "</tr>"]
    for job in all_jobs:
        values = (f"<code>{job.id}</code>", html.escape(job.room), f"<b>{job.state}</b>", f"{job.elapsed:.1f} s",
                  str(job.pid or "–"), str(len(job.participants)), _persisted_html(job))
        rows.append("<tr>" + "".join(cell.format(v) for v in values) + "</tr>")
    return "<table style='border-collapse:collapse;font-size:12px'>" + "".join(rows) + "</table>"


def _persisted_html(job: Any) -> str:
    """Each finished hook's name and the value it returned (clipped), or why there is none."""
    if not job.done:
        return "<i>when it ends</i>"
    persisted = job.result(0).persisted
    if not persisted:
        return "–"
    parts = []
    for name, value in persisted.items():
        text = json.dumps(value, default=repr)
        if len(text) > PERSISTED_CHARS:
            text = text[: PERSISTED_CHARS - 1] + "…"
        parts.append(f"<code>{html.escape(name)}</code>: <code class='nbagents-persisted'>{html.escape(text)}</code>")
    return "<br>".join(parts)
