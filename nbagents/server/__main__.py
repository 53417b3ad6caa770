"""``nbagents server`` / ``python -m nbagents.server``: run the embedded dev server in the foreground."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import os
import secrets
import signal
import sys

from aiohttp import web

from nbagents import _lifeline
from nbagents.server import _aiortc, forwarding
from nbagents.server.app import make_app
from nbagents.server.process import DEFAULT_API_KEY, SECRET_ENV, ready_line
from nbagents.server.rooms import DEFAULT_DEPARTURE_TIMEOUT, DEFAULT_EMPTY_TIMEOUT, RoomDefaults

log = logging.getLogger("nbagents.server")


def _seconds(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is negative; give a number of seconds >= 0")
    return value


def _percent(text: str) -> float:
    value = float(text)
    if not 0 <= value < 100:
        raise argparse.ArgumentTypeError(f"{text!r} is not a percentage from 0 to below 100")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nbagents server",
        description="Run the embedded LiveKit-protocol dev server (audio, video and data; for development).")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=7880, help="port to bind, 0 for any free port (default 7880)")
    parser.add_argument("--api-key", help=f"API key clients sign tokens with (default {DEFAULT_API_KEY!r})")
    parser.add_argument("--api-secret", help=f"API secret (default: ${SECRET_ENV} or a random one per run)")
    parser.add_argument("--ice-address", action="append", metavar="ADDR",
                        help="address offered as ICE host candidate (repeatable; default: the --host address)")
    parser.add_argument("--empty-timeout", type=_seconds, default=DEFAULT_EMPTY_TIMEOUT, metavar="S",
                        help=f"close a room nobody joined after S seconds (default {DEFAULT_EMPTY_TIMEOUT:.0f})")
    parser.add_argument("--departure-timeout", type=_seconds, default=DEFAULT_DEPARTURE_TIMEOUT, metavar="S",
                        help="close a room S seconds after its last participant left "
                             f"(default {DEFAULT_DEPARTURE_TIMEOUT:.0f})")
    parser.add_argument("--simulate-loss", type=_percent, default=0.0, metavar="PCT",
                        help="drop PCT %% of the media packets the server receives and sends, to try how clients "
                             "and agents cope with a lossy network (default 0)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every signaling step")
    parser.add_argument("--parent-pid", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--ready-json", action="store_true", help=argparse.SUPPRESS)
    return parser


def _ice_addresses(host: str, explicit: list[str] | None) -> list[str] | None:
    """Addresses to offer as ICE candidates; None keeps aioice's choice (every interface)."""
    if explicit:
        return explicit
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return ["127.0.0.1"] if host == "localhost" else None
    return None if address.is_unspecified else [host]


async def _watch_parent(parent_pid: int, stop: asyncio.Event) -> None:
    """Stop when the parent exits, however it exits (a pidfd watch; ``nbagents._lifeline``).

    Not PR_SET_PDEATHSIG, which fires when the *thread* that started the child ends — a server started from
    a notebook's worker thread would die with that thread.
    """
    await _lifeline.parent_gone(parent_pid)
    log.warning("parent process %d is gone; stopping", parent_pid)
    stop.set()


async def serve(args: argparse.Namespace, api_key: str, api_secret: str) -> None:
    app = make_app({api_key: api_secret}, RoomDefaults(args.empty_timeout, args.departure_timeout))
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=3)
    await runner.setup()
    site = web.TCPSite(runner, args.host, args.port, reuse_address=True)
    try:
        await site.start()
    except OSError as exc:
        raise SystemExit(f"nbagents server: cannot listen on {args.host}:{args.port}: {exc.strerror}; "
                         "choose another --port (0 picks a free one)") from None
    port = runner.addresses[0][1]
    host = "127.0.0.1" if args.host in ("0.0.0.0", "") else args.host
    host = f"[{host}]" if ":" in host else host
    url = f"ws://{host}:{port}"
    if args.ready_json:
        print(ready_line(url, api_key, api_secret), flush=True)
    else:
        print(f"nbagents embedded LiveKit server\n  url:        {url}\n  api key:    {api_key}\n"
              f"  api secret: {api_secret}\nPress Ctrl+C to stop.", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    watcher = asyncio.ensure_future(_watch_parent(args.parent_pid, stop)) if args.parent_pid else None
    try:
        await stop.wait()
    finally:
        if watcher is not None:
            watcher.cancel()
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not 0 <= args.port <= 65535:
        print(f"nbagents server: --port {args.port} is out of range 0..65535", file=sys.stderr)
        return 2
    api_key = args.api_key or DEFAULT_API_KEY
    api_secret = args.api_secret or os.environ.get(SECRET_ENV) or secrets.token_urlsafe(32)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    for noisy in ("aioice", "aiortc", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        _aiortc.check_internals()
    except RuntimeError as exc:
        print(f"nbagents server: {exc}", file=sys.stderr)
        return 1
    forwarding.SIMULATED_LOSS = args.simulate_loss / 100
    if args.simulate_loss:
        log.warning("simulating a lossy network: %g %% of media packets are dropped", args.simulate_loss)
    addresses = _ice_addresses(args.host, args.ice_address)
    if addresses is not None:
        _aiortc.restrict_host_addresses(addresses)
    try:
        asyncio.run(serve(args, api_key, api_secret))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
