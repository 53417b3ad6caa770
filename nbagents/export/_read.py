"""Read a notebook file into the code cells the exporter works on, with errors that say what is wrong."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nbagents.export._errors import ExportError
from nbagents.export._shapes import mask

if TYPE_CHECKING:
    import nbformat

SKIP_TAG = "nbagents-skip"


@dataclass(frozen=True)
class CodeCell:
    """A code cell, numbered as a person counts cells in the notebook (1-based, markdown included)."""

    number: int
    source: str
    tags: frozenset[str]
    cell_id: str | None = None

    @property
    def label(self) -> str:
        """How errors and comments name this cell: its number and its first non-blank line (anything in it
        shaped like a credential masked)."""
        first = mask(next((line.strip() for line in self.source.splitlines() if line.strip()), ""))
        if len(first) > 50:
            first = first[:47] + "..."
        return f'cell {self.number} ("{first}")' if first else f"cell {self.number}"

    @property
    def skipped(self) -> bool:
        return SKIP_TAG in self.tags


def read_notebook(path: str | Path) -> nbformat.NotebookNode:
    """Load and validate ``path`` as a version-4 notebook."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ExportError(f"{path}: no such file") from None
    except UnicodeDecodeError as exc:
        raise ExportError(f"{path} is not a notebook: it is not UTF-8 text ({exc.reason})") from None
    except OSError as exc:
        raise ExportError(f"{path}: cannot read it ({exc.strerror})") from None
    return parse_notebook(text, name=str(path))


def parse_notebook(text: str, *, name: str = "<notebook>") -> nbformat.NotebookNode:
    """Parse notebook JSON text; malformed JSON or a non-notebook document gets a precise error."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ExportError(
            f"{name} is not a notebook: malformed JSON at line {exc.lineno}, column {exc.colno} ({exc.msg}). "
            "Fix the file or save the notebook again from Jupyter."
        ) from None
    return notebook_from_dict(data, name=name)


def notebook_from_dict(data: Any, *, name: str = "<notebook>") -> nbformat.NotebookNode:
    """Check that ``data`` is a notebook (nbformat 4) and convert it to a NotebookNode."""
    import nbformat  # imported when used: see __main__ (the command's start-up cost)

    if not isinstance(data, dict) or "cells" not in data or "nbformat" not in data:
        raise ExportError(
            f"{name} is not a notebook: it is JSON, but has no 'nbformat' and 'cells' at its top level"
        )
    try:
        nb = nbformat.reads(json.dumps(data), as_version=4)
        nbformat.validate(nb)
    except nbformat.ValidationError as exc:
        where = "/".join(str(part) for part in exc.absolute_path) or "top level"
        raise ExportError(f"{name} is not a valid notebook: at {where}: {exc.message}") from None
    except Exception as exc:  # nbformat raises several unrelated types for unreadable documents
        raise ExportError(f"{name} is not a valid notebook: {exc}") from None
    return nb


def code_cells(nb: nbformat.NotebookNode) -> list[CodeCell]:
    """The notebook's code cells in order, numbered by their position among all cells."""
    cells = []
    for number, cell in enumerate(nb.cells, start=1):
        if cell.get("cell_type") != "code":
            continue
        tags = cell.get("metadata", {}).get("tags", [])
        cells.append(
            CodeCell(
                number=number,
                source=cell.get("source", ""),
                tags=frozenset(tags if isinstance(tags, list) else []),
                cell_id=cell.get("id"),
            )
        )
    return cells
