"""Engines: the LiveKit servers nbagents can run jobs against, behind one small registry.

- ``embedded``       nbagents' own LiveKit-protocol dev server (Python), started as a subprocess
- ``livekit-server`` the real livekit-server binary, started in dev mode on 127.0.0.1
- ``remote``         an already running server or LiveKit Cloud, from LIVEKIT_URL / _API_KEY / _API_SECRET
"""

from __future__ import annotations

import importlib
from typing import Any

from nbagents.engines.base import Credentials, Engine, EngineError

ENGINES = {
    "embedded": "nbagents.engines.embedded:EmbeddedEngine",
    "livekit-server": "nbagents.engines.livekit_server:LiveKitServerEngine",
    "remote": "nbagents.engines.remote:RemoteEngine",
}

__all__ = ["ENGINES", "Credentials", "Engine", "EngineError", "make_engine"]


def make_engine(name: str, **options: Any) -> Engine:
    """Build the engine called ``name`` (not started yet)."""
    try:
        target = ENGINES[name]
    except KeyError:
        raise EngineError(f"unknown engine {name!r}; choose one of {', '.join(ENGINES)}") from None
    module_name, class_name = target.split(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls(**options)
