"""nbagents: build, run and inspect LiveKit voice agents from Jupyter notebooks.

Public names (imported lazily, so ``import nbagents`` stays cheap in a kernel):

- ``launch(entrypoint, room="demo", prewarm=None, shutdown_process_timeout=60.0, *, metadata="", ...)`` -> :class:`Job`
- ``Job``, ``JobResult``: the kernel-side model of a job and how it ended; ``jobs()`` lists them all
- ``JobContext``, ``JobProcess``, ``AutoSubscribe``: livekit-agents 1.8's own classes (jobs run under them)
- ``WorkerOptions``: the options a notebook's agent is exported with (``shutdown_process_timeout`` 60 s)
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "launch": "nbagents.runtime.launch",
    "jobs": "nbagents.runtime.job",
    "Job": "nbagents.runtime.job",
    "JobResult": "nbagents.runtime.job",
    "JobContext": "nbagents.runtime.context",
    "JobProcess": "nbagents.runtime.context",
    "AutoSubscribe": "nbagents.runtime.context",
    "WorkerOptions": "nbagents.runtime.context",
    "ShippingError": "nbagents.runtime.shipping",
}

__all__ = ["AutoSubscribe", "Job", "JobContext", "JobProcess", "JobResult", "ShippingError", "WorkerOptions", "jobs", "launch"]


_SUBMODULES = ("sim", "ui", "engines", "server", "export")  # ``nbagents.sim.join(...)`` after ``import nbagents``


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"nbagents.{name}")
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'nbagents' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY, *_SUBMODULES])


def _register_displays() -> None:
    from nbagents._displays import register_in_running_shell

    register_in_running_shell()


_register_displays()  # in a kernel: Job, JobResult and AgentServer outputs show nbagents.ui's views


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext nbagents``: registers the ``%agent`` / ``%%agent`` magics."""
    from nbagents._extension import load_ipython_extension as load

    load(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    """``%unload_ext nbagents``: removes the magics again."""
    from nbagents._extension import unload_ipython_extension as unload

    unload(ipython)
