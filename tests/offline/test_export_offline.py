"""An agent built on nbagents.offline keeps those imports when exported: the worker runs on them."""

from __future__ import annotations

import nbformat

from nbagents.export import export_notebook


def test_offline_imports_stay_in_the_exported_worker(tmp_path) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("from nbagents.offline import STT, TTS, ScriptedLLM\nfrom nbagents import JobContext, sim"),
        nbformat.v4.new_code_cell("%%agent --room x\nasync def entrypoint(ctx: JobContext):\n    stt = STT()\n"),
    ]
    path = tmp_path / "voice.ipynb"
    nbformat.write(nb, path)
    source = export_notebook(path).source
    assert "\nfrom nbagents.offline import STT, TTS, ScriptedLLM\n" in source
    assert "from livekit.agents import JobContext" in source
    assert "    stt = STT()" in source
