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
import re
import tokenize
from dataclasses import dataclass, replace

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
    """A cell's Python as the data flow sees it: kept (written to the script) or tagged nbagents-skip."""

    kind: str  # "cell" or "skipped"
    cell: CodeCell
    parsed: ParsedCell


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


def _analysed_units(kept: list[ParsedCell], skipped: list[CodeCell]) -> tuple[list[_Unit], list[Finding]]:
    """The notebook's Python — kept cells and skipped ones, one namespace as in the kernel — through the
    data flow. A skipped cell that does not parse cannot pass anything on and is left out."""
    units: list[_Unit] = []
    trees: list[tuple[int, ast.Module]] = []
    for cell in kept:
        if cell.cell_magic and not cell.lines:
            continue
        trees.append((len(units), cell.tree))
        units.append(_Unit("cell", cell.cell, cell))
    for code_cell in skipped:
        try:
            parsed = parse_cell(code_cell)
        except ExportError:
            continue
        trees.append((len(units), parsed.tree))
        units.append(_Unit("skipped", code_cell, parsed))
    return units, DataFlow().run(trees)


def _standalone(text: str) -> list[Finding]:
    """Findings in a piece of Python on its own (commented-out code, a %%writefile body)."""
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return []
    return DataFlow().run([(0, tree)])


def _hidden_bodies(kept: list[ParsedCell], values: set[str]) -> dict[int, str]:
    """Cells whose body is not Python (%%bash, %%writefile .env) and holds a credential: cell -> note."""
    hidden = {}
    for cell in kept:
        if not (cell.cell_magic and not cell.lines and cell.original is not None):
            continue
        body = "\n".join(cell.original)
        offsets = [(offset, kind) for offset, kind, _ in _shapes.iter_credentials_in_text(body)]
        for finding in _standalone(body):
            values.add(finding.source.value)
            offsets.append((_offset_of_line(body, finding.source.line), finding.kind))
        if offsets:
            offset, kind = min(offsets)
            hidden[cell.cell.number] = _note(kind, cell.cell, cell.line_offset + body.count("\n", 0, offset) + 1)
    return hidden


def _offset_of_line(text: str, line: int) -> int:
    return sum(len(x) + 1 for x in text.split("\n")[: line - 1])


def _comment_hits(cell: ParsedCell, values: set[str]) -> dict[int, tuple[int, str]]:
    """Comments of a cell that hold a credential (by shape, ``NAME=value`` text, or as commented-out code
    followed like code): line -> (column where the comment starts, kind)."""
    hits: dict[int, tuple[int, str]] = {}
    comments = _comments(cell)
    for line, col, text in comments:
        for _offset, kind, _what in _shapes.iter_credentials_in_text(text):
            hits.setdefault(line, (col, kind))
    for text, line_map in _comment_code(comments):
        for finding in _standalone(text):
            values.add(finding.source.value)
            line, col = line_map.get(finding.source.line, next(iter(line_map.values())))
            hits.setdefault(line, (col, finding.kind))
    return hits


def _refusal(finding: Finding, units: list[_Unit], values: set[str]) -> tuple[int, int, str]:
    unit = units[finding.source.unit]
    parsed = unit.parsed
    line = parsed.cell_line(finding.source.line)
    sink = ""
    if finding.sink_unit is not None and finding.sink_line is not None:
        sink_unit = units[finding.sink_unit]
        if sink_unit.cell is not unit.cell or finding.sink_line != finding.source.line:
            skipped = ", tagged nbagents-skip" if sink_unit.kind == "skipped" else ""
            sink = f" (cell {sink_unit.cell.number}, line {sink_unit.parsed.cell_line(finding.sink_line)}{skipped})"
    text = (f"{_where(parsed.cell, line, values)}: {_ARTICLE[finding.kind]} is written as a literal: "
            f"the string {finding.how}{sink}")
    return parsed.cell.number, line, text


def _without_comments(cell: ParsedCell, hits: dict[int, tuple[int, str]], plans: list[Plan]) -> ParsedCell:
    """The cell with each credential-holding comment replaced by a note (a dropped statement that contains
    one is not shown at all)."""
    lines = list(cell.lines)
    original = list(cell.original) if cell.original is not None else None
    for line, (col, kind) in hits.items():
        plan = _plan_at(plans, line)
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
    return replace(cell, lines=lines, original=original)


def guard_cells(kept: list[ParsedCell], skipped: list[CodeCell], plans: dict[int, list[Plan]]) -> Guarded:
    """Refuse credentials in code the script runs (ExportError naming every cell and line); hide those in
    what it only shows: marks ``Plan.redacted`` on dropped statements, returns the cells to render with
    ``hidden`` bodies and comments replaced, and the values the final check looks for."""
    units, findings = _analysed_units(kept, skipped)
    values = {f.source.value for f in findings}
    hidden = _hidden_bodies(kept, values)
    comments = {cell.cell.number: _comment_hits(cell, values) for cell in kept if cell.lines}

    refused = []
    for cell in kept:  # the script copies a cell magic's line into a comment (%%agent options included)
        for hit in _shapes.find_text_credentials(cell.magic_line or ""):
            refused.append((cell.cell.number, cell.line_offset,
                            f"{_where(cell.cell, cell.line_offset, {hit.value})}: {_ARTICLE[hit.kind]} is written in "
                            f"the {cell.magic_line.split()[0]} line (it gives {hit.name} a value), which the script "
                            "copies into a comment"))
    for finding in findings:
        unit = units[finding.source.unit]
        if unit.kind == "skipped":
            continue  # not written; it has counted for the flow
        plan = _plan_at(plans[unit.cell.number], finding.source.line)
        if plan is not None and plan.action == "drop":
            plan.redacted = plan.redacted or _note(finding.kind, unit.cell, unit.parsed.cell_line(finding.source.line))
        else:
            refused.append(_refusal(finding, units, values))
    if refused:
        raise ExportError("\n".join(text for _, _, text in sorted(set(refused))) + "\n" + ADVICE)

    guarded = []
    for cell in kept:
        number = cell.cell.number
        if number in hidden:
            cell = replace(cell, hidden=hidden[number])
        if comments.get(number):
            cell = _without_comments(cell, comments[number], plans[number])
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
            found = re.search(f"(?<![A-Za-z0-9_-]){re.escape(value)}(?![A-Za-z0-9_-])", source)
            if found:
                problems.append((found.start(), "is a credential the notebook uses"))
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
