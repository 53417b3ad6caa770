"""Agent dispatch: the livekit-agents worker protocol at ``/agent`` and the jobs the server hands out.

A worker (livekit-agents' ``Worker``, or nbagents' ``%agent serve``) opens a websocket at ``/agent`` with a
token granting ``agent``, registers, and is then asked, job by job, whether it takes a room:
``AvailabilityRequest`` → ``AvailabilityResponse`` → ``JobAssignment{job, token}``. The token lets the job
join its room as an ``agent`` participant. Rules follow livekit-server:

- a new room gets one job for a worker registered without ``agent_name`` (automatic dispatch), unless the
  room's configuration (a participant token's ``roomConfig`` or CreateRoom's ``agents``) lists agents, in
  which case exactly those are dispatched;
- ``AgentDispatchService.CreateDispatch`` dispatches a named (or unnamed) agent explicitly; named agents
  are only ever dispatched explicitly;
- ``DeleteDispatch`` sends ``JobTermination`` for the dispatch's running jobs;
- dispatches live as long as their room.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import jwt
from aiohttp import WSMsgType, web
from google.protobuf.message import DecodeError
from livekit.protocol import agent as proto
from livekit.protocol import agent_dispatch as dispatch_proto
from livekit.protocol import models

from nbagents.server._ids import new_sid
from nbagents.server.auth import AuthError, PermissionDenied, token_from_request
from nbagents.server.participant import PROTOCOL_VERSION, SERVER_VERSION
from nbagents.server.rooms import Room, RoomRegistry
from nbagents.server.state import STATE

log = logging.getLogger(__name__)

#: livekit-agents waits 7.5 s for an assignment after saying it is available; answer well within that.
AVAILABILITY_TIMEOUT = 5.0
#: a job token's lifetime, as livekit-server issues them
JOB_TOKEN_TTL = 3600
AGENT_PROTOCOL = 1
_TERMINAL = (proto.JobStatus.JS_SUCCESS, proto.JobStatus.JS_FAILED)


@dataclass
class Dispatch:
    """One request that an agent serve a room (explicit, from a token, or the automatic one)."""

    info: dispatch_proto.AgentDispatch
    room_sid: str


@dataclass
class JobRecord:
    job: proto.Job
    worker: WorkerSession | None = None


class WorkerSession:
    """A registered worker's websocket: what it serves, its load, and its pending availability answers."""

    def __init__(self, ws: web.WebSocketResponse, register: proto.RegisterWorkerRequest, api_key: str) -> None:
        self.ws = ws
        self.id = new_sid("AW_")
        self.agent_name = register.agent_name
        self.namespace = register.namespace
        self.job_type = register.type
        self.permissions = register.allowed_permissions if register.HasField("allowed_permissions") else None
        self.api_key = api_key
        self.status = proto.WorkerStatus.WS_AVAILABLE
        self.load = 0.0
        self.draining = False
        self.jobs: set[str] = set()
        self.registered_at = time.monotonic()
        self._answers: dict[str, asyncio.Future[proto.AvailabilityResponse]] = {}
        self._send_lock = asyncio.Lock()

    @property
    def available(self) -> bool:
        return self.status == proto.WorkerStatus.WS_AVAILABLE and not self.draining and not self.ws.closed

    async def send(self, message: proto.ServerMessage) -> None:
        async with self._send_lock:
            if not self.ws.closed:
                await self.ws.send_bytes(message.SerializeToString())

    async def ask(self, job: proto.Job, timeout: float = AVAILABILITY_TIMEOUT) -> proto.AvailabilityResponse | None:
        """Offer ``job``; the worker's answer, or None if it did not answer in time or went away."""
        answer: asyncio.Future[proto.AvailabilityResponse] = asyncio.get_running_loop().create_future()
        self._answers[job.id] = answer
        try:
            await self.send(proto.ServerMessage(availability=proto.AvailabilityRequest(job=job)))
            return await asyncio.wait_for(answer, timeout)
        except (asyncio.TimeoutError, ConnectionError):
            return None
        finally:
            self._answers.pop(job.id, None)

    def answered(self, response: proto.AvailabilityResponse) -> None:
        future = self._answers.get(response.job_id)
        if future is not None and not future.done():
            future.set_result(response)
        else:
            log.info("worker %s answered availability for unknown job %s", self.id, response.job_id)

    def gone(self) -> None:
        """The worker disconnected: its pending offers count as declined, so they go to another worker."""
        for job_id, future in self._answers.items():
            if not future.done():
                future.set_result(proto.AvailabilityResponse(job_id=job_id, available=False))


