"""Engines: which one nbagents selects, and the real livekit-server and remote engines at work."""

from __future__ import annotations

import http.server
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from livekit import api, rtc

from nbagents.engines import ENGINES, EngineError, describe_engine, select_engine
from nbagents.engines.embedded import EmbeddedEngine
from nbagents.engines.livekit_server import DEFAULT_PORT, LiveKitServerEngine, find_binary
from nbagents.engines.remote import RemoteEngine

from conftest import selected_engines

TEST_CONFIG = Path(__file__).parent / "livekit-server.yaml"
SECRET = "a-secret-long-enough-for-hmac-sha256-keys"


# --- selection ------------------------------------------------------------------------------------


@pytest.fixture
def fake_livekit_server_on_path(tmp_path: Path) -> Path:
    """A directory holding an executable named livekit-server (selection only looks it up)."""
    binary = tmp_path / "livekit-server"
    binary.write_text("#!/bin/sh\nexit 1\n")
    binary.chmod(0o755)
    return tmp_path


def test_nothing_configured_selects_the_embedded_server(tmp_path: Path) -> None:
    engine = select_engine({"PATH": str(tmp_path)})
    assert isinstance(engine, EmbeddedEngine)
    assert "no LIVEKIT_URL" in describe_engine(engine)


def test_livekit_url_selects_the_remote_engine_with_its_credentials(fake_livekit_server_on_path: Path) -> None:
    environ = {
        "PATH": str(fake_livekit_server_on_path),
        "LIVEKIT_URL": "wss://example.invalid",
        "LIVEKIT_API_KEY": "key",
        "LIVEKIT_API_SECRET": SECRET,
    }
    engine = select_engine(environ)
    assert isinstance(engine, RemoteEngine)
    assert (engine.url, engine.api_key, engine.api_secret) == ("wss://example.invalid", "key", SECRET)
    assert "LIVEKIT_URL is set" in describe_engine(engine)


def test_livekit_server_on_path_selects_the_livekit_server_engine(fake_livekit_server_on_path: Path) -> None:
    engine = select_engine({"PATH": str(fake_livekit_server_on_path)})
    assert isinstance(engine, LiveKitServerEngine)
    assert "livekit-server is on PATH" in describe_engine(engine)


def test_configured_binary_path_selects_the_livekit_server_engine(tmp_path: Path) -> None:
    binary = tmp_path / "my-livekit-server"
    engine = select_engine({"PATH": "", "NBAGENTS_LIVEKIT_SERVER": str(binary)})
    assert isinstance(engine, LiveKitServerEngine)
    assert engine.binary_option == str(binary)


@pytest.mark.parametrize("name", list(ENGINES))
def test_the_override_variable_wins_over_everything(name: str, fake_livekit_server_on_path: Path) -> None:
    environ = {"PATH": str(fake_livekit_server_on_path), "LIVEKIT_URL": "ws://127.0.0.1:1", "NBAGENTS_ENGINE": name}
    engine = select_engine(environ)
    assert engine.name == name
    assert f"NBAGENTS_ENGINE={name}" in describe_engine(engine)


def test_an_unknown_override_value_is_a_clear_error() -> None:
    with pytest.raises(EngineError, match=r"NBAGENTS_ENGINE='cloud' is not an engine: use one of embedded, "):
        select_engine({"NBAGENTS_ENGINE": "cloud"})


# --- the livekit-server engine --------------------------------------------------------------------


def _join_token(key: str, secret: str, identity: str, room: str) -> str:
    grants = api.VideoGrants(room_join=True, room=room)
    return api.AccessToken(key, secret).with_identity(identity).with_grants(grants).to_jwt()


async def _room_names(url: str, key: str, secret: str) -> list[str]:
    async with api.LiveKitAPI(url, key, secret) as lkapi:
        response = await lkapi.room.list_rooms(api.ListRoomsRequest())
    return [room.name for room in response.rooms]


@pytest.fixture(scope="module")
def livekit_server_selected(request: pytest.FixtureRequest) -> None:
    """Skips tests that start the real livekit-server when the session runs other engines only (--engine)."""
    if "livekit-server" not in selected_engines(request.config):
        pytest.skip("the livekit-server engine is not selected (--engine)")


@pytest.fixture(scope="module")
def running_livekit_server(livekit_server_selected: None) -> Iterator[LiveKitServerEngine]:
    engine = LiveKitServerEngine(config_file=TEST_CONFIG)
    engine.start()
    yield engine
    engine.stop()


async def test_livekit_server_accepts_sdk_connections_and_service_calls(
    running_livekit_server: LiveKitServerEngine,
) -> None:
    url, key, secret = running_livekit_server.credentials
    assert url.startswith("ws://127.0.0.1:")
    room = rtc.Room()
    await room.connect(url, _join_token(key, secret, "alice", "engines-sdk"))
    try:
        assert room.local_participant.sid.startswith("PA_")
        assert "engines-sdk" in await _room_names(url, key, secret)
    finally:
        await room.disconnect()


async def test_stop_ends_the_livekit_server_process(livekit_server_selected: None) -> None:
    engine = LiveKitServerEngine(config_file=TEST_CONFIG)
    url, key, secret = engine.start()
    process = psutil.Process(engine.pid)
    room = rtc.Room()
    await room.connect(url, _join_token(key, secret, "bob", "engines-stop"))  # stop must not wait for bob
    engine.stop()
    assert not process.is_running()
    assert engine.credentials is None and engine.pid is None
    await room.disconnect()
    engine.stop()  # a second stop is harmless


