"""Headless execution (nbclient, as papermill and nbconvert --execute do) keeps the job's final state.

Only output produced while a cell runs is saved, so `%agent stop` / `%agent wait` write the final
state and the last audio plot in the foreground; the saved file must hold both.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from nbagents.ui import STATE_MIME

NOTEBOOK = Path(__file__).parent / "notebooks" / "headless.ipynb"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def outputs_with(notebook, mime: str) -> list[tuple[int, dict]]:
    return [(i, o) for i, cell in enumerate(notebook.cells) for o in cell.get("outputs", []) if mime in o.get("data", {})]


def test_saved_notebook_holds_final_state_and_png_plot(tmp_path) -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(notebook, timeout=240, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    env = {k: v for k, v in os.environ.items() if k not in ("LIVEKIT_URL",)}
    env["NBAGENTS_ENGINE"] = "embedded"
    client.execute(env=env)
    saved = tmp_path / "executed.ipynb"
    nbformat.write(notebook, saved)
    notebook = nbformat.read(saved, as_version=4)  # what a person opening the file gets

    states = outputs_with(notebook, STATE_MIME)
    stop_cell = 4
    foreground = [o for i, o in states if i == stop_cell]
    assert foreground, f"the %agent stop cell holds no final state; outputs: {notebook.cells[stop_cell].outputs}"
    state = foreground[0]["data"][STATE_MIME]
    assert state["state"] == "succeeded", state["error"]
    assert state["shutdown_reason"] == "stopped by the notebook"
    assert state["persisted"] == {"save_state": {"participants": {"alice": {"user.language": "fr"}}}}
    markdown = foreground[0]["data"]["text/markdown"]
    assert "save_state" in markdown and "succeeded" in markdown
    assert "persisted save_state" in foreground[0]["data"]["text/plain"]

    plots = [o for i, o in outputs_with(notebook, "image/png") if i == stop_cell]
    assert plots, "the %agent stop cell holds no PNG plot"
    png = base64.b64decode(plots[-1]["data"]["image/png"])
    assert png.startswith(PNG_MAGIC) and len(png) > 2000

    # the %%agent cell shows the job (text for static viewers) and its widget
    launch_outputs = notebook.cells[2].outputs
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in launch_outputs)
    assert any("<nbagents.Job" in o.get("data", {}).get("text/plain", "") for o in launch_outputs)
