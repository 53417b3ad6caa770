"""The IPython extension: ``%load_ext nbagents`` registers the ``agent`` magics (imported only now)."""

from __future__ import annotations

from typing import Any


def load_ipython_extension(ipython: Any) -> None:
    from nbagents import _cell_output, _cli_guard, _displays
    from nbagents.magics import AgentMagics, await_agent_waits

    ipython.register_magics(AgentMagics)
    _cell_output.install(ipython)  # the engine line, printed when the engine is up, lands in a running cell
    _displays.register(ipython)  # a Job, JobResult or AgentServer shown as output: nbagents.ui's views
    _cli_guard.install()  # `cli.run_app(server)` of pasted livekit-agents examples: no CLI in a kernel
    _start_job_processes()
    if await_agent_waits not in ipython.input_transformers_post:
        ipython.input_transformers_post.append(await_agent_waits)


def _start_job_processes() -> None:
    """Start the preloaded job-process zygote now, in the background, so the first launch takes
    milliseconds instead of the second a fresh Python plus ``import livekit`` takes. The engine is
    left to the first launch: a notebook may still choose it (``NBAGENTS_ENGINE``, ``LIVEKIT_URL``)."""
    from nbagents.runtime.pool import shared_pool

    shared_pool().start()


def unload_ipython_extension(ipython: Any) -> None:
    from nbagents import _cell_output, _cli_guard
    from nbagents.magics import await_agent_waits

    _cell_output.uninstall(ipython)
    _cli_guard.uninstall()
    while await_agent_waits in ipython.input_transformers_post:
        ipython.input_transformers_post.remove(await_agent_waits)
    for kind in ("line", "cell"):
        ipython.magics_manager.magics[kind].pop("agent", None)
