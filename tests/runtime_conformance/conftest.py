"""The runtime conformance harness: the same scenario, run as an nbagents job and as a job of a real
livekit-agents 1.8 worker on the same server, observed the same way.

A scenario is an entrypoint (``scenarios.py``) plus a script of what the humans in the room do (the test).
Each run yields an :class:`Observation`: what every human received (data packets and text streams, in
order), how each was disconnected, the agent participant's identity, kind and attributes, and what the
job reported about itself (``scenarios.report``: shutdown reasons, what the job context said). The two
observations must be equal once job ids are written as ``<job>``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import re
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import psutil
import pytest
from livekit import api, rtc

from waiting import WAIT, wait_until

from . import scenarios
from .lk_worker import AGENT_NAME

TESTS = Path(__file__).resolve().parents[1]
STARTUP_TIMEOUT = 120.0  # a loaded 2-core machine: the worker imports livekit-agents and starts its forkserver
FRAMEWORKS = ("nbagents", "livekit-agents")
TERMINATED = ["shutdown callback", "parent process shutdown"]  # livekit-agents' reason for a server's JobTermination
ROOM_CLOSED_REASON = "room disconnected"


@dataclasses.dataclass
class Observation:
    received: dict[str, list[tuple[str, str]]] = dataclasses.field(default_factory=dict)  # identity -> (topic, text)
    disconnects: dict[str, list[str]] = dataclasses.field(default_factory=dict)  # identity -> reasons
    agent: dict[str, Any] = dataclasses.field(default_factory=dict)  # identity, kind, attributes (when recorded)
    report: list[tuple[str, Any]] = dataclasses.field(default_factory=list)  # (key, value) from the job

    def normalized(self, job_id: str, room: str) -> dict[str, Any]:
        """Everything, with the job's id written ``<job>`` and the room's name ``<room>`` (each run has its own)."""
        text = json.dumps(dataclasses.asdict(self), sort_keys=True).replace(room, "<room>")
        data = json.loads(text.replace(job_id, "<job>")) if job_id else json.loads(text)
        data["report"] = [entry for entry in data["report"] if entry[0] not in ("pid", "job id")]
        return data


class Person:
    """A human participant (a plain ``rtc.Room``) recording what reaches it."""

    def __init__(self, identity: str, observation: Observation) -> None:
        self.identity = identity
        self.room = rtc.Room()
        self.received = observation.received.setdefault(identity, [])
        self.disconnects = observation.disconnects.setdefault(identity, [])
        self.room.on("data_received", self._on_data)
        self.room.on("disconnected", self._on_disconnected)
        self.room.register_text_stream_handler("lk.transcription", self._on_text_stream)

    def _on_disconnected(self, reason: Any = None) -> None:
        name = _reason_name(reason)
        if name != "CLIENT_INITIATED":  # the human's own leave() says nothing about the job
            self.disconnects.append(name)

    def _on_data(self, packet: rtc.DataPacket) -> None:
        self.received.append((packet.topic, bytes(packet.data).decode()))

    def _on_text_stream(self, reader: rtc.TextStreamReader, sender: str) -> None:
        # kept in the order the streams opened: two sessions' transcriptions can overlap, and which one ends
        # first is a race on both frameworks
        opened = (reader.info.topic, None)  # its place, until its text is in
        self.received.append(opened)

        async def read() -> None:
            text = await reader.read_all()
            at = next(i for i, item in enumerate(self.received) if item is opened)
            if text.strip():
                self.received[at] = (reader.info.topic, text)
            else:  # an empty stream says nothing
                del self.received[at]

        asyncio.ensure_future(read())

    def agent(self) -> rtc.RemoteParticipant | None:
        return next((p for p in self.room.remote_participants.values()
                     if p.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT), None)

    async def wait_for(self, what: str, predicate: Callable[[], object]) -> None:
        await wait_until(predicate, what=f"{self.identity}: {what}")

    async def wait_for_text(self, text: str) -> None:
        await self.wait_for(f"to receive {text!r}", lambda: any(t == text for _, t in self.received))

    async def leave(self) -> None:
        await self.room.disconnect()


def _reason_name(reason: Any) -> str:
    try:
        return rtc.DisconnectReason.Name(reason) if isinstance(reason, int) else str(reason)
    except ValueError:
        return str(reason)


class Run:
    """One scenario under one framework: the humans, the job, and what was observed."""

    def __init__(self, framework: str, server: Any, room: str, scenario: str, worker: LkWorker | None) -> None:
        self.framework, self.server, self.room_name, self.scenario, self.worker = framework, server, room, scenario, worker
        self.observation = Observation()
        self.people: list[Person] = []
        self.job: Any = None  # nbagents: the Job
        self.report_path = Path(os.environ[scenarios.REPORT_DIR_ENV]) / f"{room}.jsonl"

    async def join(self, identity: str, *, kind: str | None = None) -> Person:
        """A human joins; the room closes 1 s after the last human left (set by the first join's token)."""
        person = Person(identity, self.observation)
        token = (
            api.AccessToken(self.server.api_key, self.server.api_secret)
            .with_identity(identity)
            .with_grants(api.VideoGrants(room_join=True, room=self.room_name))
            .with_room_config(api.RoomConfiguration(departure_timeout=1, empty_timeout=30))
        )
        if kind is not None:
            token = token.with_kind(kind)
        await person.room.connect(self.server.url, token.to_jwt())
        self.people.append(person)
        return person

    def record_agent(self, person: Person) -> None:
        """Record the agent participant as ``person`` sees it now (livekit-server announces participants in
        batches, so a short-lived agent may never be seen: scripts record it once they have waited for it)."""
        agent = person.agent()
        assert agent is not None, f"{person.identity} sees no agent"
        self.observation.agent = {"identity": agent.identity, "kind": "agent", "attributes": dict(agent.attributes)}

    async def start_job(self) -> None:
        metadata = json.dumps({"scenario": self.scenario})
        if self.framework == "nbagents":
            from nbagents import launch

            # departure_timeout=0: keep the room's own (the humans' token set it), as a dispatched job does
            self.job = launch(scenarios.entrypoint, room=self.room_name, metadata=metadata, agent_name=AGENT_NAME,
                              departure_timeout=0)
        else:
            async with api.LiveKitAPI(self.server.http_url, self.server.api_key, self.server.api_secret) as lkapi:
                await lkapi.agent_dispatch.create_dispatch(
                    api.CreateAgentDispatchRequest(agent_name=AGENT_NAME, room=self.room_name, metadata=metadata)
                )

    def reported(self) -> list[tuple[str, Any]]:
        try:
            lines = self.report_path.read_text().splitlines()
        except OSError:
            return []
        return [(entry["key"], entry["value"]) for entry in map(json.loads, lines)]

    def reported_value(self, key: str) -> Any:
        return next((value for k, value in self.reported() if k == key), None)

    async def job_ended(self) -> None:
        """The job's process has exited (its shutdown callbacks ran)."""
        if self.job is not None:
            await asyncio.wait_for(self.job.wait(), WAIT)
            return
        await wait_until(lambda: self.reported_value("pid") is not None, what="the livekit-agents job to start")
        pid = self.reported_value("pid")
        await wait_until(lambda: _exited(pid), what=f"the livekit-agents job process {pid} to exit")

    def normalized(self) -> dict[str, Any]:
        data = self.observation.normalized(self.job_id(), self.room_name)
        if self.framework == "livekit-agents" and self.server.engine == "livekit-server":
            # docs/runtime-differences.md: when a room closes, livekit-server terminates the jobs dispatched to
            # it before their agents see the room disconnect; a launched nbagents job has no dispatch to terminate
            data["report"] = [[key, ROOM_CLOSED_REASON if [key, value] == TERMINATED else value]
                              for key, value in data["report"]]
        return data

    def job_id(self) -> str:
        return self.job.id if self.job is not None else (self.reported_value("job id") or "")

    async def close(self) -> None:
        for person in self.people:
            with contextlib.suppress(Exception):
                await person.leave()
        with contextlib.suppress(Exception):
            await self.job_ended()
        self.observation.report = self.reported()


def _exited(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


class LkWorker:
    """``python lk_worker.py start`` against one server, its output kept for failure messages."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: list[str] = []
        self.registered = asyncio.Event()
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        assert self.process.stdout is not None
        async for raw in self.process.stdout:
            line = raw.decode("utf-8", "replace").rstrip()
            self.lines.append(line)
            if '"registered worker"' in line or "registered worker" in line:
                self.registered.set()

    def tail(self, n: int = 30) -> str:
        return "\n".join(line[:300] for line in self.lines[-n:])

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), 30)
            except asyncio.TimeoutError:
                os.killpg(self.process.pid, signal.SIGKILL)
                await self.process.wait()
        self._reader.cancel()


@pytest.fixture(scope="session")
def report_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("conformance-reports")
    os.environ[scenarios.REPORT_DIR_ENV] = str(path)  # nbagents jobs see the kernel's environment at launch
    return path


_workers: dict[str, LkWorker] = {}


@pytest.fixture
async def lk_worker(lk_server, report_dir) -> LkWorker:
    """One livekit-agents worker per server for the whole session (its start takes seconds)."""
    worker = _workers.get(lk_server.url)
    if worker is None or worker.process.returncode is not None:
        env = dict(
            os.environ,
            LIVEKIT_URL=lk_server.url,
            LIVEKIT_API_KEY=lk_server.api_key,
            LIVEKIT_API_SECRET=lk_server.api_secret,
            PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
            PYTHONUNBUFFERED="1",
        )
        env.setdefault("LIVEKIT_AGENTS_PRELOAD_LOCAL_INFERENCE", "0")
        process = await asyncio.create_subprocess_exec(
            sys.executable, str(Path(__file__).with_name("lk_worker.py")), "start",
            env=env, cwd=TESTS, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
        worker = _workers[lk_server.url] = LkWorker(process)
        try:
            await asyncio.wait_for(worker.registered.wait(), STARTUP_TIMEOUT)
        except asyncio.TimeoutError:
            await worker.stop()
            raise AssertionError(f"the livekit-agents worker did not register:\n{worker.tail()}") from None
    return worker


@pytest.fixture(scope="session", autouse=True)
def _stop_workers() -> Any:
    yield
    for worker in _workers.values():
        if worker.process.returncode is None:
            worker.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 30
    for worker in _workers.values():
        while worker.process.returncode is None and time.monotonic() < deadline:
            try:
                os.waitpid(worker.process.pid, os.WNOHANG)
            except ChildProcessError:
                break
            time.sleep(0.1)
        if worker.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(worker.process.pid, signal.SIGKILL)


Script = Callable[[Run], Awaitable[None]]


@pytest.fixture
def run_both(server, lk_worker, report_dir, request) -> Callable[[str, Script], Awaitable[tuple[Run, Run]]]:
    """``nb, lk = await run_both(scenario, script)``: the script drives the humans in a fresh room under each
    framework in turn; the two observations must be equal (job ids aside)."""

    async def run(scenario: str, script: Script) -> tuple[Run, Run]:
        runs = []
        for framework in FRAMEWORKS:
            room = f"rc-{scenario[:20]}-{framework[:2]}-{os.urandom(3).hex()}"
            one = Run(framework, server, room, scenario, lk_worker if framework == "livekit-agents" else None)
            try:
                await script(one)
            except BaseException:
                if framework == "livekit-agents":
                    print(f"livekit-agents worker output:\n{lk_worker.tail()}")
                elif one.job is not None:
                    records = "\n".join(f"{r.level} {r.logger}: {r.message}" for r in list(one.job.logs)[-40:])
                    states = [getattr(e, "state", None) for e in one.job.events if type(e).__name__ == "StateChanged"]
                    print(f"nbagents job {one.job.id} ({one.job.state}; states {states}), its last log records:\n{records}")
                raise
            finally:
                await one.close()
            runs.append(one)
        nb, lk = runs
        assert nb.normalized() == lk.normalized()
        return nb, lk

    return run
