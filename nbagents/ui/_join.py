"""Join a job's room from the browser, with the microphone, using the join page the ``livekit`` package ships."""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nbagents.runtime.job import Job

__all__ = ["join", "join_token"]

TOKEN_TTL = datetime.timedelta(hours=1)


def join_token(job: Job, identity: str = "notebook-user", *, ttl: datetime.timedelta = TOKEN_TTL) -> tuple[str, str]:
    """(server URL, access token) for a human joining the job's room; the token expires after ``ttl``."""
    from livekit import api

    from nbagents.ui._actions import _credentials

    if job.done:
        raise ValueError(f"job {job.id} already ended ({job.state}); launch a new one to join its room")
    url, key, secret = _credentials()
    token = (
        api.AccessToken(key, secret)
        .with_identity(identity)
        .with_name(identity)
        .with_ttl(ttl)
        .with_grants(api.VideoGrants(room_join=True, room=job.room, can_publish=True, can_subscribe=True, can_publish_data=True))
        .to_jwt()
    )
    return url, token


def join(job: Job, identity: str = "notebook-user", *, height: str = "110px") -> Any:
    """Show, in the cell's output, a page that joins the job's room with your microphone.

    The page is livekit's own notebook join page (``livekit.rtc.jupyter``). It connects from the
    browser to the job's server, so that server must be reachable from the browser (the embedded one
    listens on 127.0.0.1: fine when the notebook runs on your machine). The token in the page expires
    after an hour; do not publish a notebook that still holds one.
    """
    from livekit.rtc.jupyter import room_html

    url, token = join_token(job, identity)
    return room_html(url, token, width="100%", height=height)
