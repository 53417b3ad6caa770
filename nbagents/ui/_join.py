"""Talk to a job's agent from the browser: a join page (livekit-client, inlined) and the widget that runs it.

``join_page(job)`` is a standalone HTML page: it joins the job's room with the microphone on, shows the
connection state, your microphone level and the agent's level, has Mute and Leave buttons, and plays the
agent's audio. ``join(job)`` shows it in the cell's output as a widget that asks the kernel for the page
(and so a fresh token) each time it is displayed: the saved notebook holds neither the token nor the page.

livekit-client (npm, Apache-2.0) is inlined from ``nbagents/ui/static/livekit-client/``, which
``scripts/fetch-livekit-client`` fills at setup time: the page works offline, from no CDN.
"""

from __future__ import annotations

import datetime
import html
import json
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nbagents.runtime.job import Job

__all__ = ["JoinWidget", "join", "join_page", "join_token", "LIVEKIT_CLIENT_JS"]

TOKEN_TTL = datetime.timedelta(hours=1)
STATIC = Path(__file__).parent / "static"
LIVEKIT_CLIENT_JS = STATIC / "livekit-client" / "livekit-client.umd.js"
PAGE_TEMPLATE = STATIC / "join.html"
WIDGET_ESM = STATIC / "join_widget.js"


def join_token(job: Job, identity: str = "notebook-user", *, ttl: datetime.timedelta = TOKEN_TTL) -> tuple[str, str]:
    """(server URL, access token) for a human joining the job's room; the token expires after ``ttl``.

    Raises ValueError when the job already ended or ``identity`` is empty.
    """
    from livekit import api

    from nbagents.ui._actions import _credentials

    if job.done:
        raise ValueError(f"job {job.id} already ended ({job.state}); launch a new one to join its room")
    if not isinstance(identity, str) or not identity.strip():
        raise ValueError(f"identity must be a non-empty string (got {identity!r})")
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


@lru_cache(maxsize=1)
def _livekit_client() -> str:
    try:
        return LIVEKIT_CLIENT_JS.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(
            f"the join page needs livekit-client's browser bundle at {LIVEKIT_CLIENT_JS}, which is missing: "
            "run scripts/fetch-livekit-client from the nbagents checkout (it needs npm), or reinstall nbagents from a "
            "build that includes it"
        ) from None


def join_page(job: Job, identity: str = "notebook-user", *, ttl: datetime.timedelta = TOKEN_TTL) -> str:
    """The standalone HTML page (a str, ~620 KB) with which a person joins ``job``'s room and talks to its agent.

    The page holds a token valid for ``ttl`` (default one hour) for ``identity``: treat it as a secret.
    Open it in a browser tab (write it to a file) where a notebook's output frame may not use the
    microphone. The LiveKit server must be reachable from that browser; the page explains what to do
    when it is not (e.g. the kernel runs on another machine). Raises ValueError for a finished job and
    FileNotFoundError when livekit-client's bundle is missing.
    """
    url, token = join_token(job, identity, ttl=ttl)
    agent_identity = job.connected.identity if job.connected is not None else f"agent-{job.id}"
    config = {"url": url, "token": token, "room": job.room, "identity": identity, "agent_identity": agent_identity, "job_id": job.id}
    page = PAGE_TEMPLATE.read_text(encoding="utf-8")
    replacements = {
        "__CONFIG_JSON__": json.dumps(config).replace("</", "<\\/"),
        "__ROOM_TEXT__": html.escape(job.room),
        "__IDENTITY_TEXT__": html.escape(identity),
    }
    for placeholder, value in replacements.items():
        page = page.replace(placeholder, value)
    return page.replace("__LIVEKIT_CLIENT__", _livekit_client(), 1)  # last: the bundle is not scanned for placeholders


def _widget_class() -> type:
    import anywidget
    import traitlets

    class JoinWidget(anywidget.AnyWidget):  # type: ignore[misc]
        """Runs :func:`join_page` in the cell's output; the page and its token come from the kernel on display."""

        _esm = WIDGET_ESM
        room = traitlets.Unicode("").tag(sync=True)
        job_id = traitlets.Unicode("").tag(sync=True)
        identity = traitlets.Unicode("notebook-user").tag(sync=True)
        height = traitlets.Unicode("125px").tag(sync=True)

        def __init__(self, job: Job, identity: str = "notebook-user", height: str = "125px") -> None:
            super().__init__(room=job.room, job_id=job.id, identity=identity, height=height)
            self._job = job
            self.on_msg(self._on_frontend_message)

        def _on_frontend_message(self, _widget: Any, content: Any, _buffers: Any) -> None:
            if not isinstance(content, dict) or content.get("type") != "page-request":
                return
            try:
                page = join_page(self._job, self.identity)
            except Exception as exc:  # shown in the output, where the person who asked is looking
                self.send({"type": "error", "message": f"cannot join room {self.room!r}: {exc}"})
            else:
                self.send({"type": "page", "html": page, "ttl_minutes": int(TOKEN_TTL.total_seconds() // 60)})

        def __repr__(self) -> str:
            return (f"<nbagents join widget: room {self.room!r} of job {self.job_id} as {self.identity!r} "
                    "(it needs the running kernel: run the cell again to join)>")

    return JoinWidget


JoinWidget: Any = None


def join(job: Job, identity: str = "notebook-user", *, height: str = "125px") -> Any:
    """A widget, shown in the cell's output, with which you join ``job``'s room and talk to its agent.

    The microphone starts on; the widget shows the connection state, your level and the agent's, and
    has Mute and Leave buttons; "open in a browser tab" runs the same page in a tab (for frontends whose
    output frames may not use the microphone, such as VS Code). The token is made when the widget is
    displayed and never saved in the notebook. Raises ValueError for a job that already ended.
    """
    global JoinWidget
    if job.done:
        raise ValueError(f"job {job.id} already ended ({job.state}); launch a new one to join its room")
    if not isinstance(identity, str) or not identity.strip():
        raise ValueError(f"identity must be a non-empty string (got {identity!r})")
    _livekit_client()  # a missing bundle is an error now, not a blank frame later
    if JoinWidget is None:
        JoinWidget = _widget_class()
    return JoinWidget(job, identity, height)
