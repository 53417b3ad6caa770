"""Keep credentials out of the worker script.

Where a credential is found decides what happens (the finding itself comes from ``_dataflow``: literals
that reach a key, secret or token, and from ``_shapes``: text that looks like or sets one):

- in code the script runs: the export is refused, naming each cell and line, because removing the value
  would change what the worker does; the message says to read it from the environment;
- in what the script only shows — notebook-only code kept as comments, a ``%%bash``/``%%writefile`` body,
  a comment (also commented-out code, parsed and followed like code) — it is not shown: a comment saying
  which line was left out and why takes its place (the worker runs the same);
- in cells tagged ``nbagents-skip``: nothing (they are not written), but their code still counts for the
  data flow (a constant defined in a kept cell and passed to ``AccessToken`` in a skipped one is refused).

Last, the finished script is checked again: nothing in it may look like a key, secret or token, and no
credential value found anywhere in the notebook (8 characters or more) may appear in it.
"""

from __future__ import annotations

import ast
import io
import tokenize
from dataclasses import dataclass, field, replace

from nbagents.export import _shapes
from nbagents.export._analyse import Plan
from nbagents.export._cells import ParsedCell, parse_cell
from nbagents.export._dataflow import DataFlow, Finding
from nbagents.export._errors import ExportError
from nbagents.export._read import CodeCell

MARK = "[nbagents]"
SHOWN_VALUE_MIN = 8  # shorter values ("devkey") are words too; the final check would flag prose
_ARTICLE = {_shapes.KEY: "an API key", _shapes.SECRET: "an API secret", _shapes.TOKEN: "an access token"}

ADVICE = (
    "The export never writes credentials into a worker script. Read them from the environment instead: "
    "LIVEKIT_URL, LIVEKIT_API_KEY and LIVEKIT_API_SECRET, which livekit-agents and livekit.api read by "
    "themselves (`api.AccessToken()` and `api.LiveKitAPI()` without them use the environment; elsewhere write "
    "os.environ[\"LIVEKIT_API_SECRET\"]), and other services' keys from their own variables "
    "(e.g. OPENAI_API_KEY). Set them where the worker runs (and where Jupyter runs). "
    "Code that is only for the notebook can keep them: tag its cell nbagents-skip."
)


@dataclass
class _Unit:
    kind: str  # "cell" (kept code), "skipped", "body" (a non-Python cell magic's text), "comment"
    cell: CodeCell
    parsed: ParsedCell | None = None
    line_map: dict[int, tuple[int, int]] = field(default_factory=dict)  # comment unit line -> (cell line, col)


@dataclass
class Guarded:
    """The cells to render (comments with credentials replaced) and what the final check looks for."""

    cells: list[ParsedCell]
    values: set[str]


def _where(cell: CodeCell, line: int, hide: set[str]) -> str:
    """``cell N ("first line"), line L``; the first line is left out when it shows a credential."""
    first = next((text.strip() for text in cell.source.splitlines() if text.strip()), "")
    label = f"cell {cell.number}" if any(v in first for v in hide) else cell.label
    return f"{label}, line {line}"


def _comments(cell: ParsedCell) -> list[tuple[int, int, str]]:
    """(line, column, text) of every comment in a cell's Python (lines of ``cell.lines``)."""
    out = []
    try:
        for token in tokenize.generate_tokens(io.StringIO("\n".join(cell.lines) + "\n").readline):
            if token.type == tokenize.COMMENT:
                out.append((token.start[0], token.start[1], token.string))
    except (tokenize.TokenError, IndentationError, SyntaxError):
        pass
    return out


def _comment_code(comments: list[tuple[int, int, str]]) -> list[tuple[str, dict[int, tuple[int, int]]]]:
    """Commented-out code: each comment, and each run of full-line comments, as Python text with a map from
    its lines back to the cell's (line, column). Only text that parses is analysed as code."""
    pieces = []
    run: list[tuple[int, int, str]] = []

    def flush() -> None:
        if len(run) > 1:
            text = "\n".join(c[2].lstrip("#") for c in run)
            pieces.append((text, {i + 1: (c[0], c[1]) for i, c in enumerate(run)}))
        run.clear()

    for line, col, text in comments:
        pieces.append((text.lstrip("#"), {1: (line, col)}))
        if run and line != run[-1][0] + 1:
            flush()
        run.append((line, col, text))
    flush()
    out = []
    for text, line_map in pieces:
        try:
            tree = ast.parse(_dedent(text))
        except SyntaxError:
            continue
        if any(isinstance(n, (ast.Call, ast.Assign, ast.AnnAssign, ast.keyword, ast.Dict)) for n in ast.walk(tree)):
            out.append((_dedent(text), line_map))
    return out


def _dedent(text: str) -> str:
    lines = text.splitlines()
    indent = min((len(x) - len(x.lstrip()) for x in lines if x.strip()), default=0)
    return "\n".join(x[indent:] for x in lines)


def _plan_at(plans: list[Plan], line: int) -> Plan | None:
    return next((p for p in plans if p.first <= line <= p.last), None)


def _note(kind: str, cell: CodeCell, cell_line: int) -> str:
    """What a placeholder says instead of the text: ``an API secret, cell 4 line 2``."""
    return f"{_ARTICLE[kind]}, cell {cell.number} line {cell_line}"


