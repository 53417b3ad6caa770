"""The notebook as an agent worker (``%agent serve``): real dispatch, each job launched like any other.

:func:`serve` registers with the engine's LiveKit server at ``/agent`` over the worker protocol that
livekit-agents speaks (register → availability → assignment with a job token) and runs on the notebook's
event loop without blocking it. Every assigned job goes through :func:`nbagents.launch` with the server's
job id and token, so it is an ordinary :class:`~nbagents.runtime.job.Job`: its own process, the kernel's
job registry, the inspector, ``%agent stop``. The server learns each job's outcome (``UpdateJobStatus``),
and a ``JobTermination`` (``DeleteDispatch``) stops the job with its shutdown hooks.

``await server.drain()`` (``%agent serve stop``) stops taking jobs, stops the running ones with their
hooks (or, with ``wait=True``, lets them end on their own) and unregisters.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Callable

import aiohttp
from livekit import api
from livekit.protocol import agent as proto
from livekit.protocol import models

from nbagents.runtime import ipc
from nbagents.runtime.engine_session import shared_engine
from nbagents.runtime.job import Job, JobResult
from nbagents.runtime.launch import launch

__all__ = ["AgentServer", "serve", "current_server"]

logger = logging.getLogger("nbagents")

REGISTER_TIMEOUT = 30.0
STATUS_INTERVAL = 2.5  # how often livekit-agents reports its load; servers expect to hear from workers
_FAILED_STATES = ("failed", "killed", "crashed")

_current: AgentServer | None = None


def current_server() -> AgentServer | None:
    """The worker ``%agent serve`` started in this kernel, if it is still serving."""
    return _current if _current is not None and not _current.stopped else None


class AgentServer:
    """A registered worker that launches a job for every assignment the server sends."""

    def __init__(self, entrypoint: Callable[[Any], Awaitable[None]], *, agent_name: str = "",
                 prewarm: Callable[[Any], Any] | None = None, shutdown_process_timeout: float = 60.0) -> None:
        self.entrypoint = entrypoint
        self.agent_name = agent_name
        self.prewarm = prewarm
        self.shutdown_process_timeout = shutdown_process_timeout
        self.jobs: list[Job] = []
        self.declined: list[proto.Job] = []  # offered while draining
        self._listeners: list[Callable[[Job | None], None]] = []
        self.worker_id: str | None = None
        self.url: str | None = None
        self.draining = False
        self.stopped = False
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._reader: asyncio.Task[None] | None = None

    # --- lifecycle

    async def start(self) -> AgentServer:
        """Connect and register; returns once the server has accepted the worker."""
        engine = shared_engine()
        engine.start()
        url, key, secret = await asyncio.get_running_loop().run_in_executor(None, engine.wait, 60.0)
        self.url = url
        token = api.AccessToken(key, secret).with_grants(api.VideoGrants(agent=True)).to_jwt()
        self._session = aiohttp.ClientSession()
        agent_url = _ws_url(url).rstrip("/") + "/agent"
        try:
            self._ws = await self._session.ws_connect(agent_url, headers={"Authorization": f"Bearer {token}"},
                                                      heartbeat=30)
            await self._send(proto.WorkerMessage(register=proto.RegisterWorkerRequest(
                type=proto.JobType.JT_ROOM, agent_name=self.agent_name, version=_version(),
                allowed_permissions=models.ParticipantPermission(
                    can_publish=True, can_subscribe=True, can_publish_data=True, can_update_metadata=True,
                    agent=True),
            )))
            first = await self._ws.receive(timeout=REGISTER_TIMEOUT)
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            await self._session.close()
            raise ConnectionError(f"could not register with the LiveKit server at {agent_url} as an agent worker: "
                                  f"{exc or type(exc).__name__}") from None
        reply = proto.ServerMessage.FromString(first.data) if first.type == aiohttp.WSMsgType.BINARY else None
        if reply is None or reply.WhichOneof("message") != "register":
            await self.close()
            raise ConnectionError(f"the server at {agent_url} did not accept the worker registration ({first.type.name})")
        self.worker_id = reply.register.worker_id
        self._reader = asyncio.ensure_future(self._read())
        self._spawn(self._report_status())
        logger.info("serving as agent worker %s (agent_name=%r) at %s", self.worker_id, self.agent_name, url)
        return self

    async def drain(self, *, wait: bool = False, reason: str = "agent worker stopped") -> list[JobResult]:
        """Take no new jobs; stop running ones with their hooks (or wait for them); unregister."""
        global _current
        self.draining = True
        try:
            await self._send_status()
        except (ConnectionError, RuntimeError):
            pass
        running = [job for job in self.jobs if not job.done]
        if not wait:
            for job in running:
                job.request_stop(reason)
        results = [await job.wait() for job in running]
        await asyncio.sleep(0)  # let the jobs' final status updates go out
        await self.close()
        if _current is self:
            _current = None
        self._notify(None)
        return results

    async def close(self) -> None:
        self.stopped = True
        for task in list(self._tasks):
            task.cancel()
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            try:
                await asyncio.wait_for(self._reader, 5)
            except (asyncio.TimeoutError, asyncio.CancelledError):
                pass
        if self._session is not None:
            await self._session.close()

    # --- the protocol

    async def _send(self, message: proto.WorkerMessage) -> None:
        assert self._ws is not None
        await self._ws.send_bytes(message.SerializeToString())

    async def _send_status(self) -> None:
        running = sum(1 for job in self.jobs if not job.done)
        status = proto.WorkerStatus.WS_FULL if self.draining else proto.WorkerStatus.WS_AVAILABLE
        await self._send(proto.WorkerMessage(update_worker=proto.UpdateWorkerStatus(
            status=status, load=0.0, job_count=running, draining=self.draining)))

    async def _report_status(self) -> None:
        while not self.stopped:
            await self._send_status()
            await asyncio.sleep(STATUS_INTERVAL)

    async def _read(self) -> None:
        assert self._ws is not None
        async for message in self._ws:
            if message.type != aiohttp.WSMsgType.BINARY:
                continue
            server_message = proto.ServerMessage.FromString(message.data)
            kind = server_message.WhichOneof("message")
            if kind == "availability":
                self._spawn(self._answer(server_message.availability.job))
            elif kind == "assignment":
                self._assigned(server_message.assignment)
            elif kind == "termination":
                self._terminate(server_message.termination.job_id)
        if not self.stopped:
            logger.warning("agent worker %s: the server closed the connection; no more jobs will be dispatched "
                           "to this notebook (run %%agent serve again)", self.worker_id)
            self.stopped = True

    async def _answer(self, job: proto.Job) -> None:
        available = not self.draining and not self.stopped
        response = proto.AvailabilityResponse(job_id=job.id, available=available)
        if available:
            response.participant_identity = f"agent-{job.id}"
            response.participant_attributes["lk.agent.name"] = self.agent_name
        else:
            self.declined.append(job)
        await self._send(proto.WorkerMessage(availability=response))

    def _assigned(self, assignment: proto.JobAssignment) -> None:
        job = assignment.job
        if self.draining or self.stopped:
            self._spawn(self._send_job_status(job.id, proto.JobStatus.JS_FAILED, "the worker is draining"))
            return
        handoff = ipc.Assignment(job_id=job.id, job=job.SerializeToString(), token=assignment.token,
                                 identity=job.state.participant_identity or f"agent-{job.id}",
                                 url=assignment.url)
        launched = launch(self.entrypoint, room=job.room.name, prewarm=self.prewarm,
                          shutdown_process_timeout=self.shutdown_process_timeout, assignment=handoff)
        self.jobs.append(launched)
        self._notify(launched)
        logger.info("agent worker %s: job %s dispatched for room %s", self.worker_id, job.id, job.room.name)
        self._spawn(self._send_job_status(job.id, proto.JobStatus.JS_RUNNING))
        self._spawn(self._report_outcome(launched))

    async def _report_outcome(self, job: Job) -> None:
        result = await job.wait()
        failed = result.state in _FAILED_STATES
        await self._send_job_status(job.id, proto.JobStatus.JS_FAILED if failed else proto.JobStatus.JS_SUCCESS,
                                    (result.error or result.state) if failed else "")

    async def _send_job_status(self, job_id: str, status: int, error: str = "") -> None:
        if self._ws is None or self._ws.closed:
            return
        await self._send(proto.WorkerMessage(update_job=proto.UpdateJobStatus(job_id=job_id, status=status,
                                                                                error=error)))

    def _terminate(self, job_id: str) -> None:
        for job in self.jobs:
            if job.id == job_id and not job.done:
                job.request_stop("terminated by the server (its dispatch was deleted)")

    def subscribe(self, listener: Callable[[Job | None], None]) -> None:
        """Call ``listener(job)`` for every job dispatched from now on, and ``listener(None)`` once drained."""
        self._listeners.append(listener)

    def _notify(self, job: Job | None) -> None:
        for listener in list(self._listeners):
            try:
                listener(job)
            except Exception:
                logger.exception("agent worker %s: a job listener failed", self.worker_id)

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None and not self.stopped:
            logger.warning("agent worker %s: %s", self.worker_id, task.exception())

    def __repr__(self) -> str:
        name = f"agent_name={self.agent_name!r}" if self.agent_name else "no agent_name (automatic dispatch)"
        state = "stopped" if self.stopped else "draining" if self.draining else "serving"
        running = sum(1 for job in self.jobs if not job.done)
        return (f"<nbagents agent worker {self.worker_id} {state}, {name}, at {self.url}: "
                f"{len(self.jobs)} job(s) dispatched, {running} running>")

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))


async def serve(entrypoint: Callable[[Any], Awaitable[None]], *, agent_name: str = "",
                prewarm: Callable[[Any], Any] | None = None, shutdown_process_timeout: float = 60.0) -> AgentServer:
    """Register this notebook as an agent worker; each dispatched job runs ``entrypoint`` in its own process.

    Without ``agent_name`` the server dispatches the worker automatically to new rooms; with one, only
    explicit dispatches (AgentDispatchService, or a token's room configuration) reach it. A kernel serves
    one worker at a time: serving again drains the previous one first.
    """
    global _current
    if _current is not None and not _current.stopped:
        await _current.drain()
    server = AgentServer(entrypoint, agent_name=agent_name, prewarm=prewarm,
                         shutdown_process_timeout=shutdown_process_timeout)
    await server.start()
    _current = server
    return server


def _version() -> str:
    try:
        from importlib.metadata import version
        return f"nbagents {version('nbagents')}"
    except Exception:
        return "nbagents"


def _ws_url(url: str) -> str:
    """LIVEKIT_URL may be given as http(s)://; the worker protocol is a websocket."""
    for http, ws in (("https://", "wss://"), ("http://", "ws://")):
        if url.startswith(http):
            return ws + url[len(http):]
    return url