class AgentDispatcher:
    """Registered workers, the dispatches of each room, and the jobs handed out for them."""

    def __init__(self, rooms: RoomRegistry, api_keys: Mapping[str, str]) -> None:
        self.rooms = rooms
        self._secrets = dict(api_keys)
        self.workers: dict[str, WorkerSession] = {}
        self._dispatches: dict[str, dict[str, Dispatch]] = {}  # room name -> dispatch id -> dispatch
        self.jobs: dict[str, JobRecord] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._next_worker = 0

    # --- workers

    def add_worker(self, worker: WorkerSession) -> None:
        self.workers[worker.id] = worker
        log.info("worker %s registered (agent_name=%r, namespace=%r)", worker.id, worker.agent_name,
                 worker.namespace)

    def remove_worker(self, worker: WorkerSession) -> None:
        self.workers.pop(worker.id, None)
        worker.gone()
        for job_id in list(worker.jobs):
            record = self.jobs.get(job_id)
            if record is not None and record.job.state.status not in _TERMINAL:
                self._set_status(record, proto.JobStatus.JS_FAILED, "worker disconnected")
        log.info("worker %s left", worker.id)

    def update_worker(self, worker: WorkerSession, update: proto.UpdateWorkerStatus) -> None:
        if update.HasField("status"):
            worker.status = update.status
        worker.load = update.load
        worker.draining = update.draining

    def update_job(self, worker: WorkerSession, update: proto.UpdateJobStatus) -> None:
        record = self.jobs.get(update.job_id)
        if record is None:
            log.info("worker %s reported status of unknown job %s", worker.id, update.job_id)
            return
        self._set_status(record, update.status, update.error)

    def _set_status(self, record: JobRecord, status: int, error: str = "") -> None:
        state = record.job.state
        now = time.time_ns()
        state.status = status
        state.error = error
        state.updated_at = now
        if status in _TERMINAL:
            state.ended_at = now
            if record.worker is not None:
                record.worker.jobs.discard(record.job.id)

    # --- dispatches

    def _room_dispatches(self, room: Room) -> dict[str, Dispatch]:
        """The live dispatches of ``room``; those of an earlier room of the same name are forgotten."""
        dispatches = self._dispatches.setdefault(room.name, {})
        for dispatch_id in [d for d, v in dispatches.items() if v.room_sid != room.sid]:
            for job in dispatches.pop(dispatch_id).info.state.jobs:
                self.jobs.pop(job.id, None)
        return dispatches

    def dispatches(self, room_name: str) -> list[dispatch_proto.AgentDispatch]:
        room = self.rooms.get(room_name)
        if room is None:
            self._dispatches.pop(room_name, None)
            return []
        return [d.info for d in self._room_dispatches(room).values()]

    def room_created(self, room: Room, agents: Iterable[dispatch_proto.RoomAgentDispatch] = ()) -> None:
        """Dispatch the room's configured agents, or the automatic (unnamed) one if it lists none."""
        agents = list(agents) or [dispatch_proto.RoomAgentDispatch()]
        for agent in agents:
            self.create(room, agent.agent_name, agent.metadata, dict(agent.attributes))

    def create(self, room: Room, agent_name: str, metadata: str = "",
               attributes: Mapping[str, str] | None = None) -> dispatch_proto.AgentDispatch:
        info = dispatch_proto.AgentDispatch(
            id=new_sid("AD_"), agent_name=agent_name, room=room.name, metadata=metadata,
            state=dispatch_proto.AgentDispatchState(created_at=time.time_ns()),
        )
        info.attributes.update(attributes or {})
        self._room_dispatches(room)[info.id] = Dispatch(info, room.sid)
        self._spawn(self._launch(room, info))
        return info

    async def delete(self, room_name: str, dispatch_id: str) -> dispatch_proto.AgentDispatch | None:
        """Forget a dispatch and terminate its running jobs; None if the room has no such dispatch."""
        room = self.rooms.get(room_name)
        if room is None:
            return None
        dispatch = self._room_dispatches(room).pop(dispatch_id, None)
        if dispatch is None:
            return None
        dispatch.info.state.deleted_at = time.time_ns()
        for job in dispatch.info.state.jobs:
            record = self.jobs.get(job.id)
            if record is None or record.worker is None or job.state.status in _TERMINAL:
                continue
            log.info("terminating job %s of deleted dispatch %s", job.id, dispatch_id)
            try:
                await record.worker.send(proto.ServerMessage(termination=proto.JobTermination(job_id=job.id)))
            except ConnectionError:
                pass
        return dispatch.info

    def _candidates(self, agent_name: str) -> list[WorkerSession]:
        """Workers that may take a room job for ``agent_name``, least loaded first (round robin on ties)."""
        matching = [w for w in self.workers.values()
                    if w.agent_name == agent_name and w.job_type == proto.JobType.JT_ROOM and w.available]
        self._next_worker += 1
        rotated = matching[self._next_worker % len(matching):] + matching[:self._next_worker % len(matching)] \
            if matching else []
        return sorted(rotated, key=lambda w: w.load)

    async def _launch(self, room: Room, dispatch: dispatch_proto.AgentDispatch) -> None:
        """Offer one job for ``dispatch`` to matching workers in turn until one takes it."""
        candidates = self._candidates(dispatch.agent_name)
        if not candidates:
            named = f"agent_name {dispatch.agent_name!r}" if dispatch.agent_name else "no agent_name"
            log.info("no available worker registered with %s for room %s; dispatch %s has no job",
                     named, room.name, dispatch.id)
            return
        for worker in candidates:
            if room.closed or dispatch.id not in self._room_dispatches(room):
                return
            job = proto.Job(
                id=new_sid("AJ_"), dispatch_id=dispatch.id, type=proto.JobType.JT_ROOM, room=room.info(),
                namespace=worker.namespace, metadata=dispatch.metadata, agent_name=dispatch.agent_name,
                state=proto.JobState(status=proto.JobStatus.JS_PENDING, updated_at=time.time_ns(),
                                     worker_id=worker.id),
            )
            job.attributes.update(dispatch.attributes)
            answer = await worker.ask(job)
            if answer is None or not answer.available:
                log.info("worker %s declined job %s for room %s", worker.id, job.id, room.name)
                continue
            identity = answer.participant_identity or f"agent-{job.id}"
            job.state.participant_identity = identity
            job.state.status = proto.JobStatus.JS_RUNNING
            job.state.started_at = job.state.updated_at = time.time_ns()
            token = self._job_token(worker, job, answer)
            record = JobRecord(job, worker)
            self.jobs[job.id] = record
            worker.jobs.add(job.id)
            dispatch.state.jobs.append(job)
            # the dispatch keeps a copy; point the record at it so status updates show in ListDispatch
            record.job = dispatch.state.jobs[-1]
            try:
                await worker.send(proto.ServerMessage(assignment=proto.JobAssignment(job=job, token=token)))
            except ConnectionError:
                self._set_status(record, proto.JobStatus.JS_FAILED, "worker disconnected before its assignment")
                continue
            log.info("job %s for room %s assigned to worker %s as %s", job.id, room.name, worker.id, identity)
            return
        log.info("every worker declined dispatch %s for room %s", dispatch.id, room.name)

    def _job_token(self, worker: WorkerSession, job: proto.Job, answer: proto.AvailabilityResponse) -> str:
        """A token for the job's agent participant, signed with the key the worker registered with."""
        perms = worker.permissions
        grant: dict[str, Any] = {
            "roomJoin": True, "room": job.room.name, "agent": True,
            "canPublish": perms.can_publish if perms else True,
            "canSubscribe": perms.can_subscribe if perms else True,
            "canPublishData": perms.can_publish_data if perms else True,
            "canUpdateOwnMetadata": perms.can_update_metadata if perms else True,
        }
        if perms is not None and perms.hidden:
            grant["hidden"] = True
        attributes = dict(answer.participant_attributes)
        attributes["lk.agent_name"] = job.agent_name  # as livekit-server; livekit-agents adds lk.agent.name itself
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": worker.api_key, "sub": job.state.participant_identity, "nbf": now, "exp": now + JOB_TOKEN_TTL,
            "name": answer.participant_name, "kind": "agent", "video": grant, "attributes": attributes,
        }
        if answer.participant_metadata:
            claims["metadata"] = answer.participant_metadata
        return jwt.encode(claims, self._secrets[worker.api_key], algorithm="HS256")

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("dispatching a job failed", exc_info=task.exception())

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for worker in list(self.workers.values()):
            await worker.ws.close()