async def test_a_taken_port_makes_the_engine_pick_free_ones(running_livekit_server: LiveKitServerEngine) -> None:
    blocker = socket.socket()
    blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        blocker.bind(("127.0.0.1", DEFAULT_PORT))
        blocker.listen()
    except OSError:
        pass  # another server of this test session already holds it, which is just as taken
    try:
        with LiveKitServerEngine(config_file=TEST_CONFIG) as (url, key, secret):
            assert url != f"ws://127.0.0.1:{DEFAULT_PORT}"
            assert url != running_livekit_server.credentials.url
            assert await _room_names(url, key, secret) == []
    finally:
        blocker.close()


def test_an_explicit_port_that_is_taken_is_a_clear_error(running_livekit_server: LiveKitServerEngine) -> None:
    engine = LiveKitServerEngine(config_file=TEST_CONFIG, port=running_livekit_server.port)
    with pytest.raises(EngineError, match=rf"port {running_livekit_server.port} on 127.0.0.1 is already in use"):
        engine.start()


def test_a_failed_start_shows_the_server_log(tmp_path: Path, livekit_server_selected: None) -> None:
    config = tmp_path / "broken.yaml"
    config.write_text("rtc:\n  no_such_setting: 1\n")
    engine = LiveKitServerEngine(config_file=config)
    with pytest.raises(EngineError, match=r"(?s)exited while starting.*no_such_setting") as failure:
        engine.start()
    assert engine.pid is None
    assert "no_such_setting" in Path(str(failure.value).split("Its log (")[1].split(")")[0]).read_text()


def test_a_missing_binary_says_how_to_get_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(EngineError, match=r"not found at .*scripts/install-livekit-server"):
        LiveKitServerEngine(binary=tmp_path / "livekit-server").start()
    monkeypatch.delenv("NBAGENTS_LIVEKIT_SERVER", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(EngineError, match=r"livekit-server was not found .*scripts/install-livekit-server"):
        find_binary()


def test_the_server_is_stopped_when_the_interpreter_exits(livekit_server_selected: None) -> None:
    script = textwrap.dedent(
        f"""
        from nbagents.engines.livekit_server import LiveKitServerEngine
        engine = LiveKitServerEngine(config_file={str(TEST_CONFIG)!r})
        engine.start()
        print(engine.pid, flush=True)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    server_pid = int(done.stdout.split()[-1])
    assert not psutil.pid_exists(server_pid) or psutil.Process(server_pid).status() == psutil.STATUS_ZOMBIE


# --- the remote engine ----------------------------------------------------------------------------


async def test_remote_engine_uses_a_running_server(running_livekit_server: LiveKitServerEngine) -> None:
    url, key, secret = running_livekit_server.credentials
    with RemoteEngine(url, key, secret) as credentials:
        assert credentials == (url, key, secret)
        room = rtc.Room()
        await room.connect(credentials.url, _join_token(key, secret, "carol", "engines-remote"))
        await room.disconnect()


def test_remote_engine_reports_a_closed_port() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    with pytest.raises(EngineError, match=r"refused the connection .*LIVEKIT_URL"):
        RemoteEngine(f"ws://127.0.0.1:{closed_port}", "key", SECRET).start()


def test_remote_engine_reports_a_wrong_secret(running_livekit_server: LiveKitServerEngine) -> None:
    url, key, _ = running_livekit_server.credentials
    with pytest.raises(EngineError, match=r"rejected the API key/secret .*LIVEKIT_API_SECRET"):
        RemoteEngine(url, key, "not-the-secret-not-the-secret-not-the-secret").start()


def test_remote_engine_reports_a_server_that_never_answers() -> None:
    with socket.socket() as silent:  # accepts connections (backlog) but never replies
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"ws://127.0.0.1:{silent.getsockname()[1]}"
        with pytest.raises(EngineError, match=r"did not answer within 1 s"):
            RemoteEngine(url, "key", SECRET, timeout=1).start()


class _NotFoundHandler(http.server.BaseHTTPRequestHandler):
    """A web server that is not a LiveKit server: every request gets 404."""

    def do_POST(self) -> None:  # noqa: N802 - the name http.server dispatches to
        self.send_error(404)

    def log_message(self, *args: object) -> None:
        pass


def test_remote_engine_reports_a_url_that_is_not_a_livekit_server() -> None:
    server = http.server.HTTPServer(("127.0.0.1", 0), _NotFoundHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"ws://127.0.0.1:{server.server_address[1]}"
        with pytest.raises(EngineError, match=r"has no LiveKit service API .*is LIVEKIT_URL the URL of a LiveKit server"):
            RemoteEngine(url, "key", SECRET).start()
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("url", ["127.0.0.1:7880", "ftp://host", "ws://"])
def test_remote_engine_rejects_a_malformed_url(url: str) -> None:
    with pytest.raises(EngineError, match=r"is not a LiveKit server URL"):
        RemoteEngine(url, "key", SECRET).start()


def test_remote_engine_names_missing_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(EngineError, match=r"needs LIVEKIT_URL, LIVEKIT_API_KEY, LIVEKIT_API_SECRET"):
        RemoteEngine().start()
