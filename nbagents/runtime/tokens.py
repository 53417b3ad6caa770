"""The token a launched job's agent joins its room with.

A launched job is not dispatched by a server, so nbagents writes the token a dispatch would have given it:
an agent participant (kind ``agent``, identity ``agent-<job id>``) of the job's room, with the attributes
``lk.agent.name`` (livekit-agents' worker asks for it) and ``lk.agent_name`` (livekit-server adds it to every
dispatched agent's token).

As under livekit-agents, whose worker hands its job process the token in ``RunningJobInfo``, the kernel
mints it at launch (:func:`token_at_launch`) when it can do so at no cost; otherwise the job does.
"""

from __future__ import annotations

import sys

__all__ = ["agent_identity", "agent_token", "mints_at_launch", "token_at_launch"]


def agent_identity(job_id: str) -> str:
    """The identity livekit-agents gives a job's agent by default (``JobRequest.accept``)."""
    return f"agent-{job_id}"


def agent_token(key: str, secret: str, job_id: str, room: str, agent_name: str) -> str:
    """A JWT (HS256, signed with ``secret``) for the job's agent participant in ``room``."""
    from livekit import api

    return (
        api.AccessToken(key, secret)
        .with_identity(agent_identity(job_id))
        .with_kind("agent")
        .with_attributes({"lk.agent.name": agent_name, "lk.agent_name": agent_name})
        .with_grants(api.VideoGrants(room_join=True, room=room, agent=True, can_update_own_metadata=True))
        .to_jwt()
    )


def token_at_launch(key: str, secret: str, job_id: str, room: str, agent_name: str) -> str | None:
    """The job's token, minted in the kernel when ``livekit.api`` is already loaded there (a notebook that
    uses livekit-agents has loaded it), else None and the job mints it.

    Signing takes a quarter of a millisecond in the kernel and about twice that in a job process that has
    just woken up, on the path from ``launch()`` to the entrypoint; importing ``livekit.api`` for it would
    cost the kernel a few hundred milliseconds.
    """
    if not mints_at_launch():
        return None
    return agent_token(key, secret, job_id, room, agent_name)


def mints_at_launch() -> bool:
    """Whether :func:`token_at_launch` signs (``livekit.api`` is loaded in this process)."""
    return "livekit.api" in sys.modules