# --- the /agent websocket


def _server_info() -> models.ServerInfo:
    return models.ServerInfo(edition=models.ServerInfo.Edition.Standard, version=SERVER_VERSION,
                             protocol=PROTOCOL_VERSION, node_id="nbagents-embedded", agent_protocol=AGENT_PROTOCOL)


async def agent_worker(request: web.Request) -> web.StreamResponse:
    """``GET /agent``: a worker's session, from its registration until its websocket closes."""
    state = request.app[STATE]
    try:
        claims = state.verifier.verify(token_from_request(request.headers, request.query))
        if not claims.video.agent:
            raise PermissionDenied("a worker's token must grant agent: use VideoGrants(agent=True)")
    except AuthError as exc:
        log.info("refused a worker: %s", exc)
        return web.Response(status=exc.status, text=str(exc))
    ws = web.WebSocketResponse(heartbeat=30)
    if not ws.can_prepare(request).ok:
        return web.Response(status=404, text="/agent expects a websocket upgrade from an agent worker")
    await ws.prepare(request)
    register = await _read_registration(ws)
    if register is None:
        await ws.close()
        return ws
    worker = WorkerSession(ws, register, claims.api_key)
    dispatcher = state.agents
    # known to dispatch before it hears it is registered: a dispatch created once it has its answer is offered
    # to it (livekit-server may miss that one: docs/engine-differences.md). The answer is written first.
    dispatcher.add_worker(worker)
    try:
        await worker.send(proto.ServerMessage(register=proto.RegisterWorkerResponse(
            worker_id=worker.id, server_info=_server_info())))
        if register.type != proto.JobType.JT_ROOM:
            log.warning("worker %s registered for %s jobs; this server dispatches room jobs (JT_ROOM) only",
                        worker.id, proto.JobType.Name(register.type))
        async for message in ws:
            if message.type != WSMsgType.BINARY:
                continue
            try:
                _handle(dispatcher, worker, proto.WorkerMessage.FromString(message.data))
            except DecodeError as exc:
                log.warning("worker %s sent a malformed message (%s); ignoring it", worker.id, exc)
    finally:
        dispatcher.remove_worker(worker)
    return ws


