"""Every livekit-agents internal nbagents relies on (nbagents/runtime/_agents.py), checked against the installed
livekit-agents: a release that moves one fails here, naming it, instead of in a user's job."""

from __future__ import annotations

import contextvars
import dataclasses
import importlib.util
import inspect
from importlib.metadata import version

import livekit.agents
import pytest
from livekit import api, rtc
from livekit.agents import AgentServer, AgentSession, JobContext, JobProcess, get_job_context
from livekit.agents import job as job_module
from livekit.agents.job import RunningJobInfo
from livekit.agents.utils import http_context
from livekit.protocol import agent as agent_pb
from livekit.protocol import models

from nbagents.runtime import _agents


def test_the_installed_livekit_agents_is_the_pinned_minor_version() -> None:
    assert version("livekit-agents").startswith("1.8."), version("livekit-agents")


def test_job_context_private_constructor_and_running_job_info() -> None:
    assert list(inspect.signature(JobContext.__init__).parameters) == [
        "self", "proc", "info", "room", "on_connect", "on_shutdown", "inference_executor"
    ]
    fields = {f.name for f in dataclasses.fields(job_module.RunningJobInfo)}
    assert {"accept_arguments", "job", "url", "token", "worker_id", "fake_job"} <= fields
    # nbagents signs the token when it is first read: a subclass makes the field a property
    assert not job_module.RunningJobInfo.__dataclass_params__.frozen and "__slots__" not in vars(job_module.RunningJobInfo)
    assert {f.name for f in dataclasses.fields(job_module.JobAcceptArguments)} >= {"name", "identity", "metadata"}
    assert isinstance(job_module._JobContextVar, contextvars.ContextVar)


def test_private_members_the_runtime_drives() -> None:
    for name in ("_on_setup", "_start_log_buffering", "_prepare_telemetry"):
        assert callable(getattr(JobContext, name)), name
    for name in ("_on_session_end", "_on_cleanup"):
        assert inspect.iscoroutinefunction(getattr(JobContext, name)), name
    assert callable(http_context._new_session_ctx) and inspect.iscoroutinefunction(http_context._close_http_ctx)
    assert isinstance(http_context._ContextVar, contextvars.ContextVar)
    from livekit.agents.job import _observability_url

    assert _observability_url("ws://127.0.0.1:7880") is None  # a local server: no cloud telemetry to flush
    assert inspect.iscoroutinefunction(AgentSession.start)


def _context(**kw) -> JobContext:
    """A context as a job builds it, inside its running event loop (rtc.Room needs the current loop)."""
    job = agent_pb.Job(id="AJ_internals", room=models.Room(name="internals"), type=agent_pb.JobType.JT_ROOM)
    return _agents.new_job_context(proc=_agents.new_job_process(), job=job, url="ws://127.0.0.1:1", token=kw.get("token", ""),
                                   identity="agent-AJ_internals", worker_id="w", room=rtc.Room(),
                                   on_connect=lambda: None, on_shutdown=kw.get("on_shutdown", lambda reason: None))


async def test_a_built_context_is_livekit_agents_own_and_becomes_the_current_job() -> None:
    shutdowns: list[str] = []
    ctx = _context(on_shutdown=shutdowns.append)
    try:
        assert type(ctx) is JobContext and isinstance(ctx.proc, JobProcess)
        assert ctx.room.name == "internals" and ctx.job.id == "AJ_internals"  # room._info.name is set
        assert ctx._shutdown_callbacks == [] and ctx._pending_tasks == [] and ctx._participant_tasks == {}
        assert _agents.primary_session(ctx) is None
        reset = _agents.activate(ctx)
        assert get_job_context() is ctx
        assert not http_context.http_session().closed  # the job's shared session, as livekit-agents makes it
        ctx.shutdown(reason="asked")
        assert shutdowns == ["asked"]  # on_shutdown is how ctx.shutdown() reaches the runtime
        await _agents.deactivate(ctx)
        reset()
        assert get_job_context(required=False) is None
    finally:
        ctx._tempdir.cleanup()


async def test_a_token_given_as_a_function_is_signed_once_when_first_read() -> None:
    signed: list[str] = []

    def sign() -> str:
        signed.append("signed")
        return api.AccessToken("devkey", "internals-secret-internals-secret").with_identity("agent-AJ_internals") \
            .with_grants(api.VideoGrants(room_join=True, room="internals")).to_jwt()

    ctx = _context(token=sign)
    try:
        assert signed == [] and isinstance(ctx._info, RunningJobInfo)
        assert ctx.token_claims().identity == "agent-AJ_internals"  # livekit-agents' own reader of the token
        assert ctx._info.token == ctx._info.token and signed == ["signed"]
    finally:
        ctx._tempdir.cleanup()


async def test_shutdown_callbacks_are_recorded_beside_livekit_agents_entries() -> None:
    ctx = _context()
    seen: list[tuple[object, object, bool]] = []
    _agents.record_shutdown_callbacks(ctx, lambda entry, callback, takes_reason: seen.append((entry, callback, takes_reason)))

    async def with_reason(reason: str) -> str:
        return reason

    async def without() -> int:
        return 1

    ctx.add_shutdown_callback(with_reason)
    ctx.add_shutdown_callback(without)
    entries = _agents.registered_shutdown_callbacks(ctx)
    assert type(ctx) is JobContext and list(inspect.signature(ctx.add_shutdown_callback).parameters) == ["callback"]
    assert seen == [(entries[0], with_reason, True), (entries[1], without, False)]
    assert entries[0] is with_reason and entries[1] is not without  # livekit-agents wraps a callback without a parameter
    assert entries[1].__name__ == "without" and not _agents.framework_callback(without)
    ctx._tempdir.cleanup()


def test_agent_server_registration_is_read_back() -> None:
    server = AgentServer(shutdown_process_timeout=12.0)

    def setup(proc: JobProcess) -> None: ...

    async def on_end(ctx: JobContext) -> None: ...

    server.setup_fnc = setup

    @server.rtc_session(agent_name="reader", on_session_end=on_end)
    async def registered(ctx: JobContext) -> None: ...

    assert _agents.registered_session(server) == {"entrypoint": registered, "agent_name": "reader", "prewarm": setup,
                                                  "on_session_end": on_end, "shutdown_process_timeout": 12.0}
    assert _agents.registered_session(AgentServer()) is None
    default = AgentServer()
    default.rtc_session(registered)
    assert _agents.registered_session(default)["shutdown_process_timeout"] is None  # livekit-agents' 10 s default
    options = livekit.agents.WorkerOptions(entrypoint_fnc=registered, agent_name="w")
    assert _agents.registered_session(options)["entrypoint"] is registered
    assert _agents.registered_session(options)["prewarm"] is None


@pytest.mark.parametrize("name", ["LIVEKIT_AGENTS_SHUTDOWN_TIMEOUT"])
def test_livekit_agents_defaults_nbagents_compares_with(name: str) -> None:
    assert inspect.signature(AgentServer.__init__).parameters["shutdown_process_timeout"].default == getattr(_agents, name)


def test_livekit_agents_warm_up_module_the_zygote_imports() -> None:
    # _agents.preload_warm_up imports it; importing it here would run it (and load the local inference models)
    assert importlib.util.find_spec("livekit.agents.ipc._preload") is not None
