"""The job surface nbagents exports is livekit-agents 1.8's own, so exported code runs unchanged."""

from __future__ import annotations

import dataclasses
import inspect

import livekit.agents as agents

import nbagents

WORKER_OPTIONS = [
    "entrypoint_fnc", "prewarm_fnc", "shutdown_process_timeout", "initialize_process_timeout",
    "num_idle_processes", "agent_name", "ws_url", "api_key", "api_secret",
]


def test_job_context_job_process_and_auto_subscribe_are_livekit_agents_own() -> None:
    assert nbagents.JobContext is agents.JobContext
    assert nbagents.JobProcess is agents.JobProcess
    assert nbagents.AutoSubscribe is agents.AutoSubscribe
    from nbagents import AutoSubscribe, JobContext, JobProcess  # the spelling notebooks use

    assert (AutoSubscribe, JobContext, JobProcess) == (agents.AutoSubscribe, agents.JobContext, agents.JobProcess)


def test_worker_options_fields_match_and_timeout_follows_the_documentation() -> None:
    ours = {f.name: f for f in dataclasses.fields(nbagents.WorkerOptions)}
    theirs = inspect.signature(agents.WorkerOptions).parameters
    for name in WORKER_OPTIONS:
        assert name in ours and name in theirs, name
    # the documentation (which nbagents follows) says 60 s; livekit-agents 1.8's code says 10 s
    assert ours["shutdown_process_timeout"].default == 60.0
    assert theirs["shutdown_process_timeout"].default == 10.0
    for name in ("initialize_process_timeout", "agent_name", "ws_url", "api_key", "api_secret"):
        assert ours[name].default == theirs[name].default, name


def test_public_names() -> None:
    from nbagents import AutoSubscribe, Job, JobContext, JobProcess, JobResult, WorkerOptions, launch  # noqa: F401

    assert callable(launch)
    assert {"state", "shutdown_reason", "error", "persisted", "transcript"} <= {f.name for f in dataclasses.fields(JobResult)}
