"""Export a notebook to a livekit-agents worker script.

    nbagents export NOTEBOOK.ipynb [-o agent.py]
    jupyter nbconvert --to nbagents NOTEBOOK.ipynb

The script keeps the code cells in order, leaves out cells tagged ``nbagents-skip``, IPython magics and
shell lines (a ``%%agent`` cell keeps its body; its options become worker options), maps
``from nbagents import JobContext, ...`` to ``livekit.agents``, and ends with a livekit-agents 1.8
worker main that writes every option explicitly. Notebook-only code outside the agent (``launch``,
``nbagents.sim``, ``await job``, display calls, top-level await, anything that depends on them) is
dropped and left in the script as a comment saying why. Credentials are never written (``_credentials``):
a key, secret or token written as a literal in code the worker runs is refused with its cell and line;
one in code or comments the script only shows is left out; livekit-agents reads ``LIVEKIT_URL``,
``LIVEKIT_API_KEY`` and ``LIVEKIT_API_SECRET`` from the environment.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nbagents.export._analyse import analyse
from nbagents.export._cells import parse_cell
from nbagents.export._credentials import Guarded, check_script, guard_cells
from nbagents.export._errors import ExportError
from nbagents.export._read import SKIP_TAG, code_cells, notebook_from_dict, read_notebook
from nbagents.export._render import render_script

if TYPE_CHECKING:
    import nbformat

__all__ = ["SKIP_TAG", "ExportError", "ExportedScript", "export_notebook", "export_notebook_node"]


@dataclass(frozen=True)
class ExportedScript:
    """A worker script and what the export chose for it."""

    source: str
    entrypoint: str
    prewarm: str | None
    options: dict[str, Any]

    def summary(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        prewarm = f", prewarm `{self.prewarm}`" if self.prewarm else ""
        return f"entrypoint `{self.entrypoint}`{prewarm}, {opts}"


def export_notebook(path: str | Path) -> ExportedScript:
    """Export the notebook file at ``path``."""
    return export_notebook_node(read_notebook(path), name=Path(path).name)


def export_notebook_node(nb: nbformat.NotebookNode | dict, *, name: str = "notebook.ipynb") -> ExportedScript:
    """Export an already loaded notebook (what the nbconvert exporter hands over)."""
    import nbformat  # imported when used: see __main__ (the command's start-up cost)

    if not isinstance(nb, nbformat.NotebookNode):
        nb = notebook_from_dict(nb, name=name)
    cells = code_cells(nb)
    kept = [parse_cell(cell) for cell in cells if not cell.skipped]
    skipped = [cell for cell in cells if cell.skipped]
    guarded: list[Guarded] = []
    analysis = analyse(kept, check=lambda plans: guarded.append(guard_cells(kept, skipped, plans)))
    source = render_script(name, guarded[0].cells, skipped, analysis)
    check_script(source, guarded[0].values)
    try:
        compile(source, "agent.py", "exec", dont_inherit=True)
    except SyntaxError as exc:  # a bug in the exporter, not in the notebook: say so plainly
        raise RuntimeError(f"nbagents export produced invalid Python at line {exc.lineno} ({exc.msg}); please report it") from exc
    return ExportedScript(
        source=source,
        entrypoint=analysis.entrypoint.name,
        prewarm=analysis.prewarm.name if analysis.prewarm else None,
        options=dict(analysis.options),
    )
