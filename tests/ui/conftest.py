"""Fixtures for the notebook UI tests: real jobs against the session's server, views built on them."""

from __future__ import annotations

import asyncio
import secrets
from typing import Callable

import pytest

from nbagents.runtime.engine_session import shared_engine

WAIT = 60.0  # generous: the machine is small and shared


@pytest.fixture
def server(lk_server):
    """The session's LiveKit server; jobs and simulated participants of the test use it."""
    shared_engine().use((lk_server.url, lk_server.api_key, lk_server.api_secret))
    return lk_server


@pytest.fixture
def room_name() -> str:
    return "ui-" + secrets.token_hex(4)


async def wait_until(predicate: Callable[[], object], timeout: float = WAIT, what: str = "condition") -> None:
    """Poll ``predicate`` until it is truthy (tests wait for events, never for fixed durations)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.02)
