"""nbagents' JobContext surface matches the installed livekit-agents 1.8, so exported code runs unchanged."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

import nbagents

agents = pytest.importorskip("livekit.agents")

METHODS = ["connect", "wait_for_participant", "shutdown", "add_shutdown_callback", "add_participant_entrypoint", "delete_room"]
PROPERTIES = ["room", "job", "proc", "api", "local_participant_identity"]
WORKER_OPTIONS = [
    "entrypoint_fnc", "prewarm_fnc", "shutdown_process_timeout", "initialize_process_timeout",
    "num_idle_processes", "agent_name", "ws_url", "api_key", "api_secret",
]


def _shape(fn) -> list[tuple[str, object, object]]:
    """Parameter names, kinds and defaults (annotations differ only in how they are spelled)."""
    return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]


@pytest.mark.parametrize("name", METHODS)
def test_job_context_methods_have_livekit_agents_signatures(name: str) -> None:
    assert _shape(getattr(nbagents.JobContext, name)) == _shape(getattr(agents.JobContext, name))


@pytest.mark.parametrize("name", PROPERTIES)
def test_job_context_properties_exist_as_in_livekit_agents(name: str) -> None:
    ours = inspect.getattr_static(nbagents.JobContext, name)
    theirs = inspect.getattr_static(agents.JobContext, name)
    assert isinstance(theirs, (property, __import__("functools").cached_property))
    assert isinstance(ours, property)


def test_auto_subscribe_has_the_same_members_and_values() -> None:
    assert {m.name: m.value for m in nbagents.AutoSubscribe} == {m.name: m.value for m in agents.AutoSubscribe}


def test_job_process_exposes_userdata_like_livekit_agents() -> None:
    public = {n for n in dir(agents.JobProcess) if not n.startswith("_")}
    assert public <= {n for n in dir(nbagents.JobProcess) if not n.startswith("_")}
    assert nbagents.JobProcess().userdata == {}


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
    assert {"state", "shutdown_reason", "error", "persisted"} <= {f.name for f in dataclasses.fields(JobResult)}
