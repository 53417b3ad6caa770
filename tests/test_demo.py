"""``nbagents demo`` as a user runs it: a subprocess on the default engine, narrated, with an exit status."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

DEMO_TIMEOUT = 240


def _nbagents_command() -> list[str]:
    script = Path(sys.executable).with_name("nbagents")
    return [str(script)] if script.exists() else [sys.executable, "-m", "nbagents.cli"]


def _run_demo(cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k not in ("LIVEKIT_URL", "NBAGENTS_ENGINE")}
    return subprocess.run(
        [*_nbagents_command(), "demo"],
        cwd=cwd,
        env={**environ, **env},
        capture_output=True,
        text=True,
        timeout=DEMO_TIMEOUT,
    )


def test_demo_runs_the_example_end_to_end_and_narrates_it(tmp_path):
    run = _run_demo(tmp_path)
    assert run.returncode == 0, f"stdout:\n{run.stdout}\nstderr:\n{run.stderr}"
    out = run.stdout
    steps = [
        r"launched job (AJ_\w+)",
        r"agent '[^']+' connected to room",
        r"agent sees 'alice' join \(kind standard, attributes \{'user.language': 'en'\}\)",
        r"agent subscribed to the audio track TR_\w+ of 'alice'",
        r"agent receives audio from 'alice': 48000 Hz, 1 channel\(s\), 480 samples per frame",
        r"'alice' spoke a 440 Hz tone",
        r"agent sees 'alice' change attributes: \{'user.language': 'fr'\}",
        r"'alice' received 'hello world' from 'agent-",
        r"'alice' replies 'thanks!'",
        r"agent receives data from 'alice': 'thanks!'",
        r"shutdown hook save_state finished",
        r"job ended: succeeded, shutdown reason 'greeted the participant'",
        r"demo OK in",
    ]
    for step in steps:
        assert re.search(step, out), f"missing step {step!r} in:\n{out}"
    assert all(re.match(r"\s*\d+\.\d{3} s  ", line) for line in out.splitlines()[1:-1]), out

    job_id = re.search(steps[0], out).group(1)
    result = json.loads((tmp_path / ".nbagents" / "jobs" / job_id / "result.json").read_text())
    persisted = result["persisted"]["save_state"]
    assert persisted["participant"] == "alice"
    assert (persisted["first_language"], persisted["language"]) == ("en", "fr")
    assert persisted["audio_frames"] > 0
    assert persisted["reply"] == "thanks!"
    assert abs(persisted["loudest_hz"] - 440.0) <= 10


def test_demo_fails_with_a_clear_message_and_nonzero_status(tmp_path):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run = _run_demo(
        tmp_path,
        NBAGENTS_ENGINE="remote",
        LIVEKIT_URL=f"ws://127.0.0.1:{port}",
        LIVEKIT_API_KEY="devkey",
        LIVEKIT_API_SECRET="a-secret-long-enough-for-hmac-sha256-tokens",
    )
    assert run.returncode == 1, run.stdout + run.stderr
    assert "demo OK" not in run.stdout
    assert re.search(rf"demo FAILED: .*ws://127.0.0.1:{port}.*refused", run.stderr), run.stderr
