"""The server as a process: DevServer start/stop, readiness, secrets, start-up errors, parent death, CLI."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from nbagents.engines import EngineError, make_engine
from nbagents.server import DevServer


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie has exited
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _wait_until(predicate, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


def _http_get(url: str) -> str:
    with urllib.request.urlopen(url.replace("ws://", "http://", 1) + "/", timeout=10) as response:
        return response.read().decode()


def test_dev_server_is_ready_when_start_returns_and_gone_after_stop():
    server = DevServer()
    url, key, secret = server.start()
    pid = server.pid
    try:
        assert url.startswith("ws://127.0.0.1:")
        assert _http_get(url) == "OK"
    finally:
        server.stop()
    assert not _alive(pid)


def test_each_run_gets_its_own_random_secret_unless_one_is_given():
    with DevServer() as first, DevServer() as second, DevServer(api_key="k", api_secret="given") as third:
        assert first.api_secret != second.api_secret
        assert len(first.api_secret) >= 32
        assert (third.api_key, third.api_secret) == ("k", "given")
        assert first.url != second.url  # port 0: each picks a free port


def test_embedded_engine_wraps_dev_server():
    engine = make_engine("embedded")
    assert engine.name == "embedded" and engine.credentials is None
    with engine as credentials:
        assert engine.credentials == credentials
        assert _http_get(credentials.url) == "OK"
    assert engine.credentials is None


def test_a_port_in_use_fails_start_with_the_servers_reason():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(EngineError, match=f"cannot listen on 127.0.0.1:{port}"):
            DevServer(port=port).start()


def test_the_server_exits_when_its_parent_dies():
    parent = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time\n"
         "from nbagents.server import DevServer\n"
         "s = DevServer(); s.start(); print(s.pid, flush=True); time.sleep(600)\n"],
        stdout=subprocess.PIPE, text=True)
    try:
        server_pid = int(parent.stdout.readline())
        assert _alive(server_pid)
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        assert _wait_until(lambda: not _alive(server_pid)), "server outlived its parent"
    finally:
        parent.kill()
        parent.wait()


def test_cli_prints_url_key_and_secret():
    proc = subprocess.Popen([sys.executable, "-m", "nbagents.cli", "server", "--port", "0", "--api-key", "mykey",
                             "--api-secret", "mysecret"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        lines = [proc.stdout.readline() for _ in range(4)]
        text = "".join(lines)
        assert "ws://127.0.0.1:" in text and "mykey" in text and "mysecret" in text
        url = next(word for line in lines for word in line.split() if word.startswith("ws://"))
        assert _http_get(url) == "OK"
    finally:
        proc.terminate()
        assert proc.wait(timeout=15) == 0


def test_cli_rejects_a_bad_port_clearly():
    result = subprocess.run([sys.executable, "-m", "nbagents.cli", "server", "--port", "70000"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "out of range" in result.stderr
