"""The ``nbagents`` command line."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nbagents", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    server = sub.add_parser("server", help="run the embedded LiveKit-protocol dev server")
    server.set_defaults(run=_run_server)
    args, rest = parser.parse_known_args(argv)
    return args.run(rest)


def _run_server(argv: list[str]) -> int:
    from nbagents.server.__main__ import main as server_main

    return server_main(argv)


if __name__ == "__main__":
    sys.exit(main())
