"""The real livekit-server binary, started as a dev-mode subprocess bound to 127.0.0.1.

It is the reference implementation of the LiveKit protocol: users who have it get exactly the server they
deploy later, and the test suite runs its conformance tests against it to keep the embedded server honest.

It runs under nbagents' small supervisor (``nbagents._lifeline``), in its own session: livekit-server is a Go
program that cannot watch its parent, so the supervisor does, and stops it when the process that started
the engine dies, even by SIGKILL; if the supervisor itself is killed, livekit-server gets SIGKILL from the
kernel. Its own session keeps a kernel interrupt (SIGINT to the kernel's process group) away from it.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import secrets
import select
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections import deque
from pathlib import Path

from nbagents import _lifeline
from nbagents.engines.base import Credentials, Engine, EngineError, describe_exit

BINARY_ENV = "NBAGENTS_LIVEKIT_SERVER"
DEFAULT_PORT = 7880
DEFAULT_UDP_PORT = 7882
HOST = "127.0.0.1"

# Used when no config file is given. Development mode as `livekit-server --dev` has it, but with exactly
# one ICE address, 127.0.0.1, and no ICE-TCP listener (livekit-server binds that one on every interface).
# Clients on the same machine reach 127.0.0.1 from whatever address they gather candidates on.
DEFAULT_CONFIG = """\
development: true
logging:
  level: info
rtc:
  tcp_port: 0
  node_ip: 127.0.0.1
  use_external_ip: false
  enable_loopback_candidate: true
  ips:
    includes:
      - 127.0.0.1/32
"""

_HOW_TO_GET_IT = (
    "build it once with `scripts/install-livekit-server` from a checkout of nbagents (needs Go; the binary "
    "is cached in ~/.cache/nbagents/), or put a livekit-server binary on PATH, or set "
    f"{BINARY_ENV}=/path/to/livekit-server"
)


def cache_root() -> Path:
    """Where scripts/install-livekit-server caches its builds."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "nbagents"


def cached_binaries() -> list[Path]:
    """Binaries built by scripts/install-livekit-server, newest version first."""

    def version_key(path: Path) -> tuple[int, ...]:
        return tuple(int(n) for n in re.findall(r"\d+", path.parent.name))

    found = [p for p in cache_root().glob("livekit-server-v*/livekit-server") if os.access(p, os.X_OK)]
    return sorted(found, key=version_key, reverse=True)


def configured_binary() -> Path | None:
    """A livekit-server named by NBAGENTS_LIVEKIT_SERVER or found on PATH (what engine selection looks at)."""
    explicit = os.environ.get(BINARY_ENV)
    if explicit:
        return Path(explicit)
    on_path = shutil.which("livekit-server")
    return Path(on_path) if on_path else None


def find_binary(binary: str | os.PathLike[str] | None = None) -> Path:
    """The binary to run: the given path, else NBAGENTS_LIVEKIT_SERVER, else PATH, else the build cache."""
    if binary is not None:
        candidate, source = Path(binary), "the binary argument"
    elif os.environ.get(BINARY_ENV):
        candidate, source = Path(os.environ[BINARY_ENV]), BINARY_ENV
    else:
        located = configured_binary() or next(iter(cached_binaries()), None)
        if located is None:
            raise EngineError(f"livekit-server was not found (not on PATH, not in {cache_root()}): {_HOW_TO_GET_IT}")
        return located
    if not candidate.is_file():
        raise EngineError(f"livekit-server not found at {candidate} (from {source}): {_HOW_TO_GET_IT}")
    if not os.access(candidate, os.X_OK):
        raise EngineError(f"{candidate} (from {source}) is not executable: chmod +x it, or {_HOW_TO_GET_IT}")
    return candidate


def _port_is_free(port: int, kind: int) -> bool:
    with socket.socket(socket.AF_INET, kind) as sock:
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Go's listeners do
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
        return True


def _free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _pick_port(preferred: int, kind: int) -> int:
    return preferred if _port_is_free(preferred, kind) else _free_port(kind)


def _child_environment(api_key: str, api_secret: str) -> dict[str, str]:
    """The caller's environment minus variables livekit-server would read as config, plus our keys."""
    config_vars = {"NODE_IP", "UDP_PORT", "REDIS_HOST", "REDIS_PASSWORD"}
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVEKIT_") and k not in config_vars}
    # The value is YAML; JSON strings are valid YAML scalars, so any key or secret survives quoting.
    env["LIVEKIT_KEYS"] = f"{json.dumps(api_key)}: {json.dumps(api_secret)}"
    return env


