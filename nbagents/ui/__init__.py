"""Notebook views of nbagents jobs: the live inspector, the jobs overview, the final state, joining from the browser.

- ``inspect(job)`` / displaying a ``Job``: the live :class:`Inspector` (ipywidgets)
- ``overview()``: every job of the kernel with its state
- ``show_final(job)``: the finished job's persisted state and last audio plot as cell output (``%agent wait``
  calls it; headless runs keep only foreground output)
- ``join(job)``: a widget in the cell's output with which a person talks to the job's agent (microphone on);
  ``join_page(job)`` the standalone page it runs (for a browser tab)

The runtime never imports this package; it is loaded when a job is first displayed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nbagents.ui._final import STATE_MIME, show_final, shown_in_this_cell
from nbagents.ui._join import join, join_page, join_token

if TYPE_CHECKING:
    from nbagents.runtime.job import Job, JobResult
    from nbagents.ui._inspector import Inspector
    from nbagents.ui._overview import JobsOverview

__all__ = ["STATE_MIME", "Inspector", "JobsOverview", "display_job", "display_result", "inspect", "join", "join_page", "join_token", "overview", "show_final"]


def inspect(job: Job, **options: Any) -> Inspector:
    """A live inspector of ``job`` (``plot_rate``: audio plot updates a second, default 15; ``pinned=True``:
    start with its compact view kept in the window's corner, as its "Keep in view" button does)."""
    from nbagents.ui._inspector import Inspector

    return Inspector(job, **options)


def overview() -> JobsOverview:
    """A table of every job of this kernel with its state, kept current while jobs run."""
    from nbagents.ui._overview import JobsOverview

    return JobsOverview()


def display_job(job: Job) -> None:
    """How a Job shows itself as cell output: the inspector in a kernel with widgets, text elsewhere."""
    from IPython.display import display

    if _has_widget_frontend():
        display(inspect(job))
    else:
        display({"text/plain": repr(job)}, raw=True)


def display_result(result: JobResult) -> None:
    """How a JobResult shows itself: the final state and plot of its job (unless already shown in this cell)."""
    from IPython.display import display

    from nbagents.runtime.job import jobs

    job = next((j for j in jobs() if j.done and j.result(0) is result), None)
    if job is None or shown_in_this_cell(job):
        display({"text/plain": repr(result)}, raw=True)
    else:
        show_final(job)


def __getattr__(name: str) -> Any:
    if name == "Inspector":
        from nbagents.ui._inspector import Inspector

        return Inspector
    if name == "JobsOverview":
        from nbagents.ui._overview import JobsOverview

        return JobsOverview
    raise AttributeError(f"module 'nbagents.ui' has no attribute {name!r}")


def _has_widget_frontend() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None
