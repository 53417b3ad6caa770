"""Engines: the LiveKit servers nbagents can run jobs against, behind one small registry.

- ``embedded``       nbagents' own LiveKit-protocol dev server (Python), started as a subprocess
- ``livekit-server`` the real livekit-server binary, started in dev mode on 127.0.0.1
- ``remote``         an already running server or LiveKit Cloud, from LIVEKIT_URL / _API_KEY / _API_SECRET

``select_engine()`` picks one the way the README's "Engines" section describes; ``NBAGENTS_ENGINE``
overrides the choice.
"""

from __future__ import annotations

import importlib
import os
import shutil
from collections.abc import Mapping
from typing import Any

from nbagents.engines.base import Credentials, Engine, EngineError

ENGINES = {
    "embedded": "nbagents.engines.embedded:EmbeddedEngine",
    "livekit-server": "nbagents.engines.livekit_server:LiveKitServerEngine",
    "remote": "nbagents.engines.remote:RemoteEngine",
}
ENGINE_ENV = "NBAGENTS_ENGINE"

__all__ = ["ENGINES", "ENGINE_ENV", "Credentials", "Engine", "EngineError", "describe_engine", "make_engine",
           "select_engine"]


def make_engine(name: str, **options: Any) -> Engine:
    """Build the engine called ``name`` (not started yet)."""
    try:
        target = ENGINES[name]
    except KeyError:
        raise EngineError(f"unknown engine {name!r}; choose one of {', '.join(ENGINES)}") from None
    module_name, class_name = target.split(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls(**options)


def select_engine(environ: Mapping[str, str] = os.environ) -> Engine:
    """The engine to use (not started yet): NBAGENTS_ENGINE if set, else the first that is available of
    a server at LIVEKIT_URL, a livekit-server binary (NBAGENTS_LIVEKIT_SERVER or PATH), the embedded one.

    The reason for the choice is kept on the engine as ``selection_reason`` for ``describe_engine``.
    """
    from nbagents.engines.livekit_server import BINARY_ENV

    requested = environ.get(ENGINE_ENV, "").strip().lower()
    binary = environ.get(BINARY_ENV) or shutil.which("livekit-server", path=environ.get("PATH"))
    if requested:
        if requested not in ENGINES:
            raise EngineError(
                f"{ENGINE_ENV}={environ[ENGINE_ENV]!r} is not an engine: use one of {', '.join(ENGINES)}, "
                "or unset it to let nbagents choose"
            )
        name, reason = requested, f"{ENGINE_ENV}={requested}"
    elif environ.get("LIVEKIT_URL"):
        name, reason = "remote", "LIVEKIT_URL is set"
    elif binary:
        name = "livekit-server"
        reason = f"{BINARY_ENV} is set" if environ.get(BINARY_ENV) else f"livekit-server is on PATH ({binary})"
    else:
        name, reason = "embedded", "no LIVEKIT_URL and no livekit-server on PATH"

    if name == "remote":
        options: dict[str, Any] = {
            "url": environ.get("LIVEKIT_URL", ""),
            "api_key": environ.get("LIVEKIT_API_KEY", ""),
            "api_secret": environ.get("LIVEKIT_API_SECRET", ""),
        }
    elif name == "livekit-server":
        options = {"binary": environ.get(BINARY_ENV) or None}  # None: search PATH, then the build cache
    else:
        options = {}
    engine = make_engine(name, **options)
    engine.selection_reason = reason  # type: ignore[attr-defined]
    return engine


def describe_engine(engine: Engine) -> str:
    """One line for the user: which engine, at which URL, and why it was chosen."""
    credentials = engine.credentials
    describe = getattr(engine, "describe", None)
    if callable(describe):
        what = describe()
    else:
        what = f"{engine.name} at {credentials.url}" if credentials else engine.name
    line = f"nbagents engine: {what}"
    reason = getattr(engine, "selection_reason", None)
    if reason:
        line += f" — {reason}; set {ENGINE_ENV}=embedded|livekit-server|remote to choose another"
    return line
