"""Run the server as a child process: ``DevServer`` starts it, waits until it is ready, and stops it.

The child prints one JSON line on stdout when it accepts connections (``READY_KEY``); everything else it
says goes to stderr, kept in a temporary log file so a failed start can quote it. The API secret is passed
through the environment, never the command line (other users can read command lines). The child watches
its parent with a pidfd (``nbagents._lifeline``) and exits when the parent is gone, however it died, so a
crashed or SIGKILLed notebook kernel leaves no server behind. It runs in its own session, so a signal to
the kernel's process group (Jupyter's "interrupt kernel" sends SIGINT to it) does not stop it.
"""

from __future__ import annotations

import json
import os
import secrets
import selectors
import subprocess
import sys
import tempfile
import time
from typing import IO, Any

from nbagents.engines.base import Credentials, EngineError, describe_exit

READY_KEY = "nbagents_server"
SECRET_ENV = "NBAGENTS_SERVER_API_SECRET"
DEFAULT_API_KEY = "devkey"
START_TIMEOUT = 60.0


def ready_line(url: str, api_key: str, api_secret: str) -> str:
    return json.dumps({READY_KEY: "ready", "url": url, "api_key": api_key, "api_secret": api_secret})


def parse_ready_line(line: str) -> Credentials | None:
    try:
        data = json.loads(line)
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get(READY_KEY) != "ready":
        return None
    return Credentials(data["url"], data["api_key"], data["api_secret"])


class DevServer:
    """The embedded LiveKit-protocol dev server in a child process.

    >>> with DevServer() as (url, api_key, api_secret):
    ...     ...  # connect rtc.Room / livekit.api clients here
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, api_key: str | None = None,
                 api_secret: str | None = None, verbose: bool = False, empty_timeout: float | None = None,
                 departure_timeout: float | None = None, start_timeout: float = START_TIMEOUT,
                 simulate_loss: float = 0.0) -> None:
        self.host = host
        self.port = port
        self.api_key = api_key or DEFAULT_API_KEY
        self.api_secret = api_secret or secrets.token_urlsafe(32)
        self.verbose = verbose
        self.empty_timeout = empty_timeout
        self.departure_timeout = departure_timeout
        self.start_timeout = start_timeout
        self.simulate_loss = simulate_loss  # percent of media packets dropped each way (nbagents server --simulate-loss)
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._credentials: Credentials | None = None

    @property
    def credentials(self) -> Credentials | None:
        return self._credentials

    @property
    def pid(self) -> int | None:
        """The server process id while it runs (benchmarks read its CPU time)."""
        return self._proc.pid if self._proc is not None else None

    def exited(self) -> str | None:
        """How the server process ended, once it died on its own (None while it runs or after ``stop()``)."""
        proc = self._proc
        if proc is None or proc.poll() is None:
            return None
        return describe_exit(proc.returncode)

    def restart(self) -> Credentials:
        """Start the server again after it died: same key and secret, and the same port when it is free."""
        port = self.port
        if self._credentials is not None:
            port = int(self._credentials.url.rsplit(":", 1)[1])
        self.stop()
        original, self.port = self.port, port
        try:
            return self.start()
        except EngineError:
            if port == original:
                raise
            self.port = original  # that port is taken now: any free one
            return self.start()
        finally:
            self.port = original

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "nbagents.server", "--host", self.host, "--port", str(self.port),
               "--api-key", self.api_key, "--parent-pid", str(os.getpid()), "--ready-json"]
        if self.empty_timeout is not None:
            cmd += ["--empty-timeout", str(self.empty_timeout)]
        if self.departure_timeout is not None:
            cmd += ["--departure-timeout", str(self.departure_timeout)]
        if self.simulate_loss:
            cmd += ["--simulate-loss", str(self.simulate_loss)]
        if self.verbose:
            cmd.append("-v")
        return cmd

    def start(self) -> Credentials:
        if self._credentials is not None:
            return self._credentials
        env = dict(os.environ, **{SECRET_ENV: self.api_secret})
        self._log = None if self.verbose else tempfile.TemporaryFile(prefix="nbagents-server-", suffix=".log")
        self._proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                      stderr=self._log, env=env, start_new_session=True)
        try:
            self._credentials = self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self._credentials

    def _wait_ready(self) -> Credentials:
        assert self._proc is not None and self._proc.stdout is not None
        deadline = time.monotonic() + self.start_timeout
        with selectors.DefaultSelector() as selector:
            selector.register(self._proc.stdout, selectors.EVENT_READ)
            buffered = b""
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise EngineError(f"the embedded server did not become ready within {self.start_timeout:.0f} s"
                                      f"{self._stderr_tail()}")
                if not selector.select(timeout=min(remaining, 0.5)):
                    if self._proc.poll() is not None:
                        raise self._exited_error()
                    continue
                chunk = os.read(self._proc.stdout.fileno(), 65536)
                if not chunk:
                    self._proc.wait(timeout=5)
                    raise self._exited_error()
                buffered += chunk
                *lines, buffered = buffered.split(b"\n")
                for line in lines:
                    credentials = parse_ready_line(line.decode(errors="replace"))
                    if credentials is not None:
                        return credentials

    def _exited_error(self) -> EngineError:
        code = self._proc.returncode if self._proc is not None else None
        return EngineError(f"the embedded server exited during start-up (exit code {code}){self._stderr_tail()}")

    def _stderr_tail(self, limit: int = 4000) -> str:
        if self._log is None:
            return " (its output went to this process's stderr)"
        self._log.seek(0)
        text = self._log.read().decode(errors="replace")[-limit:].strip()
        return f"; its stderr:\n{text}" if text else "; it wrote nothing to stderr"

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        self._credentials = None
        if proc is not None:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> Credentials:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def __del__(self) -> None:
        if getattr(self, "_proc", None) is not None:
            self.stop()
