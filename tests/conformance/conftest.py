"""Fixtures of the conformance suite, and the marker for known differences between engines.

A test that one engine is known to fail on purpose carries
``@engine_difference("embedded", reason="...")``: for that engine only it becomes a strict xfail (so
the day the difference disappears, the test says so); on every other engine it must pass. Each such
difference is also written down, with its reason, in docs/engine-differences.md.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from livekit import api

from .helpers import ParticipantFactory, service


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "engine_difference(engine, reason): a documented, expected difference of that engine from "
        "livekit-server; a strict xfail for that engine only",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        callspec = getattr(item, "callspec", None)
        engine = callspec.params.get("lk_server") if callspec is not None else None
        for mark in item.iter_markers("engine_difference"):
            if mark.args[0] == engine:
                reason = mark.kwargs["reason"]
                item.add_marker(pytest.mark.xfail(strict=True, reason=f"known difference of {engine}: {reason}"))


@pytest.fixture
async def participants(lk_server) -> AsyncIterator[ParticipantFactory]:
    """``await participants(room, identity, **token_options)`` connects a participant; all leave at the end."""
    factory = ParticipantFactory(lk_server)
    try:
        yield factory
    finally:
        await factory.close()


@pytest.fixture
async def lk_api(lk_server) -> AsyncIterator[api.LiveKitAPI]:
    """A livekit-api client with full (admin) credentials."""
    async with service(lk_server) as client:
        yield client
