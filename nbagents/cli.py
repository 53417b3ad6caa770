"""The ``nbagents`` command line."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nbagents", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    server = sub.add_parser("server", help="run the embedded LiveKit-protocol dev server", add_help=False)
    server.set_defaults(run=_run_server)
    demo = sub.add_parser(
        "demo", help="run the documentation's example end to end, headless, and narrate it", add_help=False
    )
    demo.set_defaults(run=_run_demo)
    export = sub.add_parser("export", help="export a notebook to a livekit-agents worker script", add_help=False)
    export.set_defaults(run=_run_export)
    args, rest = parser.parse_known_args(argv)
    return args.run(rest)


def _run_server(argv: list[str]) -> int:
    from nbagents.server.__main__ import main as server_main

    return server_main(argv)


def _run_demo(argv: list[str]) -> int:
    from nbagents.demo import main as demo_main

    return demo_main(argv)


def _run_export(argv: list[str]) -> int:
    from nbagents.export.__main__ import main as export_main

    return export_main(argv)


if __name__ == "__main__":
    sys.exit(main())
