"""The IPython extension: ``%load_ext nbagents`` registers the ``agent`` magics (imported only now)."""

from __future__ import annotations

from typing import Any


def load_ipython_extension(ipython: Any) -> None:
    from nbagents.magics import AgentMagics, await_agent_waits

    ipython.register_magics(AgentMagics)
    if await_agent_waits not in ipython.input_transformers_post:
        ipython.input_transformers_post.append(await_agent_waits)


def unload_ipython_extension(ipython: Any) -> None:
    from nbagents.magics import await_agent_waits

    while await_agent_waits in ipython.input_transformers_post:
        ipython.input_transformers_post.remove(await_agent_waits)
    for kind in ("line", "cell"):
        ipython.magics_manager.magics[kind].pop("agent", None)
