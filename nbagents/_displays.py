"""How nbagents' model objects show as cell outputs, registered with IPython's display formatter.

The kernel-side model (``nbagents.runtime``) knows nothing of views. A :class:`~nbagents.runtime.job.Job`
shown as a cell's output becomes its live inspector, a :class:`~nbagents.runtime.job.JobResult` its
final state, an :class:`~nbagents.runtime.serve.AgentServer` its worker view: IPython's
``ipython_display_formatter`` maps each type (by name, so nothing is imported early) to a function of
``nbagents.ui``, imported only when something is shown. :func:`register` runs on ``%load_ext nbagents``
and when ``nbagents`` is imported in a running IPython shell; elsewhere the objects show their ``repr``.
"""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["register", "register_in_running_shell"]


def _show_job(job: Any) -> None:
    from nbagents.ui import display_job

    display_job(job)


def _show_result(result: Any) -> None:
    from nbagents.ui import display_result

    display_result(result)


def _show_server(server: Any) -> None:
    from nbagents.ui._serving import display_server

    display_server(server)


_DISPLAYS = (
    ("nbagents.runtime.job", "Job", _show_job),
    ("nbagents.runtime.job", "JobResult", _show_result),
    ("nbagents.runtime.serve", "AgentServer", _show_server),
)


def register(ipython: Any) -> None:
    """Point ``ipython``'s display formatter at nbagents' views (idempotent)."""
    formatter = ipython.display_formatter.ipython_display_formatter
    for module, name, show in _DISPLAYS:
        formatter.for_type_by_name(module, name, show)


def register_in_running_shell() -> None:
    """:func:`register` with the running IPython shell, if this process has one (a kernel, not a job)."""
    ipython_module = sys.modules.get("IPython")
    get_ipython = getattr(ipython_module, "get_ipython", None)
    shell = get_ipython() if get_ipython is not None else None
    if shell is not None and getattr(shell, "display_formatter", None) is not None:
        register(shell)
