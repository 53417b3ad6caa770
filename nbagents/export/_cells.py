"""Turn one notebook code cell into Python the exporter can analyse: cell magic split off, IPython syntax
(line magics, shell lines, help) rewritten by IPython's own transformer, then parsed with ``ast``."""

from __future__ import annotations

import argparse
import ast
import shlex
from dataclasses import dataclass, field

from IPython.core.inputtransformer2 import TransformerManager

from nbagents.export._errors import ExportError
from nbagents.export._read import CodeCell
from nbagents.export._shapes import mask

# Cell magics whose body is ordinary Python that a script can keep (the magic itself only times,
# captures or profiles it). Any other cell magic (%%bash, %%html, %%writefile, ...) drops the cell.
PYTHON_BODY_CELL_MAGICS = frozenset({"agent", "time", "timeit", "capture", "prun"})

_COMPILE_FLAGS = ast.PyCF_ONLY_AST | ast.PyCF_ALLOW_TOP_LEVEL_AWAIT


@dataclass(frozen=True)
class AgentOptions:
    """The options of a ``%%agent`` cell that matter to a worker (``--room`` is notebook-only)."""

    entrypoint: str = "entrypoint"
    timeout: float | None = None
    agent_name: str | None = None
    prewarm: str | None = None
    room: str | None = None
    ignored: tuple[str, ...] = ()


@dataclass
class ParsedCell:
    """A code cell ready for analysis. ``lines`` is the transformed Python source, ``original`` the cell's
    own lines for the same region (used in comments when line counts agree)."""

    cell: CodeCell
    cell_magic: str | None
    magic_line: str | None
    lines: list[str]
    original: list[str] | None
    line_offset: int
    tree: ast.Module
    agent: AgentOptions | None = None
    notes: list[str] = field(default_factory=list)
    hidden: str | None = None  # a non-Python cell body that holds a credential: what, shown instead of it

    def cell_line(self, body_line: int) -> int:
        """The line number a person sees in the notebook cell for line ``body_line`` of ``lines``."""
        return body_line + self.line_offset

    def source_of(self, first: int, last: int) -> list[str]:
        """Lines ``first``..``last`` (1-based, inclusive) as the person wrote them, when known."""
        if self.original is not None:
            return self.original[first - 1 : last]
        return self.lines[first - 1 : last]


def _agent_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="%%agent", add_help=False, exit_on_error=False)
    parser.add_argument("--room")
    parser.add_argument("--entrypoint", default="entrypoint")
    parser.add_argument("--timeout", type=float)
    parser.add_argument("--agent-name", dest="agent_name")
    parser.add_argument("--prewarm")
    return parser


def parse_agent_options(arguments: str, cell: CodeCell) -> AgentOptions:
    """Parse the argument string of a ``%%agent`` line; unknown options are notebook-only and ignored."""
    try:
        argv = shlex.split(arguments)
        known, unknown = _agent_parser().parse_known_args(argv)
    except (ValueError, argparse.ArgumentError) as exc:
        raise ExportError(f"{cell.label}: cannot read the options of %%agent {arguments!r}: {exc}") from None
    if known.timeout is not None and known.timeout <= 0:
        raise ExportError(f"{cell.label}: %%agent --timeout must be a positive number of seconds")
    if not known.entrypoint.isidentifier():
        raise ExportError(f"{cell.label}: %%agent --entrypoint {known.entrypoint!r} is not a Python name")
    return AgentOptions(
        entrypoint=known.entrypoint,
        timeout=known.timeout,
        agent_name=known.agent_name,
        prewarm=known.prewarm,
        room=known.room,
        ignored=tuple(unknown),
    )


def parse_cell(cell: CodeCell) -> ParsedCell:
    """Split off a cell magic, rewrite IPython syntax and parse; a syntax error names the cell and line."""
    raw_lines = cell.source.splitlines()
    offset = 0
    while raw_lines and not raw_lines[0].strip():
        raw_lines.pop(0)
        offset += 1
    cell_magic = magic_line = None
    agent = None
    if raw_lines and raw_lines[0].startswith("%%"):
        magic_line = raw_lines.pop(0).rstrip()
        offset += 1
        name, _, arguments = magic_line[2:].partition(" ")
        cell_magic = name.strip()
        if cell_magic == "agent":
            agent = parse_agent_options(arguments, cell)
        elif cell_magic not in PYTHON_BODY_CELL_MAGICS:
            return ParsedCell(cell, cell_magic, magic_line, [], raw_lines, offset, ast.Module(body=[], type_ignores=[]))
    body = "\n".join(raw_lines) + "\n"
    transformed = TransformerManager().transform_cell(body)
    lines = transformed.splitlines()
    try:
        tree = compile(transformed, f"<{cell.label}>", "exec", flags=_COMPILE_FLAGS, dont_inherit=True)
    except SyntaxError as exc:
        line = (exc.lineno or 1) + offset
        text = mask((exc.text or "").strip())
        shown = f": {text}" if text else ""
        raise ExportError(
            f"{cell.label}, line {line}: syntax error ({exc.msg}){shown}. "
            "Fix the cell (it would fail in the notebook too), or tag it nbagents-skip to leave it out."
        ) from None
    original = raw_lines if len(raw_lines) == len(lines) else None
    return ParsedCell(cell, cell_magic, magic_line, lines, original, offset, tree, agent)
