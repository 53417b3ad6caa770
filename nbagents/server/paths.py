"""Request paths as livekit-server resolves them, so every path form a client may send reaches the same place.

livekit-server v1.13.5 does three things before it picks a handler (pkg/service/server.go, utils.go):

- it drops one slash from a path that starts with ``//`` (its ``RemoveDoubleSlashes`` middleware):
  livekit-client builds ``ws://host//rtc`` from a server URL that ends with ``/``, and that must join;
- Go's ``http.ServeMux`` then answers any path that is still not clean — repeated slashes, ``.`` or ``..``
  segments — with a 307 redirect to its clean form, query kept (``///rtc`` → ``/rtc``);
- handlers match exact paths: ``/rtc/`` (a trailing slash) is not ``/rtc`` and gets a 404.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ResolvedPath:
    """Where a request path leads: ``path`` to serve, or a redirect to it when ``redirect`` is set."""

    path: str
    redirect: bool


def clean(path: str) -> str:
    """Go's ``cleanPath`` (net/http): a rooted path without empty, ``.`` or ``..`` segments; a trailing slash
    is kept."""
    if not path.startswith("/"):
        path = "/" + path
    segments: list[str] = []
    for segment in path.split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if segments:
                segments.pop()
            continue
        segments.append(segment)
    cleaned = "/" + "/".join(segments)
    if path.endswith("/") and cleaned != "/":
        cleaned += "/"
    return cleaned


def resolve(path: str) -> ResolvedPath:
    """The path livekit-server would serve for a request to ``path`` (decoded, without the query)."""
    if path.startswith("//"):
        path = path[1:]
    cleaned = clean(path)
    return ResolvedPath(cleaned, redirect=cleaned != path)
