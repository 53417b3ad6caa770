"""The view of ``%agent serve``: the worker's status and an inspector for each job dispatched to it.

Jobs arrive in the background, after the serving cell has finished; the view is a widget updated from the
kernel's loop, so each new job's inspector appears under the cell that started the worker.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING

import ipywidgets as w

if TYPE_CHECKING:
    from nbagents.runtime.job import Job
    from nbagents.runtime.serve import AgentServer

__all__ = ["display_server"]


def display_server(server: AgentServer) -> None:
    from IPython.display import display

    from nbagents.ui import inspect

    status = w.HTML(_status_html(server))
    box = w.VBox([status])
    box.add_class("nbagents-serve")

    def on_job(job: Job | None) -> None:
        status.value = _status_html(server)
        if job is not None:
            box.children = (*box.children, inspect(job).widget)

    server.subscribe(on_job)
    bundle = box._repr_mimebundle_()
    bundle["text/plain"] = repr(server)  # static viewers and headless runs
    display(bundle, raw=True)


def _status_html(server: AgentServer) -> str:
    return f"<code>{html.escape(repr(server))}</code>"
