"""The job surface: livekit-agents' own ``JobContext``, ``JobProcess`` and ``AutoSubscribe``.

``from nbagents import JobContext, JobProcess, AutoSubscribe`` gives exactly ``livekit.agents``' classes:
a notebook job's entrypoint receives livekit-agents' own context (built in the job process by
:mod:`nbagents.runtime.worker`), so ``AgentSession``, ``get_job_context()`` and the rest of livekit-agents
behave as under a livekit-agents worker, and exported code needs no change.

:class:`WorkerOptions` stays nbagents' own: the options a notebook's agent is launched (and exported) with,
``shutdown_process_timeout`` defaulting to 60 s as the LiveKit Agents documentation says (livekit-agents
1.8's code says 10 s; the exporter always writes the value out).
"""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from livekit import rtc
from livekit.agents import AutoSubscribe, JobContext, JobProcess

if TYPE_CHECKING:
    from nbagents.runtime.worker import JobRuntime

__all__ = ["AutoSubscribe", "JobContext", "JobProcess", "WorkerOptions"]


def _default_prewarm(proc: JobProcess) -> Any:
    return None


@dataclasses.dataclass
class WorkerOptions:
    """livekit-agents' worker options (the subset nbagents uses; the exporter writes them all out).

    ``shutdown_process_timeout`` defaults to 60 s as the LiveKit Agents documentation says (the
    livekit-agents 1.8 code says 10 s); the exporter always writes the value explicitly.
    """

    entrypoint_fnc: Callable[[JobContext], Awaitable[None]]
    prewarm_fnc: Callable[[JobProcess], Any] = _default_prewarm
    shutdown_process_timeout: float = 60.0
    initialize_process_timeout: float = 10.0
    num_idle_processes: int = 1
    agent_name: str = ""
    ws_url: str | None = None
    api_key: str | None = None
    api_secret: str | None = None


class JobRoom(rtc.Room):
    """The job's ``rtc.Room``: a plain room whose ``connect`` first waits until nbagents has created it.

    A launched job creates its room (CreateRoom, with the job's ``departure_timeout``) while the
    entrypoint already runs, so the launch does not wait for the server's answer; ``connect`` (called
    by ``ctx.connect()``, ``ctx.wait_for_participant()`` or an ``AgentSession``) waits for it, then
    reports the connection to the job's monitor.
    """

    def __init__(self, runtime: JobRuntime) -> None:
        super().__init__()
        self._nbagents_runtime = runtime

    async def connect(self, url: str, token: str, *args: Any, **kwargs: Any) -> None:
        started = time.perf_counter()
        await self._nbagents_runtime.before_connect()
        await super().connect(url, token, *args, **kwargs)
        self._nbagents_runtime.on_room_connected(url, started)