async def _read_registration(ws: web.WebSocketResponse) -> proto.RegisterWorkerRequest | None:
    try:
        message = await ws.receive(timeout=10)
    except asyncio.TimeoutError:
        log.info("a worker connected but did not register within 10 s")
        return None
    if message.type != WSMsgType.BINARY:
        return None
    try:
        first = proto.WorkerMessage.FromString(message.data)
    except DecodeError:
        first = proto.WorkerMessage()
    if first.WhichOneof("message") != "register":
        log.info("a worker's first message was %r, not register; closing", first.WhichOneof("message"))
        return None
    return first.register


def _handle(dispatcher: AgentDispatcher, worker: WorkerSession, message: proto.WorkerMessage) -> None:
    kind = message.WhichOneof("message")
    if kind == "availability":
        worker.answered(message.availability)
    elif kind == "update_worker":
        dispatcher.update_worker(worker, message.update_worker)
    elif kind == "update_job":
        dispatcher.update_job(worker, message.update_job)
    elif kind == "ping":
        pong = proto.WorkerPong(last_timestamp=message.ping.timestamp, timestamp=int(time.time() * 1000))
        asyncio.ensure_future(worker.send(proto.ServerMessage(pong=pong)))
    elif kind == "migrate_job":
        for job_id in message.migrate_job.job_ids:  # a reconnected worker keeps its running jobs
            record = dispatcher.jobs.get(job_id)
            if record is not None:
                record.worker = worker
                record.job.state.worker_id = worker.id
                worker.jobs.add(job_id)
    else:
        log.debug("worker %s: ignoring %s", worker.id, kind)