def guard_cells(kept: list[ParsedCell], skipped: list[CodeCell], plans: dict[int, list[Plan]]) -> Guarded:
    """Refuse credentials in code the script runs; hide those in what it only shows. Marks ``Plan.redacted``
    on dropped statements and returns the cells with comments replaced."""
    units: list[_Unit] = []
    code_units: list[tuple[int, ast.Module]] = []
    for cell in kept:
        if cell.cell_magic and not cell.lines:
            continue
        code_units.append((len(units), cell.tree))
        units.append(_Unit("cell", cell.cell, cell))
    for code_cell in skipped:
        try:
            parsed = parse_cell(code_cell)
        except ExportError:
            continue  # a skipped cell may be anything; what it cannot define it cannot pass on
        code_units.append((len(units), parsed.tree))
        units.append(_Unit("skipped", code_cell, parsed))
    findings = DataFlow().run(code_units)

    # text the script shows but does not run: non-Python cell bodies and comments
    hidden_bodies: dict[int, str] = {}
    for cell in kept:
        if cell.cell_magic and not cell.lines and cell.original is not None:
            body = "\n".join(cell.original)
            hits = list(_shapes.iter_credentials_in_text(body))
            try:
                tree = ast.parse(body)
            except SyntaxError:
                tree = None
            if tree is not None:
                unit = len(units)
                units.append(_Unit("body", cell.cell, cell))
                findings += [f for f in DataFlow().run([(unit, tree)]) if f.source.unit == unit]
            if hits:
                offset, kind, _ = hits[0]
                hidden_bodies[cell.cell.number] = _note(kind, cell.cell, cell.line_offset + body.count("\n", 0, offset) + 1)
    comment_hits: dict[int, dict[int, tuple[int, str]]] = {}  # cell number -> line -> (column, note)
    for cell in kept:
        if not cell.lines:
            continue
        comments = _comments(cell)
        for line, col, text in comments:
            for _offset, kind, _desc in _shapes.iter_credentials_in_text(text):
                comment_hits.setdefault(cell.cell.number, {}).setdefault(line, (col, kind))
        for text, line_map in _comment_code(comments):
            unit = len(units)
            units.append(_Unit("comment", cell.cell, cell, line_map))
            for finding in DataFlow().run([(unit, ast.parse(text))]):
                if finding.source.unit != unit:
                    continue
                line, col = line_map.get(finding.source.line, next(iter(line_map.values())))
                comment_hits.setdefault(cell.cell.number, {}).setdefault(line, (col, finding.kind))

    values = {f.source.value for f in findings}
    refused: list[tuple[int, int, str]] = []
    for finding in findings:
        unit = units[finding.source.unit]
        if unit.kind == "skipped":
            continue
        parsed = unit.parsed
        assert parsed is not None
        if unit.kind == "body":
            hidden_bodies.setdefault(parsed.cell.number, _note(finding.kind, parsed.cell, parsed.cell_line(finding.source.line)))
            continue
        cell_line = parsed.cell_line(finding.source.line)
        plan = _plan_at(plans[parsed.cell.number], finding.source.line)
        if plan is not None and plan.action == "drop":
            plan.redacted = plan.redacted or _note(finding.kind, parsed.cell, cell_line)
            continue
        sink = ""
        if finding.sink_unit is not None and finding.sink_line is not None:
            sink_unit = units[finding.sink_unit]
            if sink_unit.parsed is not None and (sink_unit.cell is not unit.cell or finding.sink_line != finding.source.line):
                sink_line = sink_unit.parsed.cell_line(finding.sink_line)
                sink = f" (cell {sink_unit.cell.number}, line {sink_line}{', tagged nbagents-skip' if sink_unit.kind == 'skipped' else ''})"
        refused.append((parsed.cell.number, cell_line, f"{_where(parsed.cell, cell_line, values)}: "
                        f"{_ARTICLE[finding.kind]} is written as a literal: the string {finding.how}{sink}"))
    if refused:
        lines = [text for _, _, text in sorted(set(refused))]
        raise ExportError("\n".join(lines) + "\n" + ADVICE)

    guarded = []
    for cell in kept:
        number = cell.cell.number
        if number in hidden_bodies:
            cell = replace(cell, hidden=hidden_bodies[number])
        hits = comment_hits.get(number)
        if hits:
            lines = list(cell.lines)
            original = list(cell.original) if cell.original is not None else None
            for line, (col, kind) in hits.items():
                plan = _plan_at(plans[number], line)
                if plan is not None and plan.action == "drop":
                    plan.redacted = plan.redacted or _note(kind, cell.cell, cell.cell_line(line))
                    continue
                text = lines[line - 1]
                code = text[:col]
                note = f"# {MARK} comment not shown: it holds {_ARTICLE[kind]}"
                replacement = (code.rstrip() + "  " + note) if code.strip() else code + note
                if original is not None and original[line - 1] == text:
                    original[line - 1] = replacement
                lines[line - 1] = replacement
            cell = replace(cell, lines=lines, original=original)
        guarded.append(cell)
    return Guarded(guarded, values)


def check_script(source: str, values: set[str]) -> None:
    """The last line of defence: the finished script shows nothing credential-shaped and no credential value
    found in the notebook. Reaching this error means a form the analysis does not know: say where it is."""
    problems = []
    for hit in _shapes.find_shapes(source):
        problems.append((hit.start, hit.describe()))
    for value in values:
        if len(value) >= SHOWN_VALUE_MIN:
            start = source.find(value)
            if start >= 0:
                problems.append((start, "is a credential the notebook uses"))
    if not problems:
        return
    start, what = min(problems)
    line = source.count("\n", 0, start) + 1
    marker = source.rfind("\n# %% cell ", 0, start)
    cell = source[marker + 1 :].split("\n", 1)[0].split(":")[0].split("(")[0].strip("# %").strip() if marker >= 0 else "the header"
    raise ExportError(
        f"{cell}: the script would show a credential at its line {line}: the text there {what}. It comes from a "
        "part of the cell the export copies as it is (a %%agent option such as the room name): remove it "
        "from the cell.\n" + ADVICE
    )
