"""Which LiveKit server a simulated participant joins by default: the one the kernel's jobs use."""

from __future__ import annotations

import os

from nbagents.engines.base import Credentials


def kernel_credentials() -> Credentials:
    """Credentials of the kernel's shared engine (started on first use)."""
    url = os.environ.get("LIVEKIT_URL")
    if url:
        return Credentials(url, os.environ.get("LIVEKIT_API_KEY", ""), os.environ.get("LIVEKIT_API_SECRET", ""))
    raise RuntimeError("no LiveKit server: set LIVEKIT_URL, LIVEKIT_API_KEY and LIVEKIT_API_SECRET")
