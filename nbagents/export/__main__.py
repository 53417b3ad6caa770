"""``nbagents export NOTEBOOK.ipynb [-o agent.py]`` (also ``python -m nbagents.export``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# jsonschema (which nbformat validates with) builds an Earley parser for IRIs when it is imported and the
# optional rfc3987-syntax package is installed, as it is beside JupyterLab: about 2 s of CPU, most of this
# command's run. nbformat validates notebooks without format checkers, so this process goes without it
# (the package imports nbformat only when it reads a notebook, after this line).
if "jsonschema" not in sys.modules:
    sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]

from nbagents.export import ExportError, export_notebook  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="nbagents export",
        description="Export a notebook to a livekit-agents 1.8 worker script (run it with `python agent.py start`).",
    )
    parser.add_argument("notebook", type=Path, help="the .ipynb file")
    parser.add_argument(
        "-o", "--output", help="where to write the script (default: the notebook's name with .py; '-' for stdout)"
    )
    args = parser.parse_args(argv)
    try:
        script = export_notebook(args.notebook)
    except ExportError as exc:
        print(f"nbagents export: {exc}", file=sys.stderr)
        return 1
    if args.output == "-":
        sys.stdout.write(script.source)
        return 0
    output = Path(args.output) if args.output else args.notebook.with_suffix(".py")
    if output.resolve() == args.notebook.resolve():
        print(f"nbagents export: refusing to overwrite the notebook {args.notebook} with the script", file=sys.stderr)
        return 1
    try:
        output.write_text(script.source, encoding="utf-8")
    except OSError as exc:
        print(f"nbagents export: cannot write {output}: {exc.strerror}", file=sys.stderr)
        return 1
    print(f"wrote {output}: {script.summary()}")
    print(f"run it: LIVEKIT_URL=... LIVEKIT_API_KEY=... LIVEKIT_API_SECRET=... python {output} start")
    return 0


if __name__ == "__main__":
    sys.exit(main())
