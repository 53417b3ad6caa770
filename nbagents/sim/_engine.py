"""Which LiveKit server a simulated participant joins by default: the one the kernel's jobs use."""

from __future__ import annotations

from nbagents.engines.base import Credentials

ENGINE_START_TIMEOUT = 120.0


def kernel_credentials() -> Credentials:
    """Credentials of the kernel's shared engine, started now if no job has started it yet (blocks)."""
    from nbagents.runtime.engine_session import shared_engine
    from nbagents.sim._participant import SimError

    try:
        return shared_engine().wait(ENGINE_START_TIMEOUT)
    except (RuntimeError, TimeoutError) as exc:
        raise SimError(
            f"no LiveKit server for the simulated participant: {exc}. "
            "Pass credentials=(url, api_key, api_secret) to join a server you run yourself."
        ) from None
