"""Shared fixtures. The whole suite runs inside scripts/netns (a private network namespace)."""

from __future__ import annotations

import os
import sys

import pytest
from live_server import LiveServer

ALL_ENGINES = ("embedded", "livekit-server")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--engine",
        action="append",
        choices=ALL_ENGINES,
        help="run server-facing tests against this engine (repeatable; default: all of them)",
    )


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get("NBAGENTS_NETNS") != "1":
        raise pytest.UsageError(
            "the tests open WebRTC connections and must run in the project's private network namespace: "
            "use scripts/test (or scripts/netns .venv/bin/python -m pytest ...)"
        )


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    session.config.stash[_EXIT_STATUS] = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """Leave without finalizing the interpreter once the results are reported.

    The livekit SDK's native threads can still call into Python while the interpreter finalizes, which
    aborts the process ("non-unwinding panic") after every test has passed. The servers and processes
    the tests started have been stopped by their fixtures, and nbagents' own processes watch this one.
    """
    status = config.stash.get(_EXIT_STATUS, None)
    if status is not None:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)


_EXIT_STATUS = pytest.StashKey[int]()


def selected_engines(config: pytest.Config) -> list[str]:
    return config.getoption("engine") or list(ALL_ENGINES)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "lk_server" in metafunc.fixturenames:
        metafunc.parametrize("lk_server", selected_engines(metafunc.config), indirect=True, scope="session")


@pytest.fixture(scope="session")
def lk_server(request: pytest.FixtureRequest):
    """A LiveKit server of the parametrized engine, shared by the whole session."""
    from nbagents.engines import make_engine

    engine = make_engine(request.param, **_test_options(request.param))
    url, key, secret = engine.start()
    try:
        yield LiveServer(request.param, url, key, secret)
    finally:
        engine.stop()


@pytest.fixture
def server(lk_server: LiveServer) -> LiveServer:
    """The session's LiveKit server, made the kernel's engine: jobs and simulated participants use it."""
    from nbagents.runtime.engine_session import shared_engine

    shared_engine().use((lk_server.url, lk_server.api_key, lk_server.api_secret))
    return lk_server


def _test_options(engine: str) -> dict:
    """Engine options for tests: short room timeouts so tests observe room closing quickly."""
    if engine == "livekit-server":
        from pathlib import Path

        return {"config_file": str(Path(__file__).parent / "livekit-server.yaml")}
    return {}
