"""Every notebook in notebooks/ runs headless, as in CI and on Binder, and keeps its final state in the file."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from nbagents.ui import STATE_MIME

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs_headless_and_keeps_its_final_state(path: Path, tmp_path: Path) -> None:
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(notebook, timeout=240, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    # the kernel picks its own default engine (the embedded server here), as a user's kernel would
    env = {k: v for k, v in os.environ.items() if k not in ("LIVEKIT_URL", "NBAGENTS_ENGINE")}
    client.execute(env=env)  # raises CellExecutionError naming the cell if any cell fails

    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    states = [o.data[STATE_MIME] for o in outputs if STATE_MIME in o.get("data", {})]
    assert states, f"{path.name} kept no final job state in its outputs"
    assert all(state["state"] == "succeeded" for state in states), states
    assert any(state.get("persisted") for state in states), "the shutdown hooks' values are in the file"
    assert any("image/png" in o.get("data", {}) for o in outputs), "a static plot stays in the file"
