"""The local engines' processes end with the process that started them, and a dead one can be restarted.

Engines are started from a background thread that has ended by the time the parent dies, as the kernel's
engine session does: a parent-death signal tied to that thread would already have fired.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from nbagents.engines.embedded import EmbeddedEngine
from nbagents.engines.livekit_server import LiveKitServerEngine

TEST_CONFIG = Path(__file__).parent / "livekit-server.yaml"
WAIT = 60.0

PARENT = textwrap.dedent(
    """
    import sys, threading, time
    from nbagents.engines import make_engine
    options = {"config_file": sys.argv[2]} if sys.argv[1] == "livekit-server" else {}
    engine = make_engine(sys.argv[1], **options)
    starter = threading.Thread(target=engine.start)
    starter.start()
    starter.join()
    print(engine.pid, getattr(engine, "supervisor_pid", None) or 0, flush=True)
    time.sleep(600)
    """
)


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _wait_gone(*pids: int) -> bool:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if all(_gone(pid) for pid in pids):
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("engine", ["embedded", "livekit-server"])
def test_the_engine_dies_with_a_sigkilled_parent_that_started_it_from_a_thread(engine: str) -> None:
    parent = subprocess.Popen([sys.executable, "-c", PARENT, engine, str(TEST_CONFIG)], stdout=subprocess.PIPE,
                              text=True)
    try:
        server_pid, supervisor_pid = map(int, parent.stdout.readline().split())
        assert not _gone(server_pid)
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        assert _wait_gone(server_pid, *([supervisor_pid] if supervisor_pid else [])), "the engine outlived its parent"
    finally:
        parent.kill()
        parent.wait()


def test_livekit_server_dies_with_its_supervisor() -> None:
    engine = LiveKitServerEngine(config_file=TEST_CONFIG)
    engine.start()
    try:
        server = psutil.Process(engine.pid)
        assert server.ppid() == engine.supervisor_pid
        assert server.name() == "livekit-server"
        os.kill(engine.supervisor_pid, signal.SIGKILL)
        assert _wait_gone(engine.pid), "livekit-server outlived its supervisor"
        assert engine.exited() == "killed by SIGKILL"
    finally:
        engine.stop()


@pytest.mark.parametrize("make", [lambda: LiveKitServerEngine(config_file=TEST_CONFIG), EmbeddedEngine])
def test_a_killed_engine_says_so_and_restarts_with_the_same_url_and_keys(make) -> None:
    engine = make()
    credentials = engine.start()
    try:
        assert engine.exited() is None
        os.kill(engine.pid, signal.SIGKILL)
        deadline = time.monotonic() + WAIT
        while engine.exited() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert engine.exited() == "killed by SIGKILL"
        assert engine.restart() == credentials
        assert engine.exited() is None and not _gone(engine.pid)
    finally:
        engine.stop()
    assert engine.exited() is None  # stopped on purpose is not "died"
