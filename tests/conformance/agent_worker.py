"""A raw agent worker for the dispatch tests: livekit-protocol messages over an aiohttp websocket at /agent.

It speaks exactly what livekit-agents' worker sends (register, availability answers, status updates), so a
test can watch every message the server sends and answer each one as it chooses.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
from livekit import api
from livekit.protocol import agent as proto
from livekit.protocol import models

from .helpers import TIMEOUT


def worker_token(server: Any, **grants: Any) -> str:
    grants.setdefault("agent", True)
    return api.AccessToken(server.api_key, server.api_secret).with_grants(api.VideoGrants(**grants)).to_jwt()


class RawWorker:
    """One registered worker; ``received`` holds every ServerMessage in arrival order."""

    def __init__(self, session: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._session = session
        self.ws = ws
        self.received: list[proto.ServerMessage] = []
        self._changed = asyncio.Event()
        self.registration: proto.RegisterWorkerResponse | None = None
        self._reader: asyncio.Task[None] | None = None

    @classmethod
    async def register(cls, server: Any, agent_name: str = "", path: str = "/agent") -> RawWorker:
        session = aiohttp.ClientSession()
        try:
            ws = await session.ws_connect(f"{server.url}{path}", timeout=aiohttp.ClientWSTimeout(ws_close=TIMEOUT),
                                          headers={"Authorization": f"Bearer {worker_token(server)}"})
        except BaseException:
            await session.close()
            raise
        worker = cls(session, ws)
        await worker.send(proto.WorkerMessage(register=proto.RegisterWorkerRequest(
            type=proto.JobType.JT_ROOM, agent_name=agent_name, version="1.8.9",
            allowed_permissions=models.ParticipantPermission(
                can_publish=True, can_subscribe=True, can_publish_data=True, can_update_metadata=True,
                agent=True),
        )))
        worker._reader = asyncio.ensure_future(worker._read())
        first = await worker.next(lambda m: True)
        assert first.WhichOneof("message") == "register", f"first server message was {first}"
        worker.registration = first.register
        await worker.send(proto.WorkerMessage(update_worker=proto.UpdateWorkerStatus(
            status=proto.WorkerStatus.WS_AVAILABLE, load=0.0, job_count=0)))
        return worker

    async def _read(self) -> None:
        async for message in self.ws:
            if message.type == aiohttp.WSMsgType.BINARY:
                self.received.append(proto.ServerMessage.FromString(message.data))
                self._changed.set()
        self._changed.set()

    async def send(self, message: proto.WorkerMessage) -> None:
        await self.ws.send_bytes(message.SerializeToString())

    def of_kind(self, kind: str) -> list[Any]:
        return [getattr(m, kind) for m in self.received if m.WhichOneof("message") == kind]

    async def next(self, where: Callable[[proto.ServerMessage], bool], *, after: int = 0,
                   timeout: float = TIMEOUT) -> proto.ServerMessage:
        """The first message (at index >= ``after``) satisfying ``where``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            for message in self.received[after:]:
                if where(message):
                    return message
            if self._reader is not None and self._reader.done() and self.ws.closed:
                raise AssertionError(f"the server closed the worker's websocket; got {len(self.received)} messages")
            remaining = deadline - loop.time()
            if remaining <= 0:
                kinds = [m.WhichOneof("message") for m in self.received[after:]]
                raise AssertionError(f"no matching server message within {timeout:.0f} s; got {kinds}")
            self._changed.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    async def job_request(self, room: str, **kw: Any) -> proto.Job:
        """The AvailabilityRequest's job for ``room``."""
        message = await self.next(lambda m: m.WhichOneof("message") == "availability"
                                  and m.availability.job.room.name == room, **kw)
        return message.availability.job

    async def accept(self, job: proto.Job, identity: str = "", **fields: Any) -> proto.JobAssignment:
        """Say available for ``job`` and return the server's assignment (with the job token)."""
        await self.send(proto.WorkerMessage(availability=proto.AvailabilityResponse(
            job_id=job.id, available=True, participant_identity=identity, **fields)))
        message = await self.next(lambda m: m.WhichOneof("message") == "assignment" and m.assignment.job.id == job.id)
        await self.send(proto.WorkerMessage(update_job=proto.UpdateJobStatus(
            job_id=job.id, status=proto.JobStatus.JS_RUNNING)))
        return message.assignment

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.ws.close()
        if self._reader is not None:
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(self._reader, TIMEOUT)
        await self._session.close()


@contextlib.asynccontextmanager
async def registered_worker(server: Any, agent_name: str = "") -> AsyncIterator[RawWorker]:
    worker = await RawWorker.register(server, agent_name)
    try:
        yield worker
    finally:
        await worker.close()


#: how long a dispatch on livekit-server may go without a job request before it is created again (see below)
DISPATCH_RETRY_AFTER = 5.0


async def dispatch_to(lk_api: Any, server: Any, worker: RawWorker, request: Any) -> tuple[Any, proto.Job]:
    """CreateDispatch ``request`` and the job request ``worker`` gets for it: (the dispatch, its job).

    livekit-server offers a dispatch to the agent names of a cache its agent client refreshes asynchronously
    after a worker registers (pkg/agent: the cache is dropped when a "worker registered" message arrives),
    and decides once: a dispatch created in the moment after a worker with a new agent name registered can
    find no worker ("not dispatching agent job since no worker is available") and is never offered. So on
    livekit-server a dispatch that brought no job request within DISPATCH_RETRY_AFTER seconds is deleted and
    created again, up to three times; on the embedded server the first one must be offered.
    """
    tries = 3 if server.engine == "livekit-server" else 1
    for attempt in range(1, tries + 1):
        mark = len(worker.received)
        dispatch = await lk_api.agent_dispatch.create_dispatch(request)
        try:
            job = await worker.job_request(request.room, after=mark,
                                           timeout=DISPATCH_RETRY_AFTER if attempt < tries else TIMEOUT)
        except AssertionError:
            if attempt == tries:
                raise
            await lk_api.agent_dispatch.delete_dispatch(dispatch.id, request.room)
            continue
        return dispatch, job
    raise AssertionError("unreachable")
