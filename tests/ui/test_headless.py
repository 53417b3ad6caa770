"""Headless execution (nbclient, as papermill and nbconvert --execute do) keeps the job's final state.

Only output produced while a cell runs is saved, so `%agent stop` / `%agent wait` write the final
state, the audio plot and the recordings' players in the foreground; the saved file must hold them,
the players must play the tone the simulated caller spoke, and the recorded file must decode to it.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from nbagents.ui import STATE_MIME

from ui._audio import decode, dominant_hz
from ui._lab import ARTIFACTS

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

    # the %%agent cell shows the inspector; viewers without its kernel see the final state, not a running job
    launch_outputs = notebook.cells[2].outputs
    (inspector,) = [o for o in launch_outputs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert "succeeded" in inspector["data"]["text/plain"] and "running" not in inspector["data"]["text/plain"]
    assert any(STATE_MIME in o.get("data", {}) for o in launch_outputs)  # its placeholder, updated in place

    # alice's 440 Hz tone: a player in the notebook and an Ogg/Opus file in the job's directory
    (recorded,) = [r for r in state["recordings"] if r["participant"] == "alice"]
    # the agent hears the 2 s tone from the moment it has subscribed to alice's track (a loaded machine: later)
    assert recorded["direction"] == "received" and recorded["status"] == "finished" and recorded["seconds"] > 0.5
    assert not os.path.isabs(recorded["file"]) and recorded["file"].startswith(".nbagents/jobs/")
    assert dominant_hz(decode(tmp_path / recorded["file"])) == pytest.approx(440, abs=5)
    players = [o for i, o in outputs_with(notebook, "text/html") if i == stop_cell and "<audio" in o["data"]["text/html"]]
    assert players, "the %agent stop cell holds no audio player"
    html = players[-1]["data"]["text/html"]
    (alice_row,) = [row for row in html.split("<tr>") if "alice" in row]
    (uri,) = re.findall(r"src='data:audio/mpeg;base64,([^']+)'", alice_row)
    assert dominant_hz(decode(io.BytesIO(base64.b64decode(uri)))) == pytest.approx(440, abs=5)
    assert "excerpt" in players[-1]["data"]["text/plain"]
    text = saved.read_text()
    assert str(tmp_path) not in text, "the saved notebook holds an absolute local path"

    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "headless-saved-bytes.json").write_text(json.dumps({
        "notebook_bytes": len(text.encode()),
        "audio_players_output_bytes": len(json.dumps(players[-1], indent=1)),
        "state_output_bytes": len(json.dumps(foreground[0], indent=1)),
        "plot_output_bytes": len(json.dumps(plots[-1], indent=1)),
    }))
