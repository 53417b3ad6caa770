"""Fixtures of the conformance suite, and the marker for known differences between engines.

A test that one engine is known to fail on purpose carries
``@engine_difference("embedded", reason="...")``: for that engine only it becomes a strict xfail (so
the day the difference disappears, the test says so); on every other engine it must pass.
``only={"param": value}`` limits it to those values of the test's other parameters. Each such
difference is also written down, with its reason, in docs/engine-differences.md.

To run the suite against a server that is already running (started by hand inside the test network
namespace: another build, another version), set ``NBAGENTS_TEST_SERVER=URL,API_KEY,API_SECRET`` and pass
one ``--engine``: the server is then used instead of starting that engine, and that engine's known
differences apply to it.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest
from live_server import LiveServer
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
            only = mark.kwargs.get("only", {})  # other parameters the difference is limited to
            if mark.args[0] == engine and all(callspec.params.get(name) == value for name, value in only.items()):
                reason = mark.kwargs["reason"]
                item.add_marker(pytest.mark.xfail(strict=True, reason=f"known difference of {engine}: {reason}"))


EXTERNAL_SERVER_ENV = "NBAGENTS_TEST_SERVER"


if os.environ.get(EXTERNAL_SERVER_ENV):

    @pytest.fixture(scope="session")
    def lk_server(request: pytest.FixtureRequest) -> LiveServer:
        """Overrides the engine-starting fixture of tests/conftest.py with the given running server."""
        parts = os.environ[EXTERNAL_SERVER_ENV].split(",")
        if len(parts) != 3 or not all(parts):
            raise pytest.UsageError(f"{EXTERNAL_SERVER_ENV} must be URL,API_KEY,API_SECRET (e.g. "
                                    "ws://127.0.0.1:7880,devkey,secret)")
        if len(request.config.getoption("engine") or []) != 1:
            raise pytest.UsageError(f"with {EXTERNAL_SERVER_ENV}, pass exactly one --engine: the engine whose "
                                    "known differences apply to that server")
        url, key, secret = parts
        return LiveServer(request.param, url, key, secret)


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