class LiveKitServerEngine(Engine):
    """Runs livekit-server in development mode on 127.0.0.1 with its own API key and secret."""

    name = "livekit-server"

    def __init__(
        self,
        binary: str | os.PathLike[str] | None = None,
        config_file: str | os.PathLike[str] | None = None,
        port: int | None = None,
        api_key: str | None = None,
        api_secret: str | None = None,
        start_timeout: float = 60.0,
    ) -> None:
        if api_key is not None and api_secret is None:
            raise EngineError("give api_secret together with api_key (or neither, for a random secret)")
        self.binary_option = binary
        self.config_file = Path(config_file) if config_file is not None else None
        self.requested_port = port
        self.api_key = api_key or "devkey"
        self.api_secret = api_secret or secrets.token_urlsafe(32)
        self.start_timeout = start_timeout
        self.binary: Path | None = None
        self.port: int | None = None
        self.udp_port: int | None = None
        self.log_path: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None  # the supervisor
        self._server_pid: int | None = None
        self._credentials: Credentials | None = None

    @property
    def pid(self) -> int | None:
        """The livekit-server process id while it runs."""
        return self._server_pid if self._process is not None else None

    @property
    def supervisor_pid(self) -> int | None:
        """The supervisor's process id (livekit-server's parent) while it runs."""
        return self._process.pid if self._process is not None else None

    def exited(self) -> str | None:
        process = self._process
        if process is None or process.poll() is None:
            return None
        return describe_exit(process.returncode)

    def restart(self) -> Credentials:
        """Start livekit-server again after it died: same key and secret, the same port if it is free."""
        port = self.port
        self.stop()
        if self.requested_port is None and port is not None and _port_is_free(port, socket.SOCK_STREAM):
            self._preferred_port = port
        return self.start()

    def describe(self) -> str:
        where = f" at {self._credentials.url}" if self._credentials else ""
        return f"livekit-server{where} ({self.binary or 'binary not located yet'})"

    def start(self) -> Credentials:
        if self._credentials is not None:
            return self._credentials
        self.binary = find_binary(self.binary_option)
        if self.config_file is not None and not self.config_file.is_file():
            raise EngineError(f"livekit-server config file {self.config_file} does not exist")
        self.port = self._choose_http_port()
        self.udp_port = _pick_port(DEFAULT_UDP_PORT, socket.SOCK_DGRAM)
        if self.udp_port == self.port:  # a free UDP port may coincide with our TCP port; harmless, but confusing
            self.udp_port = _free_port(socket.SOCK_DGRAM)

        log_fd, log_name = tempfile.mkstemp(prefix="nbagents-livekit-server-", suffix=".log")
        self.log_path = Path(log_name)
        command = [str(self.binary), *self._config_args(), "--bind", HOST, "--port", str(self.port)]
        command += ["--udp-port", str(self.udp_port)]
        pid_r, pid_w = os.pipe()
        try:
            # livekit-server needs a second SIGTERM to close its rooms at once (see _terminate)
            self._process = subprocess.Popen(
                _lifeline.supervisor_command(command, pid_fd=pid_w, stop_signals="TERM:0.5,TERM:5,KILL"),
                stdin=subprocess.DEVNULL,
                stdout=log_fd,
                stderr=subprocess.STDOUT,
                env=_child_environment(self.api_key, self.api_secret),
                pass_fds=[pid_w],
                start_new_session=True,
            )
        except OSError as exc:
            os.close(pid_r)
            raise EngineError(f"could not run {self.binary}: {exc}") from exc
        finally:
            os.close(log_fd)
            os.close(pid_w)
        atexit.register(self.stop)
        try:
            self._server_pid = self._read_server_pid(pid_r)
            self._wait_until_ready()
        except BaseException:
            self._terminate()
            raise
        self._credentials = Credentials(f"ws://{HOST}:{self.port}", self.api_key, self.api_secret)
        return self._credentials

    def stop(self) -> None:
        was_running = self._credentials is not None
        self._terminate()
        if was_running and self.log_path is not None:  # a failed start keeps its log for the error message
            self.log_path.unlink(missing_ok=True)

    def _read_server_pid(self, fd: int) -> int | None:
        """The pid the supervisor reports once it has forked livekit-server (None if it exited first)."""
        try:
            data = b""
            deadline = time.monotonic() + self.start_timeout
            while not data.endswith(b"\n"):
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                    return None
                chunk = os.read(fd, 64)
                if not chunk:
                    return None
                data += chunk
            return int(data)
        finally:
            os.close(fd)

    def _terminate(self) -> None:
        process, self._process = self._process, None
        self._credentials = None
        atexit.unregister(self.stop)
        if process is None:
            return
        # On the first signal livekit-server waits for every participant to leave; the second one makes it
        # close the rooms and exit at once, which is what stopping a dev server means.
        for send_signal, grace in ((process.terminate, 0.5), (process.terminate, 10.0), (process.kill, None)):
            if process.poll() is not None:
                break
            send_signal()
            try:
                process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                continue
        process.wait()

    def log_tail(self, lines: int = 20) -> str:
        """The last lines the server wrote (its log is kept in a temporary file)."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        with open(self.log_path, encoding="utf-8", errors="replace") as log:
            return "".join(deque(log, maxlen=lines))

    def _config_args(self) -> list[str]:
        if self.config_file is not None:
            return ["--config", str(self.config_file)]
        return ["--config-body", DEFAULT_CONFIG]

    _preferred_port: int | None = None  # a restart keeps the port it had, when it is still free

    def _choose_http_port(self) -> int:
        if self.requested_port is None:
            preferred, self._preferred_port = self._preferred_port or DEFAULT_PORT, None
            return _pick_port(preferred, socket.SOCK_STREAM)
        if not _port_is_free(self.requested_port, socket.SOCK_STREAM):
            raise EngineError(
                f"port {self.requested_port} on {HOST} is already in use: stop what listens there, "
                "or leave the port unset to let nbagents pick a free one"
            )
        return self.requested_port

    def _wait_until_ready(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + self.start_timeout
        url = f"http://{HOST}:{self.port}/"
        while True:
            code = self._process.poll()
            if code is not None:
                raise EngineError(
                    f"livekit-server ({self.binary}) exited while starting (exit code {code})."
                    f" Its log ({self.log_path}) ends with:\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise EngineError(
                    f"livekit-server did not answer on {url} within {self.start_timeout:.0f} s."
                    f" Its log ({self.log_path}) ends with:\n{self.log_tail()}"
                )
            time.sleep(0.05)
